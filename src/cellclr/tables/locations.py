"""Nucleus centres that CellProfiler found, from one object table for the whole screen.

``crop.locations`` (``--locations``) names either a folder of per-site CSVs (DeepProfiler's
layout, ``plates.locations_file``) or one table, CSV or parquet, of CellProfiler objects:
a per-object export (``Location_Center_X/Y``, ``ImageNumber``, ``ObjectNumber``) or a CytoTable
single-cell table (``Nuclei_Location_Center_X/Y``, ``Metadata_ImageNumber``,
``Image_Metadata_Plate/Well/Site``). Each row is matched to its field by plate, well and site
when the table has them, else by ``ImageNumber`` (which the image table must then carry, as a
LoadData or CytoTable table does). A field without rows has no cells; a table that matches
none of the fields is an error. The nucleus object number, when present, is kept as
``Metadata_ObjectNumber``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import PLATE, SITE, SITE_KEYS, WELL
from cellclr.pixels.nuclei import LOCATION_COLUMNS, DetectionError
from cellclr.tables.cptables import (
    IMAGE_NUMBER,
    IMAGE_NUMBER_COLUMNS,
    metadata_frame,
    metadata_name,
    read_columns,
)

log = logging.getLogger(__name__)

X_NAMES = ("Nuclei_Location_Center_X", "Location_Center_X")
Y_NAMES = ("Nuclei_Location_Center_Y", "Location_Center_Y")
OBJECT_NAMES = (
    "Metadata_Nuclei_Number_Object_Number",
    "Nuclei_Number_Object_Number",
    "ObjectNumber",
)
OBJECT = "Metadata_ObjectNumber"

SiteKey = tuple[str, str, int]
FIELD = ["_plate", "_well", "_site"]


def read_locations_table(path: str | Path, sites: pd.DataFrame) -> dict[SiteKey, pd.DataFrame]:
    """Per field of ``sites`` (plate, well, site): its nucleus centres (the location columns,
    and ``Metadata_ObjectNumber`` when known), from the object table at ``path``."""
    path = Path(path)
    raw = read_columns(path, "locations table", _wanted)
    x, y = _first(raw, X_NAMES), _first(raw, Y_NAMES)
    if x is None or y is None:
        raise DetectionError(
            f"locations table {path} lacks nucleus centres: columns {X_NAMES[0]} and "
            f"{Y_NAMES[0]} (or {X_NAMES[1]}, {Y_NAMES[1]})"
        )
    centres = pd.DataFrame({LOCATION_COLUMNS[0]: raw[x], LOCATION_COLUMNS[1]: raw[y]})
    centres = _numbers(centres, path)
    obj = _first(raw, OBJECT_NAMES)
    if obj is not None:
        centres[OBJECT] = raw[obj].to_numpy()
    keys = _field_keys(metadata_frame(raw), sites, path)
    centres, keys = _once_each(centres, keys, path)
    groups = centres.groupby(pd.MultiIndex.from_arrays(keys), sort=False)
    found = {key: rows.reset_index(drop=True) for key, rows in groups}
    empty = centres.iloc[:0]
    table = {}
    for row in sites[SITE_KEYS].itertuples(index=False):
        key = (str(row[0]), str(row[1]), int(row[2]))
        table[key] = found.get(key, empty)
    if not any(len(v) for v in table.values()):
        raise DetectionError(
            f"locations table {path} matches none of the fields of the image table "
            "(by plate, well and site, or ImageNumber)"
        )
    return table


def _once_each(
    centres: pd.DataFrame, keys: list[pd.Series], path: Path
) -> tuple[pd.DataFrame, list[pd.Series]]:
    """Each nucleus once: rows repeating a field, centre (and object number) are one nucleus
    (said, with their count); an object number of a field at two centres is an error."""
    fields = pd.DataFrame({n: k.reset_index(drop=True) for n, k in zip(FIELD, keys, strict=True)})
    rows = pd.concat([fields, centres.reset_index(drop=True)], axis=1)
    repeated = rows.duplicated().to_numpy()
    if repeated.any():
        log.warning(
            f"locations table {path}: {int(repeated.sum())} rows repeat a nucleus (the same "
            "field and centre) of another row; each nucleus is cropped once"
        )
        rows = rows[~repeated]
    if OBJECT in rows:
        clash = rows.duplicated([*FIELD, OBJECT], keep=False).to_numpy()
        if clash.any():
            first = rows[clash].iloc[0]
            raise DetectionError(
                f"locations table {path}: object {first[OBJECT]} of field "
                f"{' '.join(str(first[k]) for k in FIELD)} (plate, well, site) has two centres"
                f" ({int(clash.sum())} rows share a field and object number)"
            )
    kept = rows[centres.columns].reset_index(drop=True)
    return kept, [rows[k].reset_index(drop=True) for k in FIELD]


def locations_digest(nuclei: dict[SiteKey, pd.DataFrame]) -> str:
    """A hash of the centres of every field, in the fields' order (for the fingerprint)."""
    digest = hashlib.sha256()
    for key, rows in nuclei.items():
        digest.update(repr((key, len(rows))).encode())
        digest.update(rows[list(LOCATION_COLUMNS)].to_numpy(np.float64).tobytes())
    return digest.hexdigest()[:16]


def _wanted(column: str) -> bool:
    return column in (*X_NAMES, *Y_NAMES, *OBJECT_NAMES) or metadata_name(column) is not None


def _first(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in table.columns), None)


def _numbers(centres: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The centres as floats; a missing, non-numeric or infinite one is an error."""
    values = centres.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    for column in values.columns:
        bad = ~np.isfinite(values[column].to_numpy())
        if bad.any():
            raise DetectionError(
                f"locations table {path}: column {column} has {int(bad.sum())} missing or "
                f"non-numeric value(s), first in data row {int(bad.argmax()) + 1}"
            )
    return values


def _field_keys(meta: pd.DataFrame, sites: pd.DataFrame, path: Path) -> list[pd.Series]:
    """The (plate, well, site) of each row: its own, or its ImageNumber's field in ``sites``."""
    if all(k in meta for k in SITE_KEYS):
        return [
            meta[PLATE].astype(str),
            meta[WELL].astype(str),
            pd.to_numeric(meta[SITE], errors="coerce").astype("Int64"),
        ]
    if IMAGE_NUMBER not in meta:
        raise DetectionError(
            f"locations table {path} names no fields: it needs Metadata_Plate, Metadata_Well "
            f"and Metadata_Site (or Image_Metadata_*), or {' / '.join(IMAGE_NUMBER_COLUMNS)}"
        )
    if IMAGE_NUMBER not in sites:
        raise DetectionError(
            f"locations table {path} names its fields by ImageNumber only, and the image table "
            "has no ImageNumber (a LoadData table gives one as Metadata_ImageNumber): add "
            "Metadata_Plate, Metadata_Well and Metadata_Site to the locations table"
        )
    if sites[IMAGE_NUMBER].duplicated().any():
        raise DetectionError(
            f"locations table {path} names its fields by ImageNumber only, and ImageNumbers "
            "repeat in the image table (one CellProfiler run per plate?): add Metadata_Plate, "
            "Metadata_Well and Metadata_Site to the locations table"
        )
    lookup = sites.set_index(IMAGE_NUMBER)[SITE_KEYS]
    fields = lookup.reindex(meta[IMAGE_NUMBER].to_numpy())
    return [
        fields[PLATE].astype(str).reset_index(drop=True),
        fields[WELL].astype(str).reset_index(drop=True),
        fields[SITE].astype("Int64").reset_index(drop=True),
    ]
