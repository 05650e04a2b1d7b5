"""The training device: CPU or CUDA, and bf16 autocast on CUDA."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from cellclr.errors import CellclrError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CellclrError(f"device {name!r} was asked for but CUDA is not available")
    return device


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
