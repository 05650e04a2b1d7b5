"""Column conventions of CellProfiler's tables: LoadData CSVs, ExportToSpreadsheet's per-image
and per-object CSVs, and CytoTable's joined single-cell tables.

Field metadata is ``Metadata_<Name>`` (LoadData) or ``Image_Metadata_<Name>`` (exported or
joined tables); both become our ``Metadata_<Name>``, the unprefixed column winning when a table
has both. CellProfiler numbers the fields of one run by ``ImageNumber`` (CytoTable:
``Metadata_ImageNumber``), which becomes ``Metadata_ImageNumber``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from cellclr.metadata import MetadataError, read_table

IMAGE_NUMBER = "Metadata_ImageNumber"
IMAGE_NUMBER_COLUMNS = ("Metadata_ImageNumber", "ImageNumber", "Image_ImageNumber")


def metadata_name(column: str) -> str | None:
    """Our name for a CellProfiler metadata column, or None for any other column."""
    if column in IMAGE_NUMBER_COLUMNS:
        return IMAGE_NUMBER
    if column.startswith("Image_Metadata_"):
        return column.removeprefix("Image_")
    if column.startswith("Metadata_"):
        return column
    return None


def metadata_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table's metadata columns under our names (``Image_Metadata_X`` -> ``Metadata_X``;
    ``Metadata_X`` itself wins over ``Image_Metadata_X``)."""
    chosen: dict[str, str] = {}
    for column in table.columns:
        name = metadata_name(str(column))
        if name is None:
            continue
        if name not in chosen or column == name:  # the unprefixed column wins
            chosen[name] = column
    return pd.DataFrame({name: table[column] for name, column in chosen.items()})


def read_columns(path: str | Path, what: str, keep: Callable[[str], bool]) -> pd.DataFrame:
    """The columns of a CSV or parquet table that ``keep`` accepts. A parquet file is read
    column by column (a CytoTable single-cell table has thousands of feature columns); any
    problem is one error naming the file (``read_table``'s)."""
    path = Path(path)
    if path.suffix == ".parquet" and path.is_file():
        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError):  # corrupt: read_table names the problem
            names = None
        if names is not None:
            try:
                return pd.read_parquet(path, columns=[n for n in names if keep(n)])
            except (OSError, ValueError) as e:  # pyarrow's errors are these
                raise MetadataError(f"{path}: cannot read the {what}: {e}") from None
    table = read_table(path, what)
    return table[[c for c in table.columns if keep(str(c))]]
