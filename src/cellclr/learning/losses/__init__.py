"""Contrastive and self-distillation losses, one per module."""

from cellclr.learning.losses.dino import dino_loss, updated_center
from cellclr.learning.losses.nt_xent import nt_xent
from cellclr.learning.losses.supcon import supcon

__all__ = ["dino_loss", "nt_xent", "supcon", "updated_center"]
