"""Training methods, one per module: each builds the model a step trains and computes the loss.

- ``simclr``: NT-Xent between two views of each cell (no labels).
- ``supcon``: SupCon, the views of cells with the same treatment (or compound) are positives
  (weak supervision: never the MoA).
- ``dino``: self-distillation with a momentum teacher, global and local views (no labels).
"""

from __future__ import annotations

import torch

from cellclr.config import Config, ConfigError
from cellclr.learning.backbones import build_encoder
from cellclr.learning.methods.base import Batch, Method
from cellclr.learning.methods.dino import DINO
from cellclr.learning.methods.simclr import SimCLR
from cellclr.learning.methods.supcon import SupCon

METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "supcon": SupCon, "dino": DINO}

__all__ = ["METHODS", "Batch", "Method", "build_method"]


def build_method(cfg: Config, in_channels: int, n_batches: int = 0) -> Method:
    """The configured method on the configured encoder, initialised from ``train.seed``;
    ``n_batches``: how many batches a batch adversary (``train.batch_adversary``) tells apart."""
    if cfg.train.batch_adversary > 0 and cfg.train.method == "dino":
        raise ConfigError("train.batch_adversary works with simclr and supcon, not dino")
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg.model.arch, in_channels, cfg.model.stem)
    if METHODS[cfg.train.method] is DINO:
        return DINO(encoder, cfg)
    return METHODS[cfg.train.method](encoder, cfg, n_batches)
