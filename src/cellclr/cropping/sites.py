"""One field of view (site) -> single-cell crops: read its channel images, divide out the
plate's illumination functions (ours, or CellProfiler's), find nuclei in the nucleus channel (or
take their centres from a file or table), cut a box around each (``boxes``: skipped or padded
at the edge). Runs in the crop stage's worker processes."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import SITE_KEYS
from cellclr.errors import CellclrError
from cellclr.pixels.boxes import PADDED, crop_boxes, inside_field
from cellclr.pixels.illumination import (
    check_function_shape,
    correct,
    load_cellprofiler_function,
    load_illumination,
)
from cellclr.pixels.nuclei import NucleusParams, detect_nuclei, read_locations
from cellclr.pixels.tiff import read_image

__all__ = ["CropError", "Site", "SiteResult", "crop_boxes", "process_site", "read_image"]

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
    nucleus: int = 0  # the index of the channel nuclei are found in
    cp_illumination: tuple[str, ...] | None = None  # CellProfiler's functions, one per channel
    nuclei: pd.DataFrame | None = None  # nucleus centres from a table, instead of detection
    pad: bool = False  # crop.edge = "pad": boxes leaving the field are zero-padded


@dataclass
class SiteResult:
    crops: np.ndarray  # uint16 (n, C, box, box)
    cells: pd.DataFrame
    record: dict = field(default_factory=dict)


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


def _cellprofiler_function(path: str) -> np.ndarray:
    """A CellProfiler function, read once per process (again if the file changes)."""
    try:
        stat = os.stat(path)
    except OSError:
        return load_cellprofiler_function(path)  # says that it is missing
    return _cached_function(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _cached_function(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return load_cellprofiler_function(path)


def corrected(site: Site, images: list[np.ndarray]) -> list[np.ndarray]:
    """The site's images divided by its illumination functions (``correct``: rounded, clipped
    to 0..65535): CellProfiler's when the table names them, else its plate's own; or as they
    are when there are none."""
    if site.cp_illumination is not None:
        functions = [_cellprofiler_function(p) for p in site.cp_illumination]
        for f, path, image_path in zip(functions, site.cp_illumination, site.paths, strict=True):
            check_function_shape(f, images[0].shape, path, image_path)
        return [correct(im, f) for im, f in zip(images, functions, strict=True)]
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
    nuclei = _nuclei(site, images, params)
    centres = nuclei[LOCATION].to_numpy(float).reshape(-1, 2)
    crops, kept, padded = crop_boxes(images, centres, box, pad=site.pad)
    outside = ~inside_field(centres, (height, width))
    cells = nuclei[kept].reset_index(drop=True)
    cells = cells.drop(columns=[k for k in site.metadata if k in cells])
    for key, value in site.metadata.items():
        cells.insert(len(cells.columns), key, value)
    cells["Metadata_SiteCellCount"] = len(cells)
    if site.pad:
        cells[PADDED] = padded
    record = {
        **{k: site.metadata[k] for k in SITE_KEYS},
        "cells": len(cells),
        "off_edge": int((~kept & ~outside).sum() + (padded > 0).sum()),
        "outside_field": int(outside.sum()),
        "illumination": site.illumination is not None or site.cp_illumination is not None,
        "status": "ok",
    }
    return SiteResult(crops, cells, record)


def _nuclei(site: Site, images: list[np.ndarray], params: NucleusParams) -> pd.DataFrame:
    """The site's nucleus centres: given by a table or a file, else detected."""
    if site.nuclei is not None:
        return site.nuclei.reset_index(drop=True)
    if site.locations is not None:
        return read_locations(Path(site.locations))
    return detect_nuclei(images[site.nucleus], params)


def process_site_task(args: tuple[Site, int, NucleusParams]) -> SiteResult:
    """``process_site`` for ``Executor.map``."""
    return process_site(*args)
