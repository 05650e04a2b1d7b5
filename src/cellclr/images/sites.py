"""One field of view (site) -> single-cell crops: read its channel images, divide out the
plate's illumination functions, find nuclei (or read their centres), cut a box around each.
Runs in the crop stage's worker processes."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from cellclr.errors import CellclrError
from cellclr.images.illumination import correct, load_illumination
from cellclr.images.nuclei import NucleusParams, detect_nuclei, read_locations
from cellclr.images.table import SITE_KEYS

LOCATION = ["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]


class CropError(CellclrError, ValueError):
    """A field of view that cannot be cropped."""


@dataclass
class Site:
    """One field of view to crop: its channel files and the metadata its cells inherit."""

    paths: list[str]
    channels: tuple[str, ...]
    metadata: dict
    illumination: str | None = None  # the plate's illumination file
    locations: str | None = None  # a nucleus-centre CSV instead of detection


@dataclass
class SiteResult:
    crops: np.ndarray  # uint16 (n, C, box, box)
    cells: pd.DataFrame
    record: dict = field(default_factory=dict)


def read_image(path: str) -> np.ndarray:
    """A 2-D image of counts from a TIFF file, as uint16; a missing, unreadable or truncated
    file is an error naming it. Unsigned 8-bit images are counts too and keep their values
    (0..255, not stretched); any other pixel type (signed, 32-bit, floating point) is refused
    rather than converted, since no conversion is right for every source."""
    if not os.path.isfile(path):
        raise CropError(f"missing image file: {path}")
    try:
        image = tifffile.imread(path)
    except Exception as e:  # tifffile raises many types for truncated or corrupt files
        raise CropError(
            f"unreadable TIFF {path}: truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    image = np.squeeze(image)
    if image.size == 0:
        raise CropError(f"unreadable TIFF {path}: truncated or corrupt (it holds no pixels)")
    if image.ndim != 2:
        raise CropError(f"{path}: expected a 2-D image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise CropError(
            f"{path}: {image.dtype} pixels; cellclr reads unsigned 16-bit (or 8-bit) counts: "
            "convert the images to 16-bit counts (uint16 TIFFs)"
        )
    return image.astype(np.uint16, copy=False)


def read_site(paths: list[str]) -> list[np.ndarray]:
    images = [read_image(p) for p in paths]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        detail = ", ".join(
            f"{Path(p).name} {im.shape}" for p, im in zip(paths, images, strict=True)
        )
        raise CropError(f"images of one site differ in shape: {detail}")
    return images


@functools.lru_cache(maxsize=2)
def _illumination(path: str, channels: tuple[str, ...]) -> list[np.ndarray]:
    functions = load_illumination(Path(path))
    return [functions[c] for c in channels]


def crop_boxes(
    images: list[np.ndarray], centres: np.ndarray, box: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of side ``box`` centred on each (x, y); returns them and which centres fit."""
    height, width = images[0].shape
    top_left = np.round(centres[:, ::-1]).astype(int) - box // 2  # (row, col)
    fits = (
        (top_left >= 0).all(axis=1)
        & (top_left[:, 0] + box <= height)
        & (top_left[:, 1] + box <= width)
    )
    stack = np.stack(images)
    crops = np.empty((int(fits.sum()), len(images), box, box), dtype=np.uint16)
    for i, (r, c) in enumerate(top_left[fits]):
        crops[i] = stack[:, r : r + box, c : c + box]
    return crops, fits


def corrected(site: Site, images: list[np.ndarray]) -> list[np.ndarray]:
    """The site's images divided by its plate's illumination functions (``correct``: rounded,
    clipped to 0..65535), or as they are when the plate has none."""
    if site.illumination is None:
        return images
    functions = _illumination(site.illumination, site.channels)
    if functions[0].shape != images[0].shape:
        raise CropError(
            f"{site.paths[0]}: image shape {images[0].shape} differs from the shape "
            f"{functions[0].shape} of the plate's illumination functions ({site.illumination}): "
            "the fields of a plate must all have one size"
        )
    return [correct(im, f) for im, f in zip(images, functions, strict=True)]


def process_site(site: Site, box: int, params: NucleusParams) -> SiteResult:
    """Read, correct, find nuclei and crop one site (runs in a worker process)."""
    images = corrected(site, read_site(site.paths))
    height, width = images[0].shape
    if box > min(height, width):
        raise CropError(
            f"the crop box (crop.box, --box) of {box} pixels is larger than the field of view, "
            f"{height} x {width} pixels ({site.paths[0]})"
        )
    if site.locations is not None:
        nuclei = read_locations(Path(site.locations))
    else:
        nuclei = detect_nuclei(images[0], params)
    centres = nuclei[LOCATION].to_numpy(float).reshape(-1, 2)
    crops, fits = crop_boxes(images, centres, box)
    cells = nuclei[fits].reset_index(drop=True)
    for key, value in site.metadata.items():
        cells.insert(len(cells.columns), key, value)
    cells["Metadata_SiteCellCount"] = len(cells)
    record = {
        **{k: site.metadata[k] for k in SITE_KEYS},
        "cells": len(cells),
        "off_edge": int((~fits).sum()),
        "illumination": site.illumination is not None,
        "status": "ok",
    }
    return SiteResult(crops, cells, record)


def process_site_task(args: tuple[Site, int, NucleusParams]) -> SiteResult:
    """``process_site`` for ``Executor.map``."""
    return process_site(*args)
