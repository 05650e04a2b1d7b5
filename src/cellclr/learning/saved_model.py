"""The model folder's ``model.pt``: the trained encoder's weights and what ``embed`` needs to use
it (architecture, channels, view size, intensity scaling). Loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cellclr.config import Config
from cellclr.learning.backbones import build_encoder
from cellclr.learning.checkpoints import CheckpointError, load_torch, save_torch
from cellclr.store import CropStore, StoreError

MODEL = "model.pt"


def model_meta(cfg: Config, store: CropStore) -> dict:
    """What ``embed`` needs besides the weights: architecture, channels, view size, scaling."""
    return {
        "arch": cfg.model.arch,
        "stem": cfg.model.stem,
        "channels": list(store.channels),
        "size": cfg.augment.size,
        "crop_shape": [int(s) for s in store.crop_shape[1:]],  # the crops it learnt from
        "normalize": cfg.data.normalize,
        "normalize_min_cells": cfg.data.normalize_min_cells,
    }


def check_crop_size(meta: dict, store: CropStore, crops: str | Path, model: str | Path) -> None:
    """Refuse crops of another size than the model learnt from: both are resized to the view
    size, so cells would be seen smaller or larger than in training. (A model saved before
    the crop size was kept is not checked.)"""
    trained = meta.get("crop_shape")
    have = [int(s) for s in store.crop_shape[1:]]
    if trained is None or have == list(trained):
        return
    ratio = have[0] / trained[0]
    seen = f"{ratio:.2g}x smaller" if ratio > 1 else f"{1 / ratio:.2g}x larger"
    raise StoreError(
        f"{crops}: crops of {have[0]}x{have[1]} px, but the model {model} learnt from "
        f"{trained[0]}x{trained[1]} px crops: both are resized to {meta['size']} px, so cells "
        f"would be seen {seen} than in training; crop them with --box {trained[0]}, or pass "
        "--any-crop-size if their pixels are that much smaller (another magnification)"
    )


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
