"""BBBC021 (Caie et al. 2010; MoAs from Ljosa et al. 2013) as an image table.

Reads the Broad's ``BBBC021_v1_image.csv`` and ``BBBC021_v1_moa.csv`` exactly as published
(quoted fields; the moa file has old-Mac CR-only line endings), takes the site from the file name
(``..._B02_s3_w1...tif`` -> 3) and the batch from the plate's week (``Week4_27521`` -> ``Week4``),
and joins the MoA of each (compound, concentration).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellclr.images.table import ImageTableError, check_image_table
from cellclr.metadata import as_concentrations, batch_from_plate, moa_of, read_moa, read_table

CHANNELS = {"DNA": "DAPI", "Tubulin": "Tubulin", "Actin": "Actin"}  # ours: the CSV's names
IMAGE_CSV, MOA_CSV = "BBBC021_v1_image.csv", "BBBC021_v1_moa.csv"


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
    site = raw["Image_FileName_DAPI"].str.extract(r"_s(\d+)_", expand=False)
    if site.isna().any():
        bad = raw.loc[site.isna(), "Image_FileName_DAPI"].iloc[0]
        raise ImageTableError(f"{image_csv}: no site (_sN_) in file name {bad!r}")
    table = pd.DataFrame(
        {
            "Metadata_Plate": raw["Image_Metadata_Plate_DAPI"].astype(str),
            "Metadata_Well": raw["Image_Metadata_Well_DAPI"].astype(str),
            "Metadata_Site": site.astype(int),
            "Metadata_Replicate": raw["Replicate"],
            "Metadata_Compound": raw["Image_Metadata_Compound"].astype(str),
            "Metadata_Concentration": as_concentrations(
                raw, "Image_Metadata_Concentration", str(image_csv)
            ),
        }
    )
    table["Metadata_Batch"] = table["Metadata_Plate"].map(batch_from_plate)
    table["Metadata_MoA"] = moa_of(read_moa(_find(root, MOA_CSV)), table)
    for ours, theirs in CHANNELS.items():
        table[ours] = [
            str(images / p / f)
            for p, f in zip(
                raw[f"Image_PathName_{theirs}"], raw[f"Image_FileName_{theirs}"], strict=True
            )
        ]
    return check_image_table(table, list(CHANNELS), str(image_csv))
