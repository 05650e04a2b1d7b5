"""The model folder's ``model.pt``: the trained encoder's weights and what ``embed`` needs to use
it (architecture, channels, view size, intensity scaling). Loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cellclr.config import Config
from cellclr.learning.backbones import build_encoder
from cellclr.learning.checkpoints import CheckpointError, load_torch, save_torch
from cellclr.store import CropStore

MODEL = "model.pt"


def model_meta(cfg: Config, store: CropStore) -> dict:
    """What ``embed`` needs besides the weights: architecture, channels, view size, scaling."""
    return {
        "arch": cfg.model.arch,
        "stem": cfg.model.stem,
        "channels": list(store.channels),
        "size": cfg.augment.size,
        "normalize": cfg.data.normalize,
        "normalize_min_cells": cfg.data.normalize_min_cells,
    }


def save_model(folder: Path, meta: dict, encoder: nn.Module) -> None:
    """Write ``folder/model.pt`` atomically."""
    save_torch({"meta": meta, "encoder": encoder.state_dict()}, folder / MODEL)


def load_encoder(model_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The trained encoder (eval mode, on ``device``) and its metadata."""
    path = Path(model_dir) / MODEL
    saved = load_torch(path, "trained model", ("meta", "encoder"))
    meta = saved["meta"]
    encoder = build_encoder(meta["arch"], len(meta["channels"]), meta["stem"])
    try:
        encoder.load_state_dict(saved["encoder"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit {meta['arch']}: {e}") from None
    return encoder.to(device, memory_format=torch.channels_last).eval(), meta
