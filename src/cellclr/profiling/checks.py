"""The conventions profile tables keep, checked: the keys and treatment columns filled, names
as text and concentrations as numbers, treatment metadata constant within wells and MoAs
within treatments, numeric features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, CONCENTRATION, MOA, TREATMENT, WELL_KEYS
from cellclr.errors import CellclrError
from cellclr.metadata import as_concentrations, feature_columns, require_filled

WELL_CONSTANT = [COMPOUND, CONCENTRATION, BATCH, MOA]


class ProfileError(CellclrError, ValueError):
    """Features or metadata that cannot be aggregated as asked."""


def check_features(df: pd.DataFrame, source: str, *, allow_nan: bool = False) -> list[str]:
    """The feature columns: there must be some, all numeric, and (unless ``allow_nan``)
    finite."""
    features = feature_columns(df)
    if not features:
        raise ProfileError(f"{source}: no feature columns (every column starts with Metadata_)")
    values = df[features]
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise ProfileError(f"{source}: non-numeric feature columns {non_numeric[:5]}")
    if not allow_nan:
        nan_cols = [c for c in features if not np.isfinite(values[c].to_numpy(float)).all()]
        if nan_cols:
            raise ProfileError(
                f"{source}: NaN or infinite values in feature columns {nan_cols[:5]} "
                "(drop them first: clean_features)"
            )
    return features


def check_metadata(
    table: pd.DataFrame,
    source: str,
    level: str = "wells",
    treatment: list[str] = TREATMENT,
) -> pd.DataFrame:
    """The table (of ``level`` "wells" or "treatments", or cells, which are keyed as wells)
    with its keys, its ``treatment`` columns (where present) and ``Metadata_Batch`` (when
    present) filled, names as text and concentrations as numbers (finite, >= 0), its
    treatment metadata constant within wells and its MoA within treatments."""
    if table.empty:
        raise ProfileError(f"{source}: holds no rows")
    keys = required_columns(table, level, treatment)
    require_filled(table, keys, source)
    table = typed_keys(table, keys, source)
    if level == "wells":
        constant = [c for c in dict.fromkeys([*WELL_CONSTANT, *treatment]) if c in table]
        constant_within(table, WELL_KEYS, constant, "wells", source)
    if has_treatments(table, treatment):
        moa = [c for c in [MOA] if c in table]
        constant_within(table, treatment, moa, "treatments", source)
    return table


def has_treatments(table: pd.DataFrame, treatment: list[str] = TREATMENT) -> bool:
    """Whether every column that names a treatment is in ``table``."""
    return all(c in table for c in treatment)


def no_treatments(table: pd.DataFrame, treatment: list[str], source: str) -> str:
    """Why ``table`` has no treatment profiles (``has_treatments`` is False)."""
    missing = [c for c in treatment if c not in table]
    return (
        f"no {', '.join(missing)} in {source} (the columns that name a treatment, "
        "screen.treatment): join a plate map (cellclr profile --platemap) to profile treatments"
    )


def required_columns(table: pd.DataFrame, level: str, treatment: list[str]) -> list[str]:
    """The metadata columns that must be filled: the well keys (of wells and cells), the
    treatment columns present (all of them for treatments) and ``Metadata_Batch`` when
    present."""
    own = WELL_KEYS if level == "wells" else list(treatment)
    present = [c for c in treatment if c in table]
    return list(dict.fromkeys([*own, *present, *(c for c in [BATCH] if c in table)]))


def typed_keys(table: pd.DataFrame, keys: list[str], source: str) -> pd.DataFrame:
    """The table with its ``keys`` as text and its concentrations as numbers (text, negative
    or infinite values are errors)."""
    table = table.copy(deep=False)  # the features are shared, not copied (copy-on-write)
    for column in keys:
        if column != CONCENTRATION:
            table[column] = table[column].astype(str)
    if CONCENTRATION in table:
        table[CONCENTRATION] = as_concentrations(table, CONCENTRATION, source)
    return table


def constant_within(
    df: pd.DataFrame, keys: list[str], columns: list[str], what: str, source: str
) -> None:
    for column in columns:
        counts = df.groupby(keys, sort=False, dropna=False)[column].nunique(dropna=False)
        refuse_varying(counts > 1, column, what, source)


def refuse_varying(varies: pd.Series, column: str, what: str, source: str) -> None:
    """An error if ``column`` varies within some groups: ``varies`` flags each group, indexed
    by its keys in order of first appearance."""
    if varies.any():
        example = varies.index[varies.to_numpy()][0]
        raise ProfileError(
            f"{source}: {column} differs within {int(varies.sum())} {what}, e.g. {example}"
        )
