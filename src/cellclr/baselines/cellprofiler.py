"""CellProfiler's own per-object measurements of single-cell crops, through ``cp_measure``.

Each crop is segmented as the ``classic`` baseline does (``cellclr.baselines.classic.segment``:
the nucleus on the first channel, the cell around it on the others) and both objects,
``Nuclei`` and ``Cells``, are measured with cp_measure's ports of CellProfiler 4's modules,
with CellProfiler's defaults and its column names:

- ``{obj}_AreaShape_*``: MeasureObjectSizeShape without the "advanced" moments (Area,
  Perimeter, FormFactor, Solidity, Extent, radii, ...), Zernike shape moments up to degree 9
  (``Zernike_n_m``) and Feret diameters;
- ``{obj}_Intensity_*_{ch}``: MeasureObjectIntensity (CellProfiler's quartile convention);
- ``{obj}_Texture_*_{ch}_3_0d_256``: MeasureTexture, Haralick's 13 features at scale 3 in 4
  directions on 256 grey levels (``[cellprofiler] texture = false`` leaves them out: they
  take about 3 times as long as everything else together);
- ``{obj}_Granularity_{k}_{ch}``: MeasureGranularity, a 16-step spectrum (see
  ``granularity_params`` for small crops);
- ``{obj}_RadialDistribution_{FracAtD,MeanFrac,RadialCV}_{ch}_{k}of4``:
  MeasureObjectIntensityDistribution, 4 rings from the object's centre to its edge;
- ``{obj}_Correlation_{Correlation,Slope,Overlap,K,Manders,RWC}_{ch1}_{ch2}``:
  MeasureColocalization for each pair of channels (``_{ch2}_{ch1}`` for the second direction
  of the asymmetric ones).

Left out: where and at what angle an object lies in its crop (``Center``, ``BoundingBox``
corners, ``Orientation``, the intensity ``Location_*``), which says nothing about the cell,
and Costes' coefficients, undefined (NaN) for about half the cells of the BBBC021 crops.

Intensities are the crop's values scaled per plate and channel as the learned model and the
``classic`` baseline see them, ``(x - p1) / (p99.9 - p1)``, clipped to [0, 1] (cp_measure's
texture takes images in [0, 1], as CellProfiler's are; about 0.1% of pixels saturate).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from functools import lru_cache, partial
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from cellclr.baselines.chunks import Chunk, available_cores, chunk_tasks, map_chunks, read_scaled
from cellclr.baselines.classic import SIGMA, segment
from cellclr.embeddings import EMBEDDINGS, EmbeddingWriter
from cellclr.errors import CellclrError
from cellclr.metadata import metadata_columns
from cellclr.store import CropStore

log = logging.getLogger(__name__)

OBJECTS = ("Nuclei", "Cells")
POSE = ("Center_", "BoundingBoxMinimum_", "BoundingBoxMaximum_", "Orientation", "Location_")
TEXTURE_SCALE = 3
GREY_LEVELS = 256
# per-channel groups of cp_measure's core functions: their keyword arguments, and where the
# channel name goes in their keys (after this many "_"-separated parts; None: at the end)
CHANNEL_GROUPS: dict[str, tuple[dict[str, Any], int | None]] = {
    "intensity": ({"legacy": True}, None),
    "texture": ({"scale": TEXTURE_SCALE, "gray_levels": GREY_LEVELS}, 1),
    "granularity": ({}, None),
    "radial_distribution": ({}, 2),
}
PAIRS = ("pearson", "manders_fold", "rwc")  # and overlap (with K); not Costes (see above)
OVERLAP_KEYS = ("Correlation_Overlap", "Correlation_K_1", "Correlation_K_2")
PAIR_NAMES = {"Pearson": "Correlation"}  # cp_measure's key -> CellProfiler's


def cp_measure_functions() -> tuple[dict[str, Any], dict[str, Any]]:
    """cp_measure's per-object and per-pair measurement functions (labels must be 1..N)."""
    try:
        from cp_measure.bulk import get_core_measurements, get_correlation_measurements
        from cp_measure.core.measurecolocalization import get_correlation_overlap
    except ImportError as e:
        raise CellclrError(
            f"the cellprofiler baseline needs cp_measure ({e}): "
            "pip install -c constraints.txt -e '.[cellprofiler]'"
        ) from None
    pairs = get_correlation_measurements(sanitize=False)
    pairs = {name: pairs[name] for name in PAIRS} | {
        "overlap": partial(_overlap, get_correlation_overlap)
    }
    return get_core_measurements(legacy=False, sanitize=False), pairs


def _overlap(measure: Any, first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict:
    """cp_measure's overlap and K coefficients, NaN where a channel is all zero in the object
    (cp_measure divides by zero there)."""
    try:
        return measure(first, second, labels)
    except ZeroDivisionError:
        return {key: [np.nan] for key in OVERLAP_KEYS}


def _value(values: Any) -> float:
    """The one object's value of a cp_measure result."""
    return float(np.asarray(values, dtype=np.float64).ravel()[0])


def _with_channel(key: str, channel: str, after: int | None) -> str:
    parts = key.split("_")
    at = len(parts) if after is None else after
    return "_".join([*parts[:at], channel, *parts[at:]])


def _shape(labels: np.ndarray, core: dict[str, Any]) -> dict[str, float]:
    """AreaShape features of the object ``labels == 1``, without its pose in the crop."""
    found = core["sizeshape"](labels, None, calculate_advanced=False, new_features=False)
    found |= core["zernike"](labels, None)
    found |= core["feret"](labels, None)
    return {f"AreaShape_{k}": _value(v) for k, v in found.items() if not k.startswith(POSE)}


def granularity_params(shape: tuple[int, ...]) -> dict[str, float]:
    """CellProfiler's granularity settings for a crop of this shape: its defaults (subsample
    to 1/4, estimate the background on a further 1/4), except where that background image
    would be 2 pixels wide (crops of 20 to 35 pixels), where scipy's grey erosion (1.17) by
    the 21-pixel element returns uninitialised memory, so that the background is estimated
    on the subsampled image itself."""
    background = [math.ceil(int(side * 0.25) * 0.25) for side in shape]
    return {"image_sample_size": 1.0} if 2 in background else {}


def _channel(
    labels: np.ndarray, pixels: np.ndarray, channel: str, core: dict[str, Any], texture: bool
) -> dict[str, float]:
    """Intensity, texture, granularity and radial distribution of one channel in the object."""
    out = {}
    for group, (kwargs, after) in CHANNEL_GROUPS.items():
        if group == "texture" and not texture:
            continue
        if group == "granularity":
            kwargs = granularity_params(pixels.shape)
        for key, v in core[group](labels, pixels, **kwargs).items():
            if key.startswith(POSE):
                continue
            name = _with_channel(key, channel, after)
            out["Texture_" + name if group == "texture" else name] = _value(v)
    return out


def _pair_name(key: str, first: str, second: str) -> str:
    """``Correlation_Manders_1`` of (DNA, Actin) -> ``Correlation_Manders_DNA_Actin``, ``_2``
    -> ``..._Actin_DNA``; ``Correlation_Pearson`` -> ``Correlation_Correlation_DNA_Actin``."""
    parts = key.split("_")
    if parts[-1] in ("1", "2"):
        order = (first, second) if parts.pop() == "1" else (second, first)
    else:
        order = (first, second)
    parts = [PAIR_NAMES.get(p, p) for p in parts]
    return "_".join([*parts, *order])


def _pairs(
    labels: np.ndarray, image: np.ndarray, channels: list[str], pairs: dict[str, Any]
) -> dict[str, float]:
    """Colocalization of each pair of channels in the object (NaN where it is undefined)."""
    out = {}
    for i, j in combinations(range(len(channels)), 2):
        for measure in pairs.values():
            for key, v in measure(image[i], image[j], labels).items():
                out[_pair_name(key, channels[i], channels[j])] = _value(v)
    return out


def measure_cell(
    image: np.ndarray,
    nucleus: np.ndarray,
    cell: np.ndarray,
    channels: list[str],
    *,
    texture: bool = True,
) -> dict[str, float]:
    """CellProfiler's measurements (name -> value) of one crop's nucleus and cell masks (H, W)
    on its image (C, H, W) with values in [0, 1]. Undefined values are NaN (or inf)."""
    core, pairs = cp_measure_functions()
    image = np.asarray(image, dtype=np.float64)
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN results, counted later
        for obj, mask in zip(OBJECTS, (nucleus, cell), strict=True):
            labels = np.asarray(mask, dtype=np.int32)
            found = _shape(labels, core)
            for channel, pixels in zip(channels, image, strict=True):
                found |= _channel(labels, pixels, channel, core, texture)
            found |= _pairs(labels, image, channels, pairs)
            out |= {f"{obj}_{k}": v for k, v in found.items()}
    return out


def crop_masks(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus and cell masks (n, H, W) and fallback flags of scaled crops (n, C, H, W), exactly
    as the ``classic`` baseline segments them (smoothed, negative values clipped)."""
    x = np.maximum(np.asarray(crops, dtype=np.float32), 0)
    return segment(ndimage.gaussian_filter(x, sigma=(0, 0, SIGMA, SIGMA)))


@lru_cache(maxsize=16)
def _names(channels: tuple[str, ...], texture: bool) -> tuple[str, ...]:
    size = 32
    rows, cols = np.indices((size, size)) - (size - 1) / 2
    disc = np.hypot(rows, cols)
    image = np.stack([np.clip(1 - disc / (6 + 4 * c), 0, 1) for c in range(len(channels))])
    return tuple(measure_cell(image, disc <= 6, disc <= 12, list(channels), texture=texture))


def feature_names(channels: list[str], *, texture: bool = True) -> list[str]:
    """The feature columns of ``cellprofiler_features``, in its order."""
    return list(_names(tuple(channels), texture))


def _check_crops(crops: np.ndarray, channels: list[str]) -> np.ndarray:
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != len(channels):
        raise ValueError(f"crops shaped {x.shape} do not match channels {channels}")
    return x


def measure_crops(
    crops: np.ndarray, channels: list[str], *, texture: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(n, features) values in ``feature_names`` order of scaled float crops (n, C, H, W), and
    whether each crop's nucleus is a fallback disc (see ``classic.segment``)."""
    x = _check_crops(crops, channels)
    nuclei, cells, fallback = crop_masks(x)
    image = np.clip(x, 0, 1)
    names = feature_names(channels, texture=texture)
    values = np.empty((len(x), len(names)))
    for i in range(len(x)):
        found = measure_cell(image[i], nuclei[i], cells[i], channels, texture=texture)
        values[i] = [found[name] for name in names]
    return values, fallback


def cellprofiler_features(
    crops: np.ndarray, channels: list[str], *, texture: bool = True
) -> pd.DataFrame:
    """CellProfiler's measurements (columns ``feature_names``) of scaled float crops."""
    values, _ = measure_crops(crops, channels, texture=texture)
    return pd.DataFrame(values, columns=feature_names(channels, texture=texture))


def chunk_features(task: Chunk, texture: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """``measure_crops`` of one chunk of a store (float32 values), and the CPU seconds it took
    (a throughput that other jobs on the machine do not change)."""
    cpu = time.process_time()
    store, scaled = read_scaled(task)
    values, fallback = measure_crops(scaled, store.channels, texture=texture)
    return values.astype(np.float32), fallback, time.process_time() - cpu


def chunk_worker(texture: bool) -> partial[tuple[np.ndarray, np.ndarray, float]]:
    """``chunk_features`` with ``texture`` bound, for a process pool."""
    return partial(chunk_features, texture=texture)


def standardize_with_gaps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column over its finite values, then set the non-finite ones (features that
    cp_measure could not compute for a cell) to 0, the column's mean; a column constant over
    its finite values becomes 0. Returns the values and the count of non-finite ones per
    column."""
    finite = np.isfinite(values)
    x = np.where(finite, values, np.nan).astype(np.float64)
    counts = finite.sum(0)
    some = counts > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean, std = np.nanmean(x, 0), np.nanstd(x, 0)
        low, high = np.nanmin(x, 0), np.nanmax(x, 0)
    varies = some & (high > low)
    z = (x - np.where(varies, mean, 0)) / np.where(varies, std, 1)
    return np.where(finite & varies, z, 0.0), len(values) - counts


def write_cellprofiler_embeddings(
    crops_path: Path,
    out: Path,
    *,
    normalize: str = "plate",
    normalize_min_cells: int = 100,
    workers: int = 0,
    batch: int = 32,
    texture: bool = True,
    standardize: bool = True,
) -> dict[str, Any]:
    """Write ``out/embeddings.parquet`` as ``cellclr embed`` does: the store's ``Metadata_``
    columns in its cell order, then CellProfiler's measurements of every cell; return what
    the stage records (cells/s, features, missing values).

    Chunks of ``batch`` cells are scaled as for the learned model (``normalize``,
    ``normalize_min_cells``) and measured over ``workers`` processes (0: the cores this job may
    use; 1: in this process). With ``standardize`` each feature is z-scored over all cells
    and values that could not be computed are set to 0 (``standardize_with_gaps``), so that a
    few undefined cells never cost a feature; without it the raw values are written, NaN and
    all.
    """
    cp_measure_functions()  # fail before starting workers if cp_measure is missing
    store = CropStore(crops_path)
    names = feature_names(store.channels, texture=texture)
    tasks = chunk_tasks(store, normalize, normalize_min_cells, batch)
    workers = max(1, min(workers or available_cores(), len(tasks)))
    start = time.perf_counter()
    parts = list(map_chunks(chunk_worker(texture), tasks, workers, "cellprofiler"))
    seconds = time.perf_counter() - start
    values = np.concatenate([part[0] for part in parts])
    cpu = sum(part[2] for part in parts)
    missing = (~np.isfinite(values)).sum(0)
    if standardize:
        values, missing = standardize_with_gaps(values)
    metadata = store.cells[metadata_columns(store.cells)]
    with EmbeddingWriter(Path(out) / EMBEDDINGS, metadata, names) as writer:
        writer.append(values)
    rate = len(values) / max(seconds, 1e-9)
    log.info(
        f"[cellprofiler] {len(values)} cells in {seconds:.1f} s: {rate:.2f} cells/s "
        f"({workers} workers, texture {'on' if texture else 'off'}; "
        f"{1000 * cpu / max(len(values), 1):.0f} ms of CPU a cell)"
    )
    return {
        "cells": len(values),
        "features": len(names),
        "texture": texture,
        "workers": workers,
        "measure_seconds": round(seconds, 1),
        "cells_per_s": round(rate, 3),
        "cpu_ms_per_cell": round(1000 * cpu / max(len(values), 1), 1),
        "fallback_nuclei": int(sum(part[1].sum() for part in parts)),
        "missing_values": int(missing.sum()),
        "missing_by_feature": {n: int(c) for n, c in zip(names, missing, strict=True) if c},
    }
