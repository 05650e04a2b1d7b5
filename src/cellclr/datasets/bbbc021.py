"""BBBC021 (Caie et al. 2010; MoAs from Ljosa et al. 2013): its layout, and its image table.

The layout, as the Broad publishes it (what ``download`` fetches and ``simulate`` imitates):
``metadata/BBBC021_v1_{image,compound,moa}.csv`` (the image CSV quoted, the moa file with
old-Mac CR-only line endings) and one zip per plate, ``BBBC021_v1_images_<plate>.zip``, holding
``<plate>/`` to extract under its week (``Week4/Week4_27521/``); file names carry the well, the
site and the channel's wavelength tag (``..._B02_s3_w1<uuid>.tif``: w1 DAPI, w2 tubulin, w4
actin).

``bbbc021_image_table`` reads the CSVs exactly as published, takes the site from the file name
and the batch from the plate's week (``Week4_27521`` -> ``Week4``), and joins the MoA of each
(compound, concentration).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellclr.columns import BATCH, COMPOUND, CONCENTRATION, MOA, PLATE, SITE, WELL
from cellclr.metadata import as_concentrations, batch_from_plate, moa_of, read_moa, read_table
from cellclr.tables.image_table import ImageTableError, check_image_table

CHANNELS = {"DNA": "DAPI", "Tubulin": "Tubulin", "Actin": "Actin"}  # ours: the CSV's names
WAVELENGTHS = {"DAPI": 1, "Tubulin": 2, "Actin": 4}  # the file names' w1, w2, w4
IMAGE_CSV, MOA_CSV = "BBBC021_v1_image.csv", "BBBC021_v1_moa.csv"
METADATA_FILES = (IMAGE_CSV, "BBBC021_v1_compound.csv", MOA_CSV)
# the image CSV's columns
IMAGE_PLATE, IMAGE_WELL = "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI"
IMAGE_COMPOUND, IMAGE_CONCENTRATION = "Image_Metadata_Compound", "Image_Metadata_Concentration"


def file_column(channel: str) -> str:
    """The image CSV's column of a channel's file names (``DAPI``: ``Image_FileName_DAPI``)."""
    return f"Image_FileName_{channel}"


def path_column(channel: str) -> str:
    """The image CSV's column of a channel's folders, relative to the images' root."""
    return f"Image_PathName_{channel}"


def plate_zip(plate: str) -> str:
    """The name of a plate's zip file at the Broad."""
    return f"BBBC021_v1_images_{plate}.zip"


def _find(root: Path, name: str) -> Path:
    for candidate in (root / "metadata" / name, root / name):
        if candidate.is_file():
            return candidate
    raise ImageTableError(f"{name} not found in {root / 'metadata'} or {root}")


def image_root(root: Path) -> Path:
    """Where the ``WeekN/WeekN_NNNNN`` folders are: ``root/images`` if present, else ``root``."""
    return root / "images" if (root / "images").is_dir() else root


def bbbc021_image_table(root: str | Path) -> pd.DataFrame:
    """The image table of a BBBC021 folder (``metadata/`` plus ``[images/]WeekN/<plate>/``)."""
    root = Path(root).resolve()
    image_csv = _find(root, IMAGE_CSV)
    raw = read_table(image_csv, "BBBC021 image table")
    images = image_root(root)
    site = raw[file_column("DAPI")].str.extract(r"_s(\d+)_", expand=False)
    if site.isna().any():
        bad = raw.loc[site.isna(), file_column("DAPI")].iloc[0]
        raise ImageTableError(f"{image_csv}: no site (_sN_) in file name {bad!r}")
    table = pd.DataFrame(
        {
            PLATE: raw[IMAGE_PLATE].astype(str),
            WELL: raw[IMAGE_WELL].astype(str),
            SITE: site.astype(int),
            "Metadata_Replicate": raw["Replicate"],
            COMPOUND: raw[IMAGE_COMPOUND].astype(str),
            CONCENTRATION: as_concentrations(raw, IMAGE_CONCENTRATION, str(image_csv)),
        }
    )
    table[BATCH] = table[PLATE].map(batch_from_plate)
    table[MOA] = moa_of(read_moa(_find(root, MOA_CSV)), table)
    for ours, theirs in CHANNELS.items():
        table[ours] = [
            str(images / p / f)
            for p, f in zip(raw[path_column(theirs)], raw[file_column(theirs)], strict=True)
        ]
    return check_image_table(table, list(CHANNELS), str(image_csv))
