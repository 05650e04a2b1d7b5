"""Worker processes of the crop stage (cellclr.workers)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cropping.test_stage import crop_args, write_plates

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
