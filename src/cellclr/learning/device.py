"""The training device: CPU or CUDA, and the precision of autocast there.

CUDA GPUs with native bf16 (compute capability 8 and up: A100, H100, ...) run the model under
bf16 autocast. Older ones (V100, T4, ...) would emulate bf16 slowly: they run fp16 autocast,
and training scales the loss (a GradScaler) so that small gradients survive fp16. CPUs compute
in float32."""

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


def precision(device: torch.device) -> str:
    """``bf16`` on a CUDA GPU with native bf16, ``fp16`` on one without, ``fp32`` elsewhere."""
    if device.type != "cuda":
        return "fp32"
    try:  # torch >= 2.4 counts emulated bf16 as supported unless told not to
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        native = torch.cuda.is_bf16_supported()
    return "bf16" if native else "fp16"


def device_kind(device: torch.device) -> str:
    """For fingerprints: the device type, and the precision where it is not the usual one
    (CUDA computes in bf16, or fp16 on GPUs without it: other numbers)."""
    kind = precision(device)
    return device.type if kind in ("fp32", "bf16") else f"{device.type}-{kind}"


def precision_note(device: torch.device) -> str | None:
    """What to tell the user when the GPU lacks bf16 (None otherwise)."""
    if precision(device) != "fp16":
        return None
    name = torch.cuda.get_device_name(device)
    return f"{name} has no native bf16: the model runs in fp16 autocast (training scales the loss)"


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 (or fp16) autocast on CUDA; full precision on CPU."""
    kind = precision(device)
    if kind == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if kind == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler fp16 training needs; a pass-through elsewhere. (Enabled, it reads one
    number from the GPU per step, whether any gradient overflowed.)"""
    return torch.amp.GradScaler(device.type, enabled=precision(device) == "fp16")
