"""Test helpers: tiny configs, synthetic crop files and feature tables, the CLI's error line, and
where the real data are."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from cellclr.cli import main
from cellclr.config import load_config

# The real data sit beside the checkout (../shared), or where CELLCLR_BBBC021 points.
SHARED = Path(
    os.environ.get(
        "CELLCLR_BBBC021", Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc021"
    )
)

# A real Cell Painting field beside the checkout (../shared), or where CELLCLR_CELLPAINTING
# points, and CellProfiler's single-cell table of it.
FIELD = Path(
    os.environ.get(
        "CELLCLR_CELLPAINTING",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "cellpainting" / "BR00143976",
    )
)
TABLE = FIELD / "BR00143976_cells.parquet"
# what a test skipped for want of the real data says (conftest.py: a failure in CI)
MISSING_DATA = "only present in CI and dev"

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


# feature tables of other tools (profile, evaluate and predict --features)
FEATURES = ["a", "b", "c", "d"]
FAST = ["--set", "evaluate.bootstrap=0"]


def wells_table(seed: int = 0) -> pd.DataFrame:
    """Per-well profiles of two weeks: DMSO and three MoAs, one compound per MoA and week at two
    doses, three wells each; the MoAs point along different features."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    centres = {"M1": [3, 0, 0, 0], "M2": [0, 3, 0, 0], "M3": [0, 0, 3, 0], "DMSO": [0, 0, 0, 0]}
    for p, week in enumerate(("Week1", "Week2")):
        treatments = [("DMSO", 0.0, "DMSO")] + [
            (f"{m}-c{p}", dose, m) for dose in (1.0, 3.0) for m in ("M1", "M2", "M3")
        ]
        for w, (compound, dose, moa) in enumerate(treatments):
            for rep in range(3):
                rows.append((f"{week}_{p}", f"W{w}{rep}", compound, dose, moa, week))
                shift = [0.5 * p, -0.5 * p, 0.2, 1.0]  # a batch effect
                feats.append(np.add(centres[moa], shift) + rng.normal(0, 0.8, 4))
    meta = pd.DataFrame(
        rows,
        columns=[
            "Metadata_Plate",
            "Metadata_Well",
            "Metadata_Compound",
            "Metadata_Concentration",
            "Metadata_MoA",
            "Metadata_Batch",
        ],
    )
    return pd.concat([meta, pd.DataFrame(feats, columns=FEATURES)], axis=1)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def error_of(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run the CLI, which must fail with exit code 2 and one error line; return that line."""
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellclr: error: "), err
    return err[0]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def sets(*extra):
    return [arg for o in [*TINY_OVERRIDES, *extra] for arg in ("--set", o)]


def one_line_error(capsys) -> str:
    err = error_part(capsys.readouterr().err).strip()
    assert err.startswith("cellclr: error: ") and "\n" not in err, err
    return err


# How long a test waits for another process to reach a point before it fails: a safety net
# for a process that never gets there (a hang, a bug), never what decides an assertion.
SAFETY = 120.0


def wait_for(condition, what: str, timeout: float = SAFETY) -> None:
    """Wait until ``condition()`` holds (it must stay true once it does, as a file another
    process wrote); fail with ``what`` if it still does not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (a safety timeout)")
        time.sleep(0.02)


def copairs_replicate_ap(wells: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """copairs called directly, as JUMP's activity notebooks call it: the average precision of
    each non-control well retrieving its treatment's (compound@concentration) wells on other
    plates among the control (DMSO) wells; columns ``treatment``, ``average_precision``, ..."""
    from copairs.map import average_precision

    treatment = (
        wells["Metadata_Compound"] + "@" + wells["Metadata_Concentration"].map("{:g}".format)
    )
    meta = pd.DataFrame(
        {
            "treatment": treatment,
            "plate": wells["Metadata_Plate"],
            "control": wells["Metadata_Compound"] == "DMSO",
        }
    )
    ap = average_precision(
        meta,
        wells[features].to_numpy(np.float64),
        pos_sameby=["treatment"],
        pos_diffby=["plate"],
        neg_sameby=[],
        neg_diffby=["treatment", "control"],
        progress_bar=False,
    )
    return ap[~ap["control"]]
