"""The table conventions every stage shares (pycytominer's): ``Metadata_*`` columns describe,
every other column is a feature; the batch of a plate; MoA annotation tables; and the row
normalisation that cosine distances start from."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import COMPOUND, CONCENTRATION
from cellclr.errors import CellclrError


class MetadataError(CellclrError, ValueError):
    """An annotation table that cannot be used."""


# The columns that name a treatment unless ``screen.treatment`` says otherwise.


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
    if path.is_dir():
        raise MetadataError(f"{path}: is a folder, not a file (the {what}: a CSV or parquet file)")
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
    """``table[column]`` as concentrations: ``as_numbers``, and every value given finite and
    not negative (``inf`` would merge a compound's doses into one treatment); an error names
    the source, the column, the value and its row. Missing values stay NaN (``require_filled``
    refuses them where they are needed)."""
    values = as_numbers(table, column, source)
    bad = values.notna() & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise concentration_error(source, column, table[column].iloc[rows[0]], rows[0], len(rows))
    return values


def concentration_error(source: str, column: str, value, row: int, count: int) -> MetadataError:
    """The error of ``as_concentrations`` (also raised for tables read in blocks)."""
    value = value.item() if isinstance(value, np.generic) else value
    return MetadataError(
        f"{source}: {column} must be a finite concentration >= 0, got {value!r} in row "
        f"{int(row)} ({count} such rows)"
    )


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
    moa["concentration"] = as_concentrations(moa, "concentration", str(path))
    return _one_moa_per_treatment(moa, path)


def _one_moa_per_treatment(moa: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The MoA table without repeated rows (a treatment listed twice with the same MoA); a
    treatment listed with different MoAs is an error naming both rows. Concentrations that
    agree to 1e-6 (as ``moa_of`` matches them) are the same treatment."""
    key = pd.DataFrame({"c": moa["compound"], "x": moa["concentration"].round(6)})
    group = key.groupby(["c", "x"], sort=False).ngroup().to_numpy()
    first = pd.Series(np.arange(len(moa))).groupby(group).transform("min").to_numpy()
    missing, label = moa["moa"].isna().to_numpy(), moa["moa"].astype(str).to_numpy()
    differ = (missing != missing[first]) | (~missing & (label != label[first]))
    if differ.any():
        row = int(np.flatnonzero(differ)[0])
        other = int(first[row])
        name = [None if missing[i] else label[i] for i in (other, row)]
        raise MetadataError(
            f"{path}: compound {moa['compound'].iloc[row]!r} at concentration "
            f"{moa['concentration'].iloc[row]:g} has two MoAs, {name[0]!r} (row {other}) and "
            f"{name[1]!r} (row {row})"
        )
    return moa[first == np.arange(len(moa))].reset_index(drop=True)


def moa_of(moa: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """The MoA of each row's (Metadata_Compound, Metadata_Concentration), from a table of
    compound, concentration, moa (None where it has none); concentrations match to 1e-6."""
    key = pd.MultiIndex.from_arrays(
        [moa["compound"].astype(str), moa["concentration"].astype(float).round(6)]
    )
    lookup = pd.Series(moa["moa"].to_numpy(), index=key)
    wanted = pd.MultiIndex.from_arrays(
        [
            table[COMPOUND].astype(str),
            table[CONCENTRATION].astype(float).round(6),
        ]
    )
    return lookup.reindex(wanted).to_numpy()
