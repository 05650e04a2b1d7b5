"""The table conventions every stage shares (pycytominer's): ``Metadata_*`` columns describe,
every other column is a feature; the batch of a plate; MoA annotation tables; and the row
normalisation that cosine distances start from."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.errors import CellclrError


class MetadataError(CellclrError, ValueError):
    """An annotation table that cannot be used."""


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_")]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("Metadata_")]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): their dot products are cosines."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def batch_from_plate(plate: str) -> str:
    """The batch of a plate when none is given: the part before the first ``_``
    (``Week4_27521`` -> ``Week4``, as BBBC021 names plates), else the plate itself."""
    return plate.split("_", 1)[0]


def read_moa(path: Path) -> pd.DataFrame:
    """The MoA table (compound, concentration, moa), whatever its line endings."""
    text = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    moa = pd.read_csv(io.StringIO(text))
    missing = {"compound", "concentration", "moa"} - set(moa.columns)
    if missing:
        raise MetadataError(f"{path}: missing columns {sorted(missing)}")
    return moa


def moa_of(moa: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """The MoA of each row's (Metadata_Compound, Metadata_Concentration), from a table of
    compound, concentration, moa (None where it has none); concentrations match to 1e-6."""
    key = pd.MultiIndex.from_arrays(
        [moa["compound"].astype(str), moa["concentration"].astype(float).round(6)]
    )
    lookup = pd.Series(moa["moa"].to_numpy(), index=key)
    wanted = pd.MultiIndex.from_arrays(
        [
            table["Metadata_Compound"].astype(str),
            table["Metadata_Concentration"].astype(float).round(6),
        ]
    )
    return lookup.reindex(wanted).to_numpy()
