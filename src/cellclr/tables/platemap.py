"""Plate maps: the treatment of each well, joined to the fields by plate and well at crop time
(JUMP keeps treatments out of its LoadData tables, in plate maps).

A plate map is a CSV, TSV (``.txt``, ``.tsv``) or parquet table with a well column
(``Metadata_Well``, ``well_position``, ``Well``, ``well``), usually a plate column
(``Metadata_Plate``, ``plate``, ``Plate``, ``Assay_Plate_Barcode``; without one, the map is the
layout of every plate), and treatment columns, recognised by name:

- compound: ``Metadata_Compound``, ``compound``, ``Compound``, ``jcp2022``/``Metadata_JCP2022``
  (JUMP's compound ids), ``pert_iname``, ``broad_sample``: the first present;
- concentration: ``Metadata_Concentration``, ``concentration``, ``Concentration``,
  ``mmoles_per_liter`` (JUMP, mM), ``pert_dose``: a number;
- MoA: ``Metadata_MoA``, ``moa``, ``MoA``.

Every other column is kept as ``Metadata_<name>``. A well whose compound is empty but whose
``solvent`` is filled (JUMP's control wells) gets the solvent as compound and concentration 0.

JUMP's own layout is read as it is: given a plate-to-map table (``Assay_Plate_Barcode``,
``Plate_Map_Name``; ``barcode_platemap.csv``), the maps are read from
``platemap/<Plate_Map_Name>.txt`` beside it. Wells match written either way (``A1``, ``A01``).
Every field must find its well in the map; the map's columns replace the table's of the same
name (said on the terminal). A well listed twice is one well when the rows agree, an error when
they disagree; a concentration must be a finite number >= 0.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from cellclr.columns import COMPOUND, CONCENTRATION, MOA, PLATE, TREATMENT, WELL
from cellclr.metadata import MISSING, MetadataError, as_concentrations, read_table
from cellclr.tables.image_table import ImageTableError

log = logging.getLogger(__name__)

PLATE_NAMES = (PLATE, "plate", "Plate", "Assay_Plate_Barcode", "Metadata_Assay_Plate_Barcode")
WELL_NAMES = (WELL, "well_position", "Metadata_well_position", "Well", "well")
COMPOUND_NAMES = (
    COMPOUND,
    "compound",
    "Compound",
    "Metadata_JCP2022",
    "jcp2022",
    "Metadata_jcp2022",
    "pert_iname",
    "Metadata_pert_iname",
    "broad_sample",
    "Metadata_broad_sample",
)
CONCENTRATION_NAMES = (
    CONCENTRATION,
    "concentration",
    "Concentration",
    "mmoles_per_liter",
    "Metadata_mmoles_per_liter",
    "pert_dose",
)
MOA_NAMES = (MOA, "moa", "MoA", "Metadata_moa")
BARCODES = ("Assay_Plate_Barcode", "Plate_Map_Name")
_WELL_KEY = "_well_key"


class PlateMapError(ImageTableError):
    """A plate map that cannot be used."""


def read_platemap(path: str | Path) -> pd.DataFrame:
    """The plate map at ``path`` in our layout: ``Metadata_Plate`` (when it has plates), the
    well key, ``Metadata_Compound``/``Metadata_Concentration``/``Metadata_MoA`` where
    recognised and every other column as ``Metadata_<name>``."""
    path = Path(path)
    raw = _read(path)
    if set(BARCODES) <= set(raw.columns) and _first(raw, WELL_NAMES) is None:
        raw = _jump_maps(raw, path)
    well = _first(raw, WELL_NAMES)
    if well is None:
        raise PlateMapError(f"{path}: no well column (one of {', '.join(WELL_NAMES)})")
    plate = _first(raw, PLATE_NAMES)
    out = pd.DataFrame(index=raw.index)
    if plate is not None:
        out[PLATE] = _text(raw[plate])
    out[_WELL_KEY] = _text(raw[well]).map(well_key)
    for ours, names in (
        (COMPOUND, COMPOUND_NAMES),
        (CONCENTRATION, CONCENTRATION_NAMES),
        (MOA, MOA_NAMES),
    ):
        column = _first(raw, names)
        if column is not None:
            out[ours] = raw[column]
    for column in raw.columns:
        name = column if column.startswith("Metadata_") else f"Metadata_{column}"
        if column not in (plate, well) and name not in out:
            out[name] = raw[column]
    out = _solvent_controls(out)
    if CONCENTRATION in out:
        try:
            out[CONCENTRATION] = as_concentrations(out, CONCENTRATION, f"plate map {path}")
        except MetadataError as e:
            raise PlateMapError(str(e)) from None
    return _one_row_per_well(out, path)


def _one_row_per_well(layout: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The map with repeated identical rows of a well kept once; a well whose rows disagree is
    an error naming the well and the column."""
    keys = [c for c in (PLATE, _WELL_KEY) if c in layout]
    layout = layout.drop_duplicates()
    repeated = layout.duplicated(keys, keep=False)
    if repeated.any():
        rows = layout[repeated]
        first = rows.iloc[0]
        same = rows[(rows[keys] == first[keys]).all(axis=1)]
        differ = [c for c in layout.columns if c not in keys and same[c].nunique(dropna=False) > 1]
        where = " ".join(str(first[k]) for k in keys)
        raise PlateMapError(
            f"{path}: well {where} is listed {len(same)} times with different "
            f"{', '.join(differ)} ({int(repeated.sum())} rows of repeated wells disagree): "
            "give each well one treatment"
        )
    return layout.reset_index(drop=True)


def join_platemap(
    table: pd.DataFrame, path: str | Path, what: str = "fields of the image table"
) -> pd.DataFrame:
    """``table`` (fields, cells or wells: ``what`` names them in errors) with the treatments of
    its wells from the plate map at ``path``. Every well must be in the map, and have the
    map's compound and concentration where the map has these columns."""
    layout = read_platemap(path)
    keys = [c for c in (PLATE, _WELL_KEY) if c in layout]
    fields = table.assign(**{_WELL_KEY: table[WELL].astype(str).map(well_key)})
    fields[PLATE] = fields[PLATE].astype(str)
    found = pd.MultiIndex.from_frame(fields[keys]).isin(pd.MultiIndex.from_frame(layout[keys]))
    if not found.all():
        first = fields.loc[~found].iloc[0]
        plates = "" if PLATE not in layout else f"plate {first['Metadata_Plate']} "
        raise PlateMapError(
            f"{path}: no row for {plates}well {first['Metadata_Well']} "
            f"({int((~found).sum())} {what} lack a treatment)"
        )
    replaced = [c for c in layout.columns if c in table.columns and c not in keys]
    if replaced:
        log.warning(f"plate map {path}: its {', '.join(replaced)} replace the image table's")
    joined = fields.drop(columns=replaced).merge(layout, on=keys, how="left", validate="m:1")
    for column in [c for c in TREATMENT if c in layout]:
        empty = joined[column].isna().to_numpy()
        if empty.any():
            first = joined.loc[empty].iloc[0]
            raise PlateMapError(
                f"{path}: {column} is empty for plate {first['Metadata_Plate']} well "
                f"{first['Metadata_Well']} ({int(empty.sum())} {what} in wells without one): "
                "give every imaged well its treatment (a control's solvent, e.g. DMSO at 0)"
            )
    return joined.drop(columns=[_WELL_KEY])


def well_key(well: str) -> str:
    """A well name to match by: ``a1``, ``A01`` and ``A001`` are ``A01``."""
    match = re.fullmatch(r"\s*([A-Za-z]+)0*(\d+)\s*", str(well))
    return f"{match[1].upper()}{int(match[2]):02d}" if match else str(well).strip().upper()


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in (".txt", ".tsv"):
        return read_table(path, "plate map")
    if not path.is_file():
        raise PlateMapError(f"plate map not found: {path}")
    try:
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=MISSING)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' parser errors are ValueErrors
        raise PlateMapError(f"{path}: cannot read the plate map: {e}") from None


def _jump_maps(barcodes: pd.DataFrame, path: Path) -> pd.DataFrame:
    """JUMP's ``barcode_platemap.csv``: each plate's map from ``platemap/<name>.txt``."""
    parts = []
    for name, rows in barcodes.groupby("Plate_Map_Name", sort=True):
        candidates = [path.parent / "platemap" / f"{name}{s}" for s in (".txt", ".tsv", ".csv")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise PlateMapError(f"{path}: the plate map {name} is not at {candidates[0]}")
        layout = _read(found).drop(columns=["Assay_Plate_Barcode"], errors="ignore")
        for barcode in rows["Assay_Plate_Barcode"]:
            parts.append(layout.assign(Assay_Plate_Barcode=barcode))
    return pd.concat(parts, ignore_index=True)


def _first(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in table.columns), None)


def _text(values: pd.Series) -> pd.Series:
    """Keys as text; whole numbers read as floats (a column with gaps) lose their ``.0``."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str)


def _solvent_controls(layout: pd.DataFrame) -> pd.DataFrame:
    """Wells with a solvent but no compound (JUMP's controls): the solvent, at 0."""
    if COMPOUND not in layout or "Metadata_solvent" not in layout:
        return layout
    control = layout[COMPOUND].isna() & layout["Metadata_solvent"].notna()
    layout.loc[control, COMPOUND] = layout.loc[control, "Metadata_solvent"]
    if CONCENTRATION in layout:
        empty = control & layout[CONCENTRATION].isna()
        layout.loc[empty, CONCENTRATION] = 0.0
    return layout
