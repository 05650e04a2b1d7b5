"""Contrastive and self-distillation losses, one per module."""

from cellclr.learning.losses.nt_xent import nt_xent

__all__ = ["nt_xent"]
