"""Torch files (checkpoints and ``model.pt``): written atomically through memory, so that a full
disk is an ``OSError`` naming the file; read with ``weights_only=True``, with one clear error for
a truncated or corrupt file."""

from __future__ import annotations

import errno
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cellclr.errors import CellclrError
from cellclr.outputs import atomic_file


class CheckpointError(CellclrError, RuntimeError):
    """A torch file that cannot be read, or does not hold what cellclr wrote."""


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically. The bytes are serialised in memory first: torch's
    own writer reports a full disk as an anonymous RuntimeError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_file(path) as tmp:
        try:
            tmp.write_bytes(buffer.getbuffer())
        except OSError as e:
            raise OSError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from None


def load_torch(path: Path, what: str, keys: tuple[str, ...], hint: str = "") -> dict[str, Any]:
    """The dict saved at ``path`` (on the CPU), which must hold ``keys``."""
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).split(". ")[0].splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: the {what} is truncated or corrupt ({reason}){hint}"
        ) from None
    missing = [k for k in keys if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise CheckpointError(f"{path}: not a cellclr {what} (no {', '.join(missing)}){hint}")
    return saved
