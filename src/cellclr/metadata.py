"""The table conventions every stage shares (pycytominer's): ``Metadata_*`` columns describe,
every other column is a feature; the batch of a plate; MoA annotation tables; and the row
normalisation that cosine distances start from."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.errors import CellclrError


class MetadataError(CellclrError, ValueError):
    """An annotation table that cannot be used."""


# The columns that name a treatment unless ``profile.treatment`` says otherwise.
TREATMENT = ["Metadata_Compound", "Metadata_Concentration"]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a table in pycytominer's convention: every column whose name does
    not start with ``Metadata_`` (cellclr's embeddings: ``emb_0000``, ...). Hand them to
    pycytominer (``features=feature_columns(df)``) or copairs."""
    return [c for c in df.columns if not c.startswith("Metadata_")]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """The columns that describe rather than measure: those named ``Metadata_*``."""
    return [c for c in df.columns if c.startswith("Metadata_")]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): their dot products are cosines.
    Each row is first divided by its largest magnitude, so that squaring cannot overflow."""
    x = np.asarray(x, dtype=np.float64)
    peak = np.abs(x).max(axis=1, keepdims=True) if x.size else np.ones((len(x), 1))
    x = x / np.where(peak > 0, peak, 1.0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


# Only these cells are missing values: a compound called "NA" or "None" is a name.
MISSING = ["", "nan", "NaN"]


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """A CSV or parquet table (by suffix); any problem is one error naming the file: missing,
    empty, not UTF-8, ragged rows, not a table at all, a corrupt parquet file."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise MetadataError(f"{path}: the {what} is an empty file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        with warnings.catch_warnings():  # rows longer than the header: an error, not a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path, keep_default_na=False, na_values=MISSING, encoding="utf-8", index_col=False
            )
    except UnicodeDecodeError as e:
        raise MetadataError(
            f"{path}: the {what} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV"
        ) from None
    except pd.errors.EmptyDataError:
        raise MetadataError(f"{path}: the {what} holds no columns") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as e:
        raise MetadataError(
            f"{path}: the {what} is not a well-formed CSV: {str(e).strip()}"
        ) from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise MetadataError(f"{path}: cannot read the {what}: {e}") from None


def as_numbers(
    table: pd.DataFrame, column: str, source: str, *, integer: bool = False
) -> pd.Series:
    """``table[column]`` as floats (or integers, which may not be missing); text such as
    ``0.3 uM`` or ``s1`` is an error naming the source, the column, the value and its row."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if integer:
        bad |= values.isna() | (values != values.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer" if integer else "a number"
        raise MetadataError(
            f"{source}: {column} must be {kind}, got {table[column].iloc[row]!r} in row {row} "
            f"({int(bad.sum())} such rows)"
        )
    return values.astype(int) if integer else values.astype(float)


def as_concentrations(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    """``table[column]`` as concentrations: numbers (``as_numbers``), finite and not negative;
    anything else is an error naming the source, the column, the value and its row."""
    values = as_numbers(table, column, source)
    bad = values.notna() & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = table[column].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        raise MetadataError(
            f"{source}: {column} must be a finite concentration >= 0, got {value!r} in row "
            f"{row} ({int(bad.sum())} such rows)"
        )
    return values


def require_filled(table: pd.DataFrame, columns: list[str], source: str) -> None:
    """Refuse a table whose given metadata columns are missing or empty in some rows; the error
    names the source, the column and the first such rows."""
    missing = [c for c in columns if c not in table]
    if missing:
        raise MetadataError(f"{source}: missing columns {missing}")
    for column in columns:
        empty = np.flatnonzero(table[column].isna().to_numpy())
        if len(empty):
            raise MetadataError(
                f"{source}: column {column} is empty in {len(empty)} rows "
                f"(first: {empty[:5].tolist()})"
            )


def read_output_table(folder: str | Path, name: str, stage: str) -> pd.DataFrame:
    """The table ``name`` of a finished ``stage`` output folder; a missing folder or file, or
    an unreadable one, is an error saying that the folder is not such an output."""
    folder = Path(folder)
    not_output = f"{folder} is not a finished `{stage}` output"
    if not folder.is_dir():
        raise MetadataError(f"{not_output}: no such folder")
    path = folder / name
    if not path.is_file():
        raise MetadataError(f"{not_output}: missing {name}")
    try:
        return read_table(path, name)
    except MetadataError as e:
        raise MetadataError(f"{not_output}: {str(e).removeprefix(f'{path}: ')}") from None


def batch_from_plate(plate: str) -> str:
    """The batch of a plate when none is given: the part before the first ``_``
    (``Week4_27521`` -> ``Week4``, as BBBC021 names plates), else the plate itself."""
    return plate.split("_", 1)[0]


def read_moa(path: Path) -> pd.DataFrame:
    """The MoA table (compound, concentration, moa), whatever its line endings."""
    moa = read_table(path, "MoA table")
    missing = {"compound", "concentration", "moa"} - set(moa.columns)
    if missing:
        raise MetadataError(f"{path}: missing columns {sorted(missing)}")
    require_filled(moa, ["compound", "concentration"], str(path))
    moa["compound"] = moa["compound"].astype(str)
    moa["concentration"] = as_numbers(moa, "concentration", str(path))
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
