"""Run ``cellclr`` under torchrun with the main process slow where the others wait for it:
``SLOW`` (environment) names functions, ``module:function,...``, that sleep ``SLOW_SECONDS`` on
rank 0 before they run. Each process records, as it leaves the process group, whether the main
process had finished (``--out``'s eval/metrics.json written). Used by test_distributed."""

import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from cellclr.cli import main


def slowed(real):
    def slow(*args, **kwargs):
        if os.environ["RANK"] == "0":
            time.sleep(float(os.environ["SLOW_SECONDS"]))
        return real(*args, **kwargs)

    return slow


for spec in os.environ["SLOW"].split(","):
    module, name = spec.split(":")
    module = importlib.import_module(module)
    setattr(module, name, slowed(getattr(module, name)))

real_destroy = dist.destroy_process_group


def destroy(*args, **kwargs):
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    done = (out / "eval" / "metrics.json").is_file()
    (out.parent / f"left-{os.environ['RANK']}.json").write_text(json.dumps({"main_done": done}))
    return real_destroy(*args, **kwargs)


dist.destroy_process_group = destroy
sys.exit(main(sys.argv[1:]))
