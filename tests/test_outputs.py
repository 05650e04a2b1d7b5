"""Writing outputs: one process at a time per output folder (issue 18 item 9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cellclr.cli import main
from cellclr.outputs import OutputLockedError, lock_path, output_lock, staged_dir
from tests.helpers import error_part
from tests.test_cli import sets

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
    from cellclr.pipeline import collect_results

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text('{"nsc": {"correct": 3')  # truncated
    with pytest.raises(CellclrError, match=r"metrics\.json: not valid JSON"):
        collect_results(run)
    (run / "eval" / "metrics.json").write_text("[1, 2]")
    with pytest.raises(CellclrError, match="holds a JSON list, not an object"):
        read_json_object(run / "eval" / "metrics.json")
