"""Worker processes of the crop stage (cellclr.workers): they die with a killed crop."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cropping.test_stage import crop_args, write_plates
from tests.helpers import SAFETY, wait_for

# A crop whose nucleus detection never ends: each worker leaves a file named by its pid in
# READY when it starts a site, then waits until it is killed. So it is surely running, with
# both workers busy, when the test kills it.
BLOCKED_CROP = """
import os, signal, sys
from pathlib import Path
import cellclr.cropping.sites as sites
def blocked(*args):
    Path(os.environ["READY"], str(os.getpid())).touch()
    while True:
        signal.pause()
sites.detect_nuclei = blocked
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


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; PDEATHSIG is Linux only")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_workers_die_with_a_killed_crop(tmp_path, sig):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    args = crop_args(table, out, "--workers", "2", "--no-illumination")
    out = tmp_path / "crops.partial"  # where an unfinished crop lives
    ready = tmp_path / "ready"
    ready.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_CROP, *args],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "READY": str(ready)},
    )
    workers: set[int] = set()

    def running() -> bool:
        assert proc.poll() is None, f"the crop ended (exit code {proc.returncode}) too early"
        return len(list(ready.iterdir())) == 2 and any(out.rglob("*.tmp"))

    try:
        wait_for(running, "both workers busy in a site and the plate file open")
        workers = {int(p.name) for p in ready.iterdir()}
        assert workers <= children(proc.pid)  # the crop's own workers
        proc.send_signal(sig)
        proc.wait(SAFETY)
        wait_for(lambda: not any(alive(w) for w in workers), "workers outlived it")
    finally:
        proc.kill()
        for w in workers:
            if alive(w):
                subprocess.run(["kill", "-9", str(w)], check=False)
    if sig == signal.SIGTERM:  # shut down in order: no half-written plate, no store
        assert proc.returncode == 128 + signal.SIGTERM
        assert not list(out.rglob("*.tmp")) and not (out / "store.json").exists()
