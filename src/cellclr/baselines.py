"""``cellclr baseline``: reference representations evaluated by the same later stages.

``random``: the configured encoder with its random initial weights (the same seed as training),
written as a model folder so that ``embed``, ``profile`` and ``evaluate`` run unchanged: how much
of the result the architecture and the profiling give before any learning.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cellclr.config import Config, save_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.models import build_encoder
from cellclr.outputs import atomic_file, staged_dir, write_manifest
from cellclr.store import CropStore
from cellclr.train import MODEL, model_meta

KINDS = ("random",)


def baseline_fingerprint(kind: str, store: CropStore, cfg: Config) -> str:
    return fingerprint(f"baseline-{kind}", [store.id], cfg, ("data", "model", "augment", "train"))


def random_model(
    crops: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write a model folder holding the untrained encoder (initialised with ``train.seed``)."""
    t_start = time.perf_counter()
    store = CropStore(crops)
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg.model.arch, len(store.channels), cfg.model.stem)
    with staged_dir(out, overwrite=overwrite) as work:
        with atomic_file(work / MODEL) as tmp:
            torch.save({"meta": model_meta(cfg, store), "encoder": encoder.state_dict()}, tmp)
        save_config(cfg, work / "config.toml")
        write_manifest(
            work,
            "baseline-random",
            baseline_fingerprint("random", store, cfg),
            seconds=round(time.perf_counter() - t_start, 1),
            crops=str(crops),
        )
    return Path(out)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CellclrError(f"unknown baseline {kind!r}: choose {', '.join(KINDS)}")
