"""The image table: one row per field of view (site), one path column per channel.

The layout follows DeepProfiler's index: ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Site``, a column named after each channel holding that channel's image file (absolute,
or relative to the table's folder), and treatment columns (``Metadata_Compound``,
``Metadata_Concentration``, ``Metadata_MoA``, ``Metadata_Batch``, ...) carried to every cell.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellclr.columns import CONCENTRATION, PLATE, SITE, SITE_KEYS, WELL
from cellclr.errors import CellclrError
from cellclr.metadata import as_concentrations, as_numbers, read_table, require_filled


class ImageTableError(CellclrError, ValueError):
    """An image table that cannot be used."""


def check_image_table(table: pd.DataFrame, channels: list[str], source: str) -> pd.DataFrame:
    """Check the columns and keys of an image table; return it with typed keys."""
    if not channels:
        raise ImageTableError(f"{source}: no channels given")
    missing = [c for c in SITE_KEYS if c not in table]
    missing += [f"{c} (a channel's image paths)" for c in channels if c not in table]
    if missing:
        raise ImageTableError(f"{source}: missing columns {', '.join(missing)}")
    if table.empty:
        raise ImageTableError(f"{source}: holds no sites")
    require_filled(table, [*SITE_KEYS, *channels], source)
    table = table.copy()
    table[PLATE] = table[PLATE].astype(str)
    table[WELL] = table[WELL].astype(str)
    table[SITE] = as_numbers(table, SITE, source, integer=True)
    dup = table.duplicated(SITE_KEYS, keep=False)
    if dup.any():
        first = table.loc[dup, SITE_KEYS].iloc[0].tolist()
        raise ImageTableError(f"{source}: {int(dup.sum())} rows repeat a site, e.g. {first}")
    if CONCENTRATION in table:
        table[CONCENTRATION] = as_concentrations(table, CONCENTRATION, source)
    return table.reset_index(drop=True)


def read_image_table(
    path: str | Path, channels: list[str], root: str | Path | None = None
) -> pd.DataFrame:
    """Read a CSV or parquet image table; relative image paths become absolute, from ``root``
    (default: the table's folder)."""
    path = Path(path)
    table = check_image_table(read_table(path, "image table"), channels, str(path))
    base = Path(root) if root is not None else path.parent
    for c in channels:
        table[c] = [str(p if Path(p).is_absolute() else base / p) for p in table[c].astype(str)]
    return table


def select_sites(
    table: pd.DataFrame, plates: list[str] | None = None, wells: list[str] | None = None
) -> pd.DataFrame:
    """The rows of the given plates and wells (all when None); unknown names are errors."""
    for column, wanted in ((PLATE, plates), (WELL, wells)):
        if wanted:
            unknown = sorted(set(wanted) - set(table[column]))
            if unknown:
                known = ", ".join(sorted(set(table[column]))[:5])
                raise ImageTableError(f"unknown {column[9:].lower()}s {unknown} (e.g. {known})")
            table = table[table[column].isin(wanted)]
    return table.reset_index(drop=True)
