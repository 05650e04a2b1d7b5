"""``run``'s crop stage under torchrun: every process crops its share of the plates, the main
process finalises, and the others wait for it past the process group's timeout."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch.distributed as dist
import torch.multiprocessing as mp

from cellclr import pipeline
from cellclr.images.crop import crop
from cellclr.learning.distributed import world_from_env
from cellclr.store import CropStore
from tests.helpers import tiny_config
from tests.images.test_crop import write_plates

CROP = ["crop.channels=['DNA', 'Tubulin', 'Actin']", "crop.box=32", "crop.workers=1"]
CROP += ["crop.nucleus_min_area=100", "crop.illumination_min_sites=4"]


def _crop_ranks(rank: int, init: str, table: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="-", MASTER_PORT="0")
    timeout = timedelta(seconds=5)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=timeout)
    calls = []

    def recorded(folder, cfg, overwrite=False, shard=None):
        if rank == 0 and shard is not None:
            time.sleep(8)  # the other process waits longer than the timeout
        summary = crop(folder, cfg, overwrite=overwrite, shard=shard)
        calls.append({"shard": shard, "cropped": summary["plates_cropped"]})
        return summary

    pipeline.crop = recorded
    cfg = tiny_config(f"crop.images_table='{table}'", *CROP)
    pipeline._crop_stage(Path(out) / "crops", cfg, world_from_env(), overwrite=False)
    (Path(out) / f"calls-{rank}.json").write_text(json.dumps(calls))
    dist.destroy_process_group()


def test_every_process_crops_a_shard_and_the_main_one_finalises(tmp_path):
    table = write_plates(tmp_path / "images")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_crop_ranks, args=(init, str(table), str(tmp_path)), nprocs=2, join=True)
    calls = [json.loads((tmp_path / f"calls-{r}.json").read_text()) for r in (0, 1)]
    assert calls[0] == [{"shard": [0, 2], "cropped": ["Week1_1"]}, {"shard": None, "cropped": []}]
    assert calls[1] == [{"shard": [1, 2], "cropped": ["Week2_2"]}]
    two = CropStore(tmp_path / "crops")
    cfg = tiny_config(f"crop.images_table='{table}'", *CROP)
    crop(tmp_path / "one", cfg)  # one process, as before
    one = CropStore(tmp_path / "one")
    pd.testing.assert_frame_equal(two.cells, one.cells)
    everything = np.arange(len(one))
    assert np.array_equal(two.read(everything), one.read(everything))
