"""Nothing lost: the crop stage keeps an old store until a new one is complete, never writes
over its inputs, keeps finished plates when it is stopped, and takes its workers along when it
is killed."""

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import cellclr.cropping.sites
from cellclr.cli import main
from cellclr.store import CropStore, StoreError
from cellclr.store.format import plate_file_stem
from tests.cropping.test_stage import crop_args, write_plates


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fail_on_plate(monkeypatch, plate: str, error: type[BaseException]) -> list[str]:
    """Make cropping a site of ``plate`` raise ``error``; return the list of plates whose
    sites get processed (one entry per site)."""
    real = cellclr.cropping.sites.process_site
    seen = []

    def process_site(site, box, params):
        seen.append(site.metadata["Metadata_Plate"])
        if site.metadata["Metadata_Plate"] == plate:
            raise error("injected fault")
        return real(site, box, params)

    monkeypatch.setattr(cellclr.cropping.sites, "process_site", process_site)
    return seen


def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(tmp_path, monkeypatch, capsys):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    assert main(crop_args(table, out)) == 0
    before = digest(out)
    fail_on_plate(monkeypatch, "Week2_2", RuntimeError)
    with pytest.raises(RuntimeError, match="injected"):
        main(crop_args(table, out, "--box", "40", "--overwrite"))
    assert digest(out) == before  # the old store is whole and unchanged
    assert CropStore(out).crop_shape == (3, 32, 32)
    staged = tmp_path / "crops.partial"
    week1 = f"{plate_file_stem('Week1_1')}.npy"
    assert (staged / "plates" / week1).is_file()  # the new store's first plate is kept
    monkeypatch.undo()
    seen = fail_on_plate(monkeypatch, "no such plate", RuntimeError)
    assert main(crop_args(table, out, "--box", "40", "--overwrite")) == 0
    assert set(seen) == {"Week2_2"}  # the staged plate was not cropped again
    assert CropStore(out).crop_shape == (3, 40, 40) and len(CropStore(out)) == 60
    assert not staged.exists() and not (tmp_path / "crops.old").exists()


def test_a_stopped_crop_keeps_its_finished_plates(tmp_path, monkeypatch):
    table = write_plates(tmp_path / "images")
    whole = tmp_path / "whole"
    assert main(crop_args(table, whole)) == 0
    out = tmp_path / "crops"
    fail_on_plate(monkeypatch, "Week2_2", KeyboardInterrupt)  # as if killed in plate 2
    assert main(crop_args(table, out)) == 130
    assert not out.exists()  # only a complete store is ever at --out
    staged = tmp_path / "crops.partial"
    week1 = f"plates/{plate_file_stem('Week1_1')}.npy"
    first = (staged / week1).stat()
    assert not (staged / "store.json").exists() and not list(staged.rglob("*.tmp"))
    monkeypatch.undo()
    seen = fail_on_plate(monkeypatch, "no such plate", RuntimeError)
    assert main(crop_args(table, out)) == 0
    assert seen == ["Week2_2"] * 6  # only the unfinished plate's 6 sites
    assert not staged.exists()
    now = (out / week1).stat()
    assert (now.st_ino, now.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert CropStore(out).id == CropStore(whole).id  # the same store as an uninterrupted run
    for name in ("cells.parquet", "sites.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(whole / name))


def test_a_failed_crop_never_blocks_a_retry_with_other_settings(tmp_path, monkeypatch, capsys):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    fail_on_plate(monkeypatch, "Week1_1", RuntimeError)  # fails before any plate is done
    with pytest.raises(RuntimeError, match="injected"):
        main(crop_args(table, out))
    assert not out.exists() and (tmp_path / "crops.partial").is_dir()
    monkeypatch.undo()
    capsys.readouterr()
    assert main(crop_args(table, out, "--box", "40")) == 0  # other settings, no --overwrite
    assert "replacing" in capsys.readouterr().err
    assert CropStore(out).crop_shape == (3, 40, 40) and len(CropStore(out)) == 60
    assert not (tmp_path / "crops.partial").exists()
    assert main(crop_args(table, out, "--box", "32")) == 2  # a finished store needs --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_adding_to_a_store_leaves_it_valid_or_incomplete_never_wrong(tmp_path, monkeypatch):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--wells", "B02")) == 0
    first_id = CropStore(out).id
    fail_on_plate(monkeypatch, "no such plate", RuntimeError)
    real = cellclr.cropping.plates.write_plate_index

    def stop(*args):
        raise KeyboardInterrupt  # killed after the plate's crops were replaced

    monkeypatch.setattr(cellclr.cropping.plates, "write_plate_index", stop)
    assert main(crop_args(table, out)) == 130  # the plate again, with well C03
    with pytest.raises(StoreError, match="incomplete"):
        CropStore(out)  # its crops changed: not readable until finished
    monkeypatch.setattr(cellclr.cropping.plates, "write_plate_index", real)
    assert main(crop_args(table, out, "--wells", "B02")) == 0  # the plate is redone
    assert CropStore(out).id == first_id  # as it was, not old rows over new crops


def test_out_that_is_not_a_crop_store_is_refused(tmp_path, capsys):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.txt").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        assert main(crop_args(table, other, *extra)) == 2
        assert str(other) in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["chapter1.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(crop_args(table, empty)) == 0
    staging = tmp_path / "empty.partial"  # where a rebuild would be staged: someone else's
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    assert main(crop_args(table, empty, "--box", "40", "--overwrite")) == 2
    assert "not an unfinished crop store" in capsys.readouterr().err
    assert (staging / "notes.txt").read_text() == "mine"


def test_an_import_crops_store_is_replaced_only_with_overwrite(tmp_path, store, capsys):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    before = digest(store)
    assert main(crop_args(table, store)) == 2
    assert "--overwrite" in capsys.readouterr().err and digest(store) == before
    assert main(crop_args(table, store, "--overwrite")) == 0
    assert CropStore(store).crop_shape == (3, 32, 32)


@pytest.mark.parametrize("where", ["table folder", "above the table", "locations"])
def test_out_overlapping_an_input_is_refused(tmp_path, capsys, where):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    locations = tmp_path / "locations"
    (locations / "Week1_1").mkdir(parents=True)
    pd.DataFrame({"Nuclei_Location_Center_X": [50.0], "Nuclei_Location_Center_Y": [60.0]}).to_csv(
        locations / "Week1_1" / "B02-1-Nuclei.csv", index=False
    )
    out = {"table folder": table.parent, "above the table": tmp_path, "locations": locations}
    before = digest(tmp_path)
    args = crop_args(table, out[where], "--locations", str(locations), "--overwrite")
    assert main(args) == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert digest(tmp_path) == before


# a crop whose nucleus detection takes a minute per site: it is surely running when killed
SLOW_CROP = """
import sys, time
import cellclr.cropping.sites as sites
detect = sites.detect_nuclei
def slow(*args):
    time.sleep(60)
    return detect(*args)
sites.detect_nuclei = slow
from cellclr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found |= {int(c) for c in task.read_text().split()}
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; PDEATHSIG is Linux only")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_workers_die_with_a_killed_crop(tmp_path, sig):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    args = crop_args(table, out, "--workers", "2", "--no-illumination")
    out = tmp_path / "crops.partial"  # where an unfinished crop lives
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CROP, *args], stdout=subprocess.DEVNULL, cwd=tmp_path
    )
    workers: set[int] = set()
    try:
        running = wait_until(lambda: len(children(proc.pid)) >= 2 and any(out.rglob("*.tmp")), 20)
        assert running, "the crop did not start its workers"
        workers = children(proc.pid)
        proc.send_signal(sig)
        proc.wait(10)
        assert wait_until(lambda: not any(alive(w) for w in workers), 5), "workers outlived it"
    finally:
        proc.kill()
        for w in workers:
            if alive(w):
                subprocess.run(["kill", "-9", str(w)], check=False)
    if sig == signal.SIGTERM:  # shut down in order: no half-written plate, no store
        assert proc.returncode == 128 + signal.SIGTERM
        assert not list(out.rglob("*.tmp")) and not (out / "store.json").exists()
