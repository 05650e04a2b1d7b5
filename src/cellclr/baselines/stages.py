"""``cellclr baseline``: reference representations evaluated by the same later stages.

- ``random``: the configured encoder with its random initial weights (the same seed as
  training), written as a model folder so that ``embed`` runs unchanged: what the architecture
  and the profiling give before any learning.
- ``classic``: CellProfiler-style per-cell features (shape, intensity, texture; see
  ``cellclr.baselines.classic``), written as embeddings exactly as ``embed`` writes them.
- ``cellprofiler``: CellProfiler's own measurements through cp_measure (see
  ``cellclr.baselines.cellprofiler``), likewise; some 10 (texture off) to 40 times slower
  than ``classic``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cellclr.baselines.classic import write_classic_embeddings
from cellclr.config import Config
from cellclr.fingerprint import fingerprint
from cellclr.learning.backbones import build_encoder
from cellclr.learning.saved_model import model_meta, save_model
from cellclr.stages import Stage
from cellclr.store import CropStore

KINDS = ("random", "classic")  # the quick ones, which `compare` runs beside every method
ALL_KINDS = (*KINDS, "cellprofiler")  # what `baseline --kind` and `evaluate.baselines` take
SECTIONS = {
    "random": ("data", "model", "augment", "train"),
    "classic": ("data",),
    "cellprofiler": ("data", "cellprofiler"),
}


def baseline_fingerprint(kind: str, store: CropStore, cfg: Config) -> str:
    return fingerprint(f"baseline-{kind}", [store.id], cfg, SECTIONS[kind])


def random_model(
    crops: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write a model folder holding the untrained encoder (initialised with ``train.seed``)."""
    store = CropStore(crops)
    stage = Stage("baseline-random", baseline_fingerprint("random", store, cfg), cfg)
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg.model.arch, len(store.channels), cfg.model.stem)
    with stage.output(out, overwrite=overwrite, inputs=[crops]) as work:
        save_model(work, model_meta(cfg, store), encoder)
        stage.manifest.update(crops=str(crops))
    return Path(out)


def classic_embeddings(
    crops: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write an embeddings folder of classic features for every cell of the store."""

    def measure(store: Path, work: Path) -> dict[str, Any]:
        write_classic_embeddings(store, work, **_intensity(cfg), workers=cfg.crop.workers)
        return {}

    return _measured_embeddings("classic", measure, crops, out, cfg, overwrite)


def cellprofiler_embeddings(
    crops: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write an embeddings folder of CellProfiler's measurements for every cell of the store;
    its ``stage.json`` records cells/s and the values that could not be computed."""
    from cellclr.baselines.cellprofiler import write_cellprofiler_embeddings

    def measure(store: Path, work: Path) -> dict[str, Any]:
        c = cfg.cellprofiler
        return write_cellprofiler_embeddings(
            store, work, **_intensity(cfg), workers=c.workers, texture=c.texture
        )

    return _measured_embeddings("cellprofiler", measure, crops, out, cfg, overwrite)


def _intensity(cfg: Config) -> dict[str, Any]:
    """The intensity scaling the model sees, which the measured baselines share."""
    return {"normalize": cfg.data.normalize, "normalize_min_cells": cfg.data.normalize_min_cells}


def _measured_embeddings(
    kind: str,
    measure: Callable[[Path, Path], dict[str, Any]],
    crops: str | Path,
    out: str | Path,
    cfg: Config,
    overwrite: bool,
) -> Path:
    """Stage ``measure(store, work)``'s embeddings into ``out`` with the config and a manifest
    (time, store, and what ``measure`` returns)."""
    store = CropStore(crops)
    stage = Stage(f"baseline-{kind}", baseline_fingerprint(kind, store, cfg), cfg)
    with stage.output(out, overwrite=overwrite, inputs=[crops]) as work:
        stats = measure(Path(crops), work)
        stage.manifest.update(crops=str(crops), store=store.id, **stats)
    return Path(out)
