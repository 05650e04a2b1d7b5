"""The model folder's ``model.pt``: the trained encoder's weights and what ``embed`` needs to use
it (architecture, channels, view size, intensity scaling). Loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cellclr.config import Config
from cellclr.learning.backbones import build_encoder
from cellclr.outputs import atomic_file
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
    with atomic_file(folder / MODEL) as tmp:
        torch.save({"meta": meta, "encoder": encoder.state_dict()}, tmp)


def load_encoder(model_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The trained encoder (eval mode, on ``device``) and its metadata."""
    path = Path(model_dir) / MODEL
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    meta = saved["meta"]
    encoder = build_encoder(meta["arch"], len(meta["channels"]), meta["stem"])
    encoder.load_state_dict(saved["encoder"])
    return encoder.to(device, memory_format=torch.channels_last).eval(), meta
