"""Test helpers: tiny configs, synthetic crop files, where the real BBBC021 data are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils._python_dispatch import TorchDispatchMode

from cellclr.config import load_config

# The real data sit beside the checkout (../shared), or where CELLCLR_BBBC021 points.
SHARED = Path(
    os.environ.get(
        "CELLCLR_BBBC021", Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc021"
    )
)

TINY_OVERRIDES = [
    "model.arch='resnet_small'",
    "model.stem='small2'",
    "simclr.proj_hidden=32",
    "simclr.proj_dim=16",
    "supcon.proj_hidden=32",
    "supcon.proj_dim=16",
    "augment.size=16",
    "train.epochs=2",
    "train.batch_size=16",
    "train.warmup_epochs=1",
    "train.threads=1",
    "train.device='cpu'",
    "embed.device='cpu'",
]


def tiny_config(*extra: str):
    return load_config(None, [*TINY_OVERRIDES, *extra])


def error_part(err: str) -> str:
    """Standard error of the command line from its error (``cellclr: error: ...``) on: what
    comes before are the messages logged on the way (progress notes, warnings)."""
    start = err.find("cellclr: error: ")
    return err if start < 0 else err[start:]


def make_crop_files(
    folder: Path, n_channels: int = 3, size: int = 20, seed: int = 0, n_plates: int = 2
) -> tuple[Path, Path]:
    """Write crops.npz + cells.csv: ``n_plates`` plates of 3 compounds x 2 doses, DMSO too."""
    rng = np.random.default_rng(seed)
    rows = []
    treatments = [
        ("DMSO", 0.0, "DMSO"),
        ("a1", 1.0, "M1"),
        ("a1", 3.0, "M1"),
        ("b1", 1.0, "M1"),
        ("c1", 1.0, "M2"),
        ("c1", 3.0, "M2"),
        ("d1", 1.0, "M2"),
    ]
    for p in range(n_plates):
        plate = f"Week{p + 1}_{1000 + p}"
        for w, (compound, conc, moa) in enumerate(treatments):
            for cell in range(4):
                rows.append(
                    {
                        "Metadata_Plate": plate,
                        "Metadata_Well": f"B{w + 2:02d}",
                        "Metadata_Site": 1 + cell % 2,
                        "Metadata_Compound": compound,
                        "Metadata_Concentration": conc,
                        "Metadata_MoA": moa,
                    }
                )
    cells = pd.DataFrame(rows)
    cells["Metadata_CellIndex"] = np.arange(len(cells))
    images = rng.integers(100, 3000, (len(cells), n_channels, size, size)).astype(np.uint16)
    images[cells["Metadata_MoA"].to_numpy() == "M2", 0] += 2000  # a visible phenotype
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "crops.npz", images=images)
    cells.to_csv(folder / "cells.csv", index=False)
    return folder / "crops.npz", folder / "cells.csv"


class CountOps(TorchDispatchMode):
    """Counts the tensor operations torch dispatches (a fused ``_foreach_*`` op counts once)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))
