"""The crop stage (cellclr.cropping.stage), the raw-image route: image table -> illumination ->
nuclei -> crops -> crop store. Nothing lost: an old store is kept until a new one is complete,
inputs are never written over, finished plates are kept when it is stopped. Across machines:
``crop --shard I/N`` splits the plates over the N jobs of an array, each writing its own plates
into one store, which the last to finish finalises."""

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import cellclr.cropping.sites
from cellclr.cli import main
from cellclr.cropping.plates import shard_plates
from cellclr.cropping.stage import CropError, _claim, crop_sites
from cellclr.datasets.bbbc021 import bbbc021_image_table
from cellclr.outputs import OutputExistsError
from cellclr.store import CropStore, StoreError
from cellclr.store.format import plate_file_stem
from cellclr.tables.image_table import read_image_table
from tests.helpers import SHARED, tiny_config

SIZE = 160
# nucleus centres (x, y); the last two touch (centres 17 px apart, radius 10)
CENTRES = [(30.0, 30.0), (100.0, 40.0), (50.0, 110.0), (110.0, 110.0), (127.0, 110.0)]
RADIUS = 10


def site_centres(plate, well, site):
    """CENTRES moved by an offset of its own for every site (a plate's fields differ)."""
    rng = np.random.default_rng(zlib.crc32(f"{plate} {well} {site}".encode()))
    return [
        (x + dx, y + dy)
        for (x, y), (dx, dy) in zip(CENTRES, [rng.uniform(-12, 12, 2)] * len(CENTRES), strict=True)
    ]


def render_site(rng, centres):
    """DNA: bright discs on a vignetted background; the other channels: a larger soft halo."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    vignette = 1.0 - 0.4 * (((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE / 2) ** 2)
    dna = np.full((SIZE, SIZE), 200.0)
    other = np.full((SIZE, SIZE), 150.0)
    for x, y in centres:
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        dna += 3000.0 * (d2 <= RADIUS**2)
        other += 1500.0 * np.exp(-d2 / (2 * (2 * RADIUS) ** 2))
    channels = [dna, other, other * 0.7]
    noisy = [rng.normal(c * vignette, 20.0) for c in channels]
    return [np.clip(c, 0, 65535).astype(np.uint16) for c in noisy]


def write_plates(folder, plates=("Week1_1", "Week2_2"), wells=("B02", "C03"), sites=(1, 2, 3)):
    rng = np.random.default_rng(0)
    rows = []
    for plate in plates:
        for w, well in enumerate(wells):
            for site in sites:
                row = {
                    "Metadata_Plate": plate,
                    "Metadata_Well": well,
                    "Metadata_Site": site,
                    "Metadata_Compound": ["DMSO", "taxol"][w],
                    "Metadata_Concentration": [0.0, 1.0][w],
                    "Metadata_MoA": ["DMSO", "MS"][w],
                }
                images = render_site(rng, site_centres(plate, well, site))
                for name, image in zip(("DNA", "Tubulin", "Actin"), images, strict=True):
                    rel = f"{plate}/{well}_s{site}_{name}.tif"
                    (folder / plate).mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(folder / rel, image)
                    row[name] = rel
                rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(folder / "sites.csv", index=False)
    return folder / "sites.csv"


def crop_args(table, out, *extra):
    return [
        "crop",
        "--images-table",
        str(table),
        "--channels",
        "DNA,Tubulin,Actin",
        "--out",
        str(out),
        "--box",
        "32",
        "--workers",
        "1",
        "--set",
        "crop.nucleus_min_area=100",
        "--set",
        "crop.illumination_min_sites=4",
        *extra,
    ]


def test_positions_recovered_and_touching_nuclei_split(tmp_path):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    assert main(crop_args(table, out)) == 0
    store = CropStore(out)
    assert store.channels == ["DNA", "Tubulin", "Actin"] and store.crop_shape == (3, 32, 32)
    cells = store.cells
    for (plate, well, site), site_cells in cells.groupby(
        ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    ):
        found = site_cells[["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]].to_numpy()
        assert len(found) == len(CENTRES), (plate, well, site)  # the touching pair is two cells
        for centre in site_centres(plate, well, site):
            assert np.min(np.linalg.norm(found - np.array(centre), axis=1)) < 3.0
        assert (site_cells["Metadata_SiteCellCount"] == len(CENTRES)).all()
    assert set(cells["Metadata_Batch"]) == {"Week1", "Week2"}
    assert set(cells["Metadata_Compound"]) == {"DMSO", "taxol"}
    crops = store.read(np.arange(len(store)))
    assert crops.dtype == np.uint16
    # each crop is centred on its nucleus: the DNA centre is bright, the corners are not
    assert (crops[:, 0, 16, 16] > 4 * crops[:, 0, 0, 0]).all()
    sites = pd.read_parquet(out / "sites.parquet")
    assert len(sites) == 12 and (sites["cells"] == 5).all() and (sites["status"] == "ok").all()
    assert sites["illumination"].all()
    names = [f"{plate_file_stem(p)}.npz" for p in ("Week1_1", "Week2_2")]
    assert sorted(p.name for p in (out / "illum").iterdir()) == names


def test_boxes_off_the_edge_are_skipped_and_counted(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    summary = crop_sites(
        read_image_table(table, ["DNA", "Tubulin", "Actin"]),
        ["DNA", "Tubulin", "Actin"],
        tmp_path / "crops",
        tiny_config("crop.box=50", "crop.workers=1", "crop.nucleus_min_area=100"),
    )
    # with 50 px boxes only the nuclei at least 25 px from every edge fit (here all centres
    # are 3 px or more from that limit, beyond any detection error)
    centres = site_centres("Week1_1", "B02", 1)
    fits = [c for c in centres if 25 <= c[0] <= SIZE - 25 and 25 <= c[1] <= SIZE - 25]
    assert 0 < len(fits) < len(CENTRES)
    assert summary["cells"] == len(fits) and summary["off_edge"] == len(CENTRES) - len(fits)


def test_plates_separately_then_rerun_skips(tmp_path):
    table = write_plates(tmp_path / "images")
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--plates", "Week1_1")) == 0
    assert CropStore(out).cells["Metadata_Plate"].unique().tolist() == ["Week1_1"]
    week1 = out / "plates" / f"{plate_file_stem('Week1_1')}.npy"
    first = week1.stat().st_mtime_ns
    assert main(crop_args(table, out, "--workers", "2")) == 0  # the rest, in a process pool
    store = CropStore(out)
    assert sorted(store.cells["Metadata_Plate"].unique()) == ["Week1_1", "Week2_2"]
    assert week1.stat().st_mtime_ns == first
    assert main(crop_args(table, out, "--box", "40")) == 2  # other settings need --overwrite
    assert main(crop_args(table, out, "--box", "40", "--overwrite")) == 0
    assert CropStore(out).crop_shape == (3, 40, 40)


def test_nucleus_locations_from_csv(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    locations = tmp_path / "locations" / "Week1_1"
    locations.mkdir(parents=True)
    given = pd.DataFrame(
        {"Nuclei_Location_Center_X": [50.0, 80.0], "Nuclei_Location_Center_Y": [60.0, 70.0]}
    )
    given.to_csv(locations / "B02-1-Nuclei.csv", index=False)
    out = tmp_path / "crops"
    assert (
        main(crop_args(table, out, "--locations", str(tmp_path / "locations"), "--no-illumination"))
        == 0
    )
    store = CropStore(out)
    np.testing.assert_array_equal(store.cells["Nuclei_Location_Center_X"], [50.0, 80.0])
    image = tifffile.imread(tmp_path / "images" / "Week1_1" / "B02_s1_DNA.tif")
    np.testing.assert_array_equal(store.read(np.array([0]))[0, 0], image[44:76, 34:66])


def test_missing_file_named_or_skipped(tmp_path, capsys):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    missing = tmp_path / "images" / "Week1_1" / "C03_s2_Actin.tif"
    missing.unlink()
    out = tmp_path / "crops"
    assert main(crop_args(table, out)) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (out / "store.json").exists()
    assert main(crop_args(table, out, "--skip-incomplete")) == 0
    assert "skipped 1 incomplete sites: Week1_1 C03 s2" in capsys.readouterr().out
    sites = pd.read_parquet(out / "sites.parquet")
    assert sites["status"].str.startswith("skipped: missing").sum() == 1


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "unreadable TIFF"),
        (lambda p: p.write_bytes(b"not a tiff at all"), "unreadable TIFF"),
        (lambda p: tifffile.imwrite(p, np.zeros((50, 60), np.uint16)), "differ in shape"),
    ],
)
def test_bad_tiffs_are_named(tmp_path, capsys, damage, message):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    bad = tmp_path / "images" / "Week1_1" / "B02_s1_Tubulin.tif"
    damage(bad)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert message in err and "B02_s1_Tubulin.tif" in err
    assert not list((tmp_path / "crops").rglob("*.tmp"))  # no half-written plate is left


def test_real_fields_of_view(tmp_path, capsys):
    images = SHARED / "images" / "Week2" / "Week2_24381"
    if not images.is_dir():
        pytest.skip(f"real BBBC021 fields not found at {images} (only present in CI and dev)")
    table = bbbc021_image_table(SHARED)
    well = table[(table["Metadata_Plate"] == "Week2_24381") & (table["Metadata_Well"] == "B02")]
    well[well["Metadata_Site"].isin([1, 3])].to_csv(tmp_path / "sites.csv", index=False)
    args = [
        "crop",
        "--images-table",
        str(tmp_path / "sites.csv"),
        "--channels",
        "DNA,Tubulin,Actin",
        "--out",
        str(tmp_path / "crops"),
        "--workers",
        "1",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing image file" in err and "Week2_180607_B02_s3_w4" in err  # the actin file
    assert main([*args, "--skip-incomplete"]) == 0
    assert "Week2_24381 B02 s3" in capsys.readouterr().out
    store = CropStore(tmp_path / "crops")
    assert 10 <= len(store) <= 250  # MCF-7 nuclei in one 1280x1024 field
    assert store.crop_shape == (3, 96, 96) and store.read(np.arange(3)).dtype == np.uint16
    assert (store.cells["Metadata_Site"] == 1).all()


def test_more_wells_or_late_files_recrop_the_plate_keeping_what_was_there(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--wells", "B02")) == 0
    assert set(CropStore(out).cells["Metadata_Well"]) == {"B02"}
    assert main(crop_args(table, out, "--wells", "C03")) == 0  # B02 is kept
    assert set(CropStore(out).cells["Metadata_Well"]) == {"B02", "C03"}

    late = tmp_path / "images" / "Week1_1" / "C03_s2_Actin.tif"
    kept = late.read_bytes()
    late.unlink()
    assert main(crop_args(table, tmp_path / "c2", "--skip-incomplete")) == 0
    n_before = len(CropStore(tmp_path / "c2"))
    late.write_bytes(kept)  # the file arrives (a finished download)
    assert main(crop_args(table, tmp_path / "c2", "--skip-incomplete")) == 0
    assert len(CropStore(tmp_path / "c2")) == n_before + len(CENTRES)
    assert (pd.read_parquet(tmp_path / "c2" / "sites.parquet")["status"] == "ok").all()


CHANNELS = ("DNA", "Tubulin", "Actin")


def one_site(tmp_path, plate="Week1_1"):
    """An image table of one site (plate, B02, s1) and the folder of its images."""
    return write_plates(tmp_path / "images", plates=(plate,), wells=("B02",), sites=(1,))


def rewrite(folder, convert, sites=("B02_s1",)):
    """Replace the images of ``sites`` (all channels) by ``convert(image)``."""
    for site in sites:
        for name in CHANNELS:
            path = folder / f"{site}_{name}.tif"
            tifffile.imwrite(path, convert(tifffile.imread(path)))


def table_with(tmp_path, column, value):
    table = pd.read_csv(one_site(tmp_path)).astype({column: str})
    table.loc[0, column] = value
    path = tmp_path / "images" / "bad.csv"
    table.to_csv(path, index=False)
    return path


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


PLATES = ("Week1_1", "Week1_2", "Week2_3")


FINAL = ("store.json", "cells.parquet", "normalization.parquet", "sites.parquet", "stage.json")


@pytest.fixture
def screen(tmp_path):
    """Three plates, and the store that one crop of all of them makes."""
    table = write_plates(tmp_path / "images", plates=PLATES)
    whole = tmp_path / "whole"
    assert main(crop_args(table, whole)) == 0
    return table, whole


def config():
    """The config that ``crop_args`` gives."""
    return tiny_config(
        "crop.channels=['DNA', 'Tubulin', 'Actin']",
        "crop.box=32",
        "crop.workers=1",
        "crop.nucleus_min_area=100",
        "crop.illumination_min_sites=4",
    )


def assert_same_store(out: Path, whole: Path) -> None:
    """The same store as one crop makes: id, cell index, sites, statistics and pixels."""
    store, reference = CropStore(out), CropStore(whole)
    assert store.id == reference.id
    for name in ("cells.parquet", "sites.parquet", "normalization.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(whole / name))
    every = np.arange(len(reference))
    np.testing.assert_array_equal(store.read(every), reference.read(every))
    for name in ("crop.json", "config.toml"):
        assert (out / name).read_text() == (whole / name).read_text()
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["fingerprint"] == json.loads((whole / "stage.json").read_text())["fingerprint"]
    assert manifest["plates_missing"] == [] and manifest["plates_in_store"] == list(PLATES)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".crop.json.*"))


@pytest.mark.parametrize("order", [(0, 1), (1, 0), (0, 1, 2), (3, 2, 1, 0)], ids=str)
def test_shards_one_after_another_make_the_store_of_one_crop(tmp_path, screen, capsys, order):
    table, whole = screen
    capsys.readouterr()
    out, n = tmp_path / "crops", len(order)
    for k, i in enumerate(order):
        assert main(crop_args(table, out, "--shard", f"{i}/{n}")) == 0
        printed = capsys.readouterr().out
        mine = shard_plates(PLATES, i, n)
        assert f"shard {i}/{n}: {len(mine)} plates done ({len(mine)} cropped now)" in printed
        if k < len(order) - 1:  # others are still to come: not finalised
            left = len(PLATES) - len(
                {p for j in order[: k + 1] for p in shard_plates(PLATES, j, n)}
            )
            assert f"{left} of 3 plates still missing: the last shard to finish" in printed
            assert "crop store (not finalised yet)" in printed
            assert not any((out / name).exists() for name in (*FINAL, "config.toml"))
            with pytest.raises(StoreError, match="incomplete: missing store"):
                CropStore(out)
        else:
            assert "all 3 plates done: the store is complete" in printed
    assert_same_store(out, whole)
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["shard"] == f"{order[-1]}/{n}"
    assert manifest["shard_plates"] == shard_plates(PLATES, order[-1], n)


def test_each_shard_crops_only_its_plates_and_a_plain_crop_finishes(
    tmp_path, screen, monkeypatch, capsys
):
    table, whole = screen
    out = tmp_path / "crops"
    seen = fail_on_plate(monkeypatch, "no such plate", RuntimeError)
    assert main(crop_args(table, out, "--shard", "1/3")) == 0
    assert set(seen) == {"Week1_2"}  # plate 1 of the sorted three
    assert sorted(p.name for p in (out / "plates").glob("*.npy")) == [
        f"{plate_file_stem('Week1_2')}.npy"
    ]
    assert sorted(p.name for p in (out / "illum").iterdir()) == [
        f"{plate_file_stem('Week1_2')}.npz"
    ]
    assert main(crop_args(table, out, "--shard", "1/3")) == 0  # a rerun (requeued job)
    assert seen.count("Week1_2") == 6  # its plate is not cropped again
    assert not (out / "store.json").exists()
    summary = crop_sites(
        read_image_table(table, ["DNA", "Tubulin", "Actin"]),
        ["DNA", "Tubulin", "Actin"],
        out,
        config(),
        shard=(1, 3),
    )
    assert summary["plates_missing"] == ["Week1_1", "Week2_3"] and summary["plates_cropped"] == []
    capsys.readouterr()
    assert main(crop_args(table, out)) == 0  # no --shard: crops what is missing, finalises
    assert sorted(seen) == sorted(["Week1_2"] * 6 + ["Week1_1"] * 6 + ["Week2_3"] * 6)
    assert_same_store(out, whole)


# A crop job that, at the first call of stage.<SYNC_AT>, waits until all SYNC_JOBS jobs have
# reached that call (each leaves a file named by its pid in SYNC_DIR): the jobs of an array are
# at that point at the same time, whatever the machine's load. 120 s is only a safety timeout.
TOGETHER = """
import os, sys, time
from pathlib import Path
import cellclr.cropping.stage as stage
name, folder = os.environ["SYNC_AT"], Path(os.environ["SYNC_DIR"])
real = getattr(stage, name)
def together(*args, **kwargs):
    setattr(stage, name, real)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(folder.iterdir())) < int(os.environ["SYNC_JOBS"]):
        if time.monotonic() > deadline:
            sys.exit(f"the other jobs did not reach stage.{name} within 120 s (safety timeout)")
        time.sleep(0.01)
    return real(*args, **kwargs)
setattr(stage, name, together)
from cellclr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def crop_together(table: Path, out: Path, shards: int, at: str) -> str:
    """Run the ``shards`` jobs of an array at once, all of them reaching ``stage.<at>`` before
    any goes on; return what they printed."""
    sync = out.parent / f"sync-{at}"
    sync.mkdir()
    env = {**os.environ, "SYNC_AT": at, "SYNC_DIR": str(sync), "SYNC_JOBS": str(shards)}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", TOGETHER, *crop_args(table, out, "--shard", f"{i}/{shards}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(shards)
    ]
    results = [job.communicate(timeout=300) for job in jobs]
    for job, (_, stderr) in zip(jobs, results, strict=True):
        assert job.returncode == 0, stderr
    assert len(list(sync.iterdir())) == shards  # every job waited for the others there
    return "".join(stdout for stdout, _ in results)


def test_shards_at_the_same_time(tmp_path, screen):
    table, whole = screen
    out = tmp_path / "crops"
    printed = crop_together(table, out, 2, "_work_folder")  # both create OUT and claim it at once
    assert "all 3 plates done: the store is complete" in printed  # one finalised, or both
    assert_same_store(out, whole)
    for name in FINAL:  # as if the finalising job had been killed
        (out / name).unlink()
    printed = crop_together(table, out, 2, "_finalise")  # both finalise, at the same time
    assert printed.count("all 3 plates done: the store is complete") == 2
    assert_same_store(out, whole)


def claim(folder: Path, fp: str, start) -> str:
    start.wait()
    try:
        _claim(folder, fp)
        return fp
    except OutputExistsError:
        return "refused"


@pytest.mark.skipif(sys.platform != "linux", reason="forks processes")
def test_claiming_a_folder_is_safe_when_jobs_race(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = tmp_path / f"out{attempt}"
        with context.Manager() as manager:
            start = manager.Barrier(8)
            with context.Pool(8) as pool:
                fps = ["a", "b"] * 4  # two settings racing for one folder
                got = pool.starmap(claim, [(folder, fp, start) for fp in fps])
        winner = json.loads((folder / "crop.json").read_text())["fingerprint"]
        assert got == [fp if fp == winner else "refused" for fp in fps]
        assert sorted(p.name for p in folder.iterdir()) == ["crop.json", "plates"]  # no tmp


def test_a_shard_refuses_a_store_made_otherwise(tmp_path, screen, capsys):
    table, whole = screen
    before = digest(whole)
    assert main(crop_args(table, whole, "--box", "40", "--shard", "0/2")) == 2
    err = capsys.readouterr().err
    assert "another image table or crop settings" in err and "never replaces" in err
    assert f"delete {whole} first" in err and "without --shard" in err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    assert main(crop_args(table, other, "--shard", "0/2")) == 2
    assert "is not a crop store" in capsys.readouterr().err
    assert digest(whole) == before and [p.name for p in other.iterdir()] == ["mine.txt"]


def test_shard_with_overwrite_is_refused(tmp_path, screen, capsys):
    table, whole = screen
    before = digest(whole)
    for out in (whole, tmp_path / "new"):
        assert main(crop_args(table, out, "--box", "40", "--shard", "0/2", "--overwrite")) == 2
        err = capsys.readouterr().err
        assert "--shard cannot be used with --overwrite" in err and "without --shard" in err
    assert digest(whole) == before and not (tmp_path / "new").exists()
    assert not (tmp_path / "whole.partial").exists()


def test_bad_shards_are_refused_by_the_library_too(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    sites = read_image_table(table, ["DNA", "Tubulin", "Actin"])
    for shard in ((2, 2), (-1, 3), (0, 0)):
        with pytest.raises(CropError, match="shard"):
            crop_sites(sites, ["DNA", "Tubulin", "Actin"], tmp_path / "o", config(), shard=shard)
    assert not (tmp_path / "o").exists()


def test_a_plate_with_every_file_missing_does_not_hold_the_shards_up(tmp_path):
    table = write_plates(tmp_path / "images", plates=PLATES)
    shutil.rmtree(tmp_path / "images" / "Week1_2")  # plate 1: no image at all
    whole = tmp_path / "whole"
    assert main(crop_args(table, whole, "--skip-incomplete")) == 0
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--skip-incomplete", "--shard", "0/2")) == 0
    assert not (out / "store.json").exists()
    assert main(crop_args(table, out, "--skip-incomplete", "--shard", "1/2")) == 0  # Week1_2
    assert CropStore(out).id == CropStore(whole).id
    sites = pd.read_parquet(out / "sites.parquet")
    pd.testing.assert_frame_equal(sites, pd.read_parquet(whole / "sites.parquet"))
    assert (sites.loc[sites["Metadata_Plate"] == "Week1_2", "status"] != "ok").all()
