"""Embedding throughput: cells/s of ``embed``'s inner loop (read, normalise, resize, encode) for
a config's encoder (random weights: the speed does not depend on them), on a crop store.

    python bench/embed_rate.py --crops STORE [--set model.arch=resnet50 ...] [--summary FILE]
        [--max-cells N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cellclr.config import load_config
from cellclr.learning.augment import resize
from cellclr.learning.backbones import build_encoder
from cellclr.learning.batches import CropBatches
from cellclr.learning.device import autocast, resolve_device
from cellclr.store import CropStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", type=Path, required=True)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--summary", type=Path, help="append a tab-separated result line here")
    ap.add_argument("--max-cells", type=int, help="embed only the first N cells")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    device = resolve_device(cfg.embed.device)
    store = CropStore(args.crops)
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    encoder = build_encoder(cfg.model.arch, len(store.channels), cfg.model.stem)
    encoder = encoder.to(device, memory_format=torch.channels_last).eval()
    n, bs = min(len(store), args.max_cells or len(store)), cfg.embed.batch_size
    batches = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]
    rates = []
    with torch.inference_mode(), autocast(device):
        for _ in range(3):  # the first pass warms up
            t0 = time.perf_counter()
            for x in CropBatches(store, norm, batches, device):
                encoder(resize(x, cfg.augment.size)).float().cpu()
            rates.append(n / (time.perf_counter() - t0))
    rate = max(rates[1:])
    print(f"embedding: {rate:10.0f} cells/s ({cfg.model.arch}, {cfg.augment.size} px, {device})")
    if args.summary:
        with args.summary.open("a") as f:
            f.write(f"embed\t{cfg.model.arch}\t{cfg.augment.size}\t{bs}\t{rate:.0f}\n")


if __name__ == "__main__":
    main()
