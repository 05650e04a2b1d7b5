"""Writing outputs (cellclr.outputs): an output never overlaps its inputs, --overwrite replaces
only a finished cellclr output after the new one is complete, and one process at a time per
output folder."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cellclr.cli import main
from cellclr.outputs import (
    OutputError,
    OutputLockedError,
    lock_path,
    output_lock,
    staged_dir,
)
from tests.helpers import error_of, error_part, one_line_error, sets, wells_table, write_csv

HOLDER = """
import sys
from pathlib import Path
from cellclr.outputs import output_lock
with output_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of ``tmp_path / "model"`` until the test ends."""
    out = tmp_path / "model"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout.readline() == "held\n"
    yield out, child
    child.stdin.close()
    child.wait()


def test_a_second_training_into_the_same_folder_is_refused(held, store, capsys):
    out, child = held
    for extra in ([], ["--overwrite"], ["--resume"]):
        args = ["train", "--crops", str(store), "--out", str(out), *sets(), *extra]
        assert main(args) == 2
        err = error_part(capsys.readouterr().err).strip().splitlines()
        assert err == [
            f"cellclr: error: {out}: another process is writing it (pid {child.pid} on "
            f"{socket.gethostname()}, holding {lock_path(out)}): wait for it to end, or stop "
            "it first"
        ]
        assert not out.exists() and not Path(f"{out}.partial").exists()
    # once it has ended (whichever way: the kernel releases the lock), training goes ahead
    child.stdin.close()
    child.wait()
    assert main(["train", "--crops", str(store), "--out", str(out), *sets()]) == 0
    assert (out / "model.pt").is_file() and not lock_path(out).exists()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "out"
    lock_path(out).write_text("pid 1 on elsewhere\n")  # its process is gone: no flock on it
    with staged_dir(out) as work:
        assert lock_path(out).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
        (work / "stage.json").write_text('{"fingerprint": "a"}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_lock_is_one_per_output(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    refused = pytest.raises(OutputLockedError, match=f"{a}: another process")
    with output_lock(a), output_lock(b), refused, output_lock(a):
        pass


def test_a_damaged_json_output_is_named(tmp_path):
    from cellclr.errors import CellclrError
    from cellclr.outputs import read_json_object
    from cellclr.pipeline import load_results

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text('{"nsc": {"correct": 3')  # truncated
    with pytest.raises(CellclrError, match=r"metrics\.json: not valid JSON"):
        load_results(run)
    (run / "eval" / "metrics.json").write_text("[1, 2]")
    with pytest.raises(CellclrError, match="holds a JSON list, not an object"):
        read_json_object(run / "eval" / "metrics.json")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("args", "overlapped"),
    [
        (["evaluate", "--profiles", "R", "--out", "R"], "R"),
        (["evaluate", "--features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["evaluate", "--features", "t.csv", "--moa", "moa.csv", "--out", "moa.csv"], "moa.csv"),
        (["profile", "--features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["profile", "--features", "t.csv", "--out", "t.csv"], "t.csv"),
        (["profile", "--embeddings", "E", "--out", "E/sub"], "E"),
        (["predict", "--reference", "R", "--query", "Q", "--out", "Q/x"], "Q"),
        (["predict", "--reference", "R", "--query", "Q", "--out", "R"], "R"),
        (["predict", "--reference", "R", "--query-features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["predict", "--reference", "R", "--query-crops", "E", "--model", "Q", "--out", "Q"], "Q"),
    ],
)
def test_output_over_an_input_is_refused_and_the_inputs_kept(
    runs, capsys, monkeypatch, args, overlapped
):
    monkeypatch.chdir(runs)
    write_csv(wells_table(), runs / "D" / "t.csv")
    (runs / "D" / "stage.json").write_text("{}")  # looks like an output: --overwrite may replace
    before = snapshot(runs)
    error = error_of(capsys, [*args, "--overwrite"])
    assert f"overlaps the input {overlapped}" in error
    assert snapshot(runs) == before


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def model(store, tmp_path):
    out = tmp_path / "model"
    assert main(["train", "--crops", str(store), "--out", str(out), *sets()]) == 0
    return out


def test_train_and_embed_refuse_an_output_that_overlaps_an_input(store, model, tmp_path, capsys):
    before = digest(store), digest(model)
    cases = [
        ["train", "--crops", str(store), "--out", str(store)],
        ["train", "--crops", str(store), "--out", str(store / "model")],
        ["train", "--crops", str(store), "--out", str(store.parent)],
        ["embed", "--model", str(model), "--crops", str(store), "--out", str(store)],
        ["embed", "--model", str(model), "--crops", str(store), "--out", str(model)],
        ["baseline", "--kind", "classic", "--crops", str(store), "--run", str(store)],
    ]
    for args in cases:
        capsys.readouterr()
        assert main([*args, *sets(), "--overwrite"]) == 2, args
        assert "overlaps the input" in one_line_error(capsys)
    assert (digest(store), digest(model)) == before


def test_report_never_overwrites_a_file_of_the_run(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    capsys.readouterr()  # the run's progress notes
    before = digest(run)
    target = run / "eval" / "metrics.json"
    assert main(["report", "--run", str(run), "--out", str(target), "--overwrite"]) == 2
    assert "overlaps the input" in one_line_error(capsys)
    assert digest(run) == before


def test_an_output_that_is_a_file_or_not_ours(store, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    assert main(["train", "--crops", str(store), "--out", str(afile), *sets(), "--overwrite"]) == 2
    assert "exists and is a file" in one_line_error(capsys)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("keep me too")
    assert main(["train", "--crops", str(store), "--out", str(folder), *sets(), "--overwrite"]) == 2
    assert "is not a cellclr output" in one_line_error(capsys)
    assert afile.read_text() == "keep me" and (folder / "chapter1.tex").is_file()


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as work:
        (work / "stage.json").write_text('{"fingerprint": "a"}')
    with pytest.raises(RuntimeError), staged_dir(out, overwrite=True) as work:
        (work / "half").write_text("x")
        raise RuntimeError("the new output fails half-way")
    assert (out / "stage.json").read_text() == '{"fingerprint": "a"}'
    assert not (tmp_path / "out.partial").exists()
    (tmp_path / "out.old").write_text("a stray file with the old swap name")
    with staged_dir(out, overwrite=True) as work:
        (work / "stage.json").write_text('{"fingerprint": "b"}')
    assert (out / "stage.json").read_text() == '{"fingerprint": "b"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.old"]
    with pytest.raises(OutputError, match="overlaps the input"), staged_dir(out, inputs=[out]):
        pass


def test_an_input_named_like_the_outputs_staging_folder_is_kept(tmp_path, capsys):
    source = tmp_path / "eval.partial"
    source.mkdir()
    (source / "stage.json").write_text('{"fingerprint": "x"}')
    args = ["evaluate", "--profiles", str(source), "--out", str(tmp_path / "eval")]
    assert main(args) == 2
    assert "overlaps the input" in one_line_error(capsys)
    assert (source / "stage.json").is_file()
