"""Run ``cellclr`` under torchrun with the main process slow where the others wait for it:
``SLOW`` (environment) names functions, ``module:function,...``, that on rank 0 first wait
until the other process is at the barrier where it waits for them, then sleep
``SLOW_SECONDS`` before they run: so the other waits at least that long, however loaded the
machine. (Every barrier call is counted on each process; the other process leaves a file
``barrier-RANK-N`` beside ``--out`` as it enters its N-th.) Each process records, as it leaves
the process group, whether the main process had finished (``--out``'s eval/metrics.json
written). Used by test_distributed."""

import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

import cellclr.learning.distributed as distributed
import cellclr.learning.embed
import cellclr.learning.train
import cellclr.pipeline
from cellclr.cli import main

OUT = Path(sys.argv[sys.argv.index("--out") + 1])
RANK = os.environ["RANK"]
SAFETY = 120  # seconds: only for a process that never comes
calls = {"barrier": 0}
real_barrier = distributed.barrier


def counted_barrier(world):
    calls["barrier"] += 1
    if RANK != "0":
        (OUT.parent / f"barrier-{RANK}-{calls['barrier']}").touch()
    return real_barrier(world)


for module in (distributed, cellclr.learning.embed, cellclr.learning.train, cellclr.pipeline):
    module.barrier = counted_barrier


def slowed(real):
    def slow(*args, **kwargs):
        if RANK == "0":
            waiting = OUT.parent / f"barrier-1-{calls['barrier'] + 1}"  # its next: the wait
            deadline = time.monotonic() + SAFETY
            while not waiting.exists():
                if time.monotonic() > deadline:
                    sys.exit(f"{waiting.name} did not appear within {SAFETY} s (safety timeout)")
                time.sleep(0.02)
            time.sleep(float(os.environ["SLOW_SECONDS"]))
        return real(*args, **kwargs)

    return slow


for spec in os.environ["SLOW"].split(","):
    module, name = spec.split(":")
    module = importlib.import_module(module)
    setattr(module, name, slowed(getattr(module, name)))

real_destroy = dist.destroy_process_group


def destroy(*args, **kwargs):
    done = (OUT / "eval" / "metrics.json").is_file()
    (OUT.parent / f"left-{RANK}.json").write_text(json.dumps({"main_done": done}))
    return real_destroy(*args, **kwargs)


dist.destroy_process_group = destroy
sys.exit(main(sys.argv[1:]))
