"""``cellclr import-crops``: an npz of crops plus a CSV of cells -> a crop store."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, CONCENTRATION, PLATE, SITE, TREATMENT, WELL
from cellclr.metadata import as_concentrations, as_numbers, read_table, require_filled
from cellclr.outputs import staged_dir
from cellclr.progress import progress_bar
from cellclr.store import StoreError, finalize_store, write_plate
from cellclr.store.format import REQUIRED_COLUMNS

LOCATION_COLUMNS = ("Nuclei_Location_Center_X", "Nuclei_Location_Center_Y")


NPZ_MAGIC, NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


def load_images(path: Path, key: str = "images") -> np.ndarray:
    """The crop array from an ``.npz`` (or ``.npy``) file, as (cells, channels, H, W)."""
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a file (the crops: an .npz or .npy file)")
    if not path.is_file():
        raise StoreError(f"images file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] != NPZ_MAGIC and head != NPY_MAGIC:
        raise StoreError(
            f"{path} is not an .npz or .npy file (it starts with {head!r}): save the crops "
            "with numpy.savez or numpy.save"
        )
    try:
        if head == NPY_MAGIC:
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                if key not in npz.files:
                    raise StoreError(f"{path}: no array {key!r} (it has: {', '.join(npz.files)})")
                images = npz[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise StoreError(f"{path}: cannot read the crops: {e}") from None
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise StoreError(
            f"{path}: expected crops shaped (cells, channels, H, W), got {images.shape}"
        )
    if len(images) == 0:
        raise StoreError(f"{path}: holds no crops")
    return images


def check_counts(images: np.ndarray, path: Path, rows: np.ndarray) -> np.ndarray:
    """Return the crops as uint16, or explain why they are not 16-bit counts.

    ``rows`` are the positions of these crops in the file (named in errors)."""
    if images.dtype == np.uint16:
        return images
    if images.dtype.kind not in "iuf":
        raise StoreError(f"{path}: crops have dtype {images.dtype}; 16-bit counts are expected")
    per_cell = images.reshape(len(images), -1)
    problems = [
        ("NaN or infinite values", ~np.isfinite(per_cell).all(axis=1)),
        ("negative values", (per_cell < 0).any(axis=1)),
        ("values above 65535", (per_cell > 65535).any(axis=1)),
        ("fractional values", (per_cell != np.round(per_cell)).any(axis=1)),
    ]
    for what, bad in problems:
        if bad.any():
            where = rows[np.flatnonzero(bad)]
            raise StoreError(
                f"{path}: {what} in {len(where)} crops (first: {where[:5].tolist()}); "
                "16-bit counts are expected"
            )
    return images.astype(np.uint16)


def read_cells(path: Path, n_images: int) -> pd.DataFrame:
    """Read and check the cell table that goes with the crops."""
    cells = read_table(path, "cells table")
    missing = [c for c in REQUIRED_COLUMNS if c not in cells]
    if missing:
        raise StoreError(f"{path}: missing required columns {', '.join(missing)}")
    if len(cells) != n_images:
        raise StoreError(f"{path}: {len(cells)} rows but the images hold {n_images} crops")
    optional = [c for c in (*TREATMENT, BATCH) if c in cells]
    require_filled(cells, [*REQUIRED_COLUMNS, *optional], path)
    keep = [c for c in cells.columns if c.startswith("Metadata_") or c in LOCATION_COLUMNS]
    cells = cells[keep].copy()
    for column in (PLATE, WELL, COMPOUND):
        if column in cells:
            cells[column] = cells[column].astype(str)
    cells[SITE] = as_numbers(cells, SITE, str(path), integer=True)
    if CONCENTRATION in cells:
        cells[CONCENTRATION] = as_concentrations(cells, CONCENTRATION, str(path))
    for column in (c for c in LOCATION_COLUMNS if c in cells):
        cells[column] = as_numbers(cells, column, str(path))
    return cells


def import_crops(
    images_path: str | Path,
    cells_path: str | Path,
    out: str | Path,
    channels: list[str] | None = None,
    key: str = "images",
    overwrite: bool = False,
) -> Path:
    """Convert a crop array and its cell table into a crop store at ``out``."""
    images_path, cells_path, out = Path(images_path), Path(cells_path), Path(out)
    images = load_images(images_path, key)
    n_channels = images.shape[1]
    channels = channels or [f"ch{i + 1}" for i in range(n_channels)]
    if len(channels) != n_channels:
        raise StoreError(
            f"{images_path}: crops have {n_channels} channels but {len(channels)} names were given "
            f"({', '.join(channels)})"
        )
    if len(set(channels)) != len(channels):
        raise StoreError(f"channel names must be distinct: {', '.join(channels)}")
    cells = read_cells(cells_path, len(images))
    with staged_dir(out, overwrite=overwrite, inputs=[images_path, cells_path]) as work:
        plates = cells.groupby(PLATE, sort=True).indices
        for plate, rows in progress_bar(plates.items(), desc="import", unit="plate"):
            crops = check_counts(np.asarray(images[rows]), images_path, rows)
            write_plate(work, plate, crops, cells.iloc[rows])
        finalize_store(work, channels)
    return out
