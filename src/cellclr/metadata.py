"""Tables in pycytominer's convention: ``Metadata_*`` columns describe, every other column is a
feature; and the row normalisation that cosine distances start from."""

from __future__ import annotations

import numpy as np
import pandas as pd


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_")]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("Metadata_")]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): their dot products are cosines."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
