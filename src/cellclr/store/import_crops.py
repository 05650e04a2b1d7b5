"""``cellclr import-crops``: an npz of crops plus a CSV of cells -> a crop store."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cellclr.outputs import staged_dir
from cellclr.store import StoreError, finalize_store, write_plate
from cellclr.store.format import REQUIRED_COLUMNS

LOCATION_COLUMNS = ("Nuclei_Location_Center_X", "Nuclei_Location_Center_Y")


def load_images(path: Path, key: str = "images") -> np.ndarray:
    """The crop array from an ``.npz`` (or ``.npy``) file, as (cells, channels, H, W)."""
    if not path.is_file():
        raise StoreError(f"images file not found: {path}")
    try:
        if path.suffix == ".npy":
            images = np.load(path, mmap_mode="r")
        else:
            with np.load(path) as npz:
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
    if not path.is_file():
        raise StoreError(f"cells table not found: {path}")
    cells = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in cells]
    if missing:
        raise StoreError(f"{path}: missing required columns {', '.join(missing)}")
    if len(cells) != n_images:
        raise StoreError(f"{path}: {len(cells)} rows but the images hold {n_images} crops")
    for column in [*REQUIRED_COLUMNS, *(c for c in ("Metadata_Batch",) if c in cells)]:
        empty = np.flatnonzero(cells[column].isna().to_numpy())
        if len(empty):
            first = empty[:5].tolist()
            raise StoreError(f"{path}: column {column} is empty in {len(empty)} rows ({first}...)")
    keep = [c for c in cells.columns if c.startswith("Metadata_") or c in LOCATION_COLUMNS]
    cells = cells[keep].copy()
    cells["Metadata_Plate"] = cells["Metadata_Plate"].astype(str)
    cells["Metadata_Well"] = cells["Metadata_Well"].astype(str)
    cells["Metadata_Compound"] = cells["Metadata_Compound"].astype(str)
    cells["Metadata_Concentration"] = cells["Metadata_Concentration"].astype(float)
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
        plates = cells.groupby("Metadata_Plate", sort=True).indices
        for plate, rows in tqdm(plates.items(), desc="import", unit="plate", disable=None):
            crops = check_counts(np.asarray(images[rows]), images_path, rows)
            write_plate(work, plate, crops, cells.iloc[rows])
        finalize_store(work, channels)
    return out
