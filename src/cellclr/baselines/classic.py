"""Classic per-cell features in the spirit of CellProfiler, computed from single-cell crops.

Each crop is segmented on its own (see ``segment``) into a nucleus, a cell and the cytoplasm
between them, and measured:

- ``{Nuclei,Cells}_AreaShape_*``: area, perimeter, eccentricity, solidity, major and minor
  axis length, form factor (4 pi area / perimeter^2), in pixels;
- ``{Nuclei,Cytoplasm,Cells}_Intensity_*_<channel>``: mean, std, median, integrated, min, max
  and upper quartile of each channel;
- ``Cells_Texture_*_<channel>_3``: Haralick (grey-level co-occurrence) contrast, homogeneity,
  energy, correlation, angular second moment and dissimilarity at distance 3, averaged over
  4 angles, on the cell quantised to 16 grey levels between the 1st and 99th percentile of
  the channel in the cell (texture apart from brightness, which the intensities measure);
- ``Cells_RadialDistribution_FracAtD_<channel>_<k>of4``: the fraction of the channel's
  intensity in the cell that lies in each of 4 rings from the nucleus centre (0) to the cell
  edge (1), with CellProfiler's normalised distance d_centre / (d_centre + d_edge).

Intensities are the crop's scaled values (``(x - low) / (high - low)`` per plate and
channel, as the learned model sees them) with negative values clipped to 0. Every feature is
finite for any crop, empty or constant ones included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import perimeter
from skimage.morphology import convex_hull_image

from cellclr.baselines.chunks import Chunk, available_cores, chunk_tasks, map_chunks, read_scaled
from cellclr.embeddings import EMBEDDINGS, EmbeddingWriter
from cellclr.metadata import metadata_columns
from cellclr.store import CropStore

SIGMA = 1.0  # Gaussian smoothing (pixels) before thresholding
MIN_NUCLEUS_AREA = 10  # foreground components of the first channel smaller than this are noise
FALLBACK_RADIUS_FRACTION = 1 / 8  # of the crop side, when no crop of a call has a nucleus
SHAPE = (
    "Area",
    "Perimeter",
    "Eccentricity",
    "Solidity",
    "MajorAxisLength",
    "MinorAxisLength",
    "FormFactor",
)
INTENSITY = (
    "MeanIntensity",
    "StdIntensity",
    "MedianIntensity",
    "IntegratedIntensity",
    "MinIntensity",
    "MaxIntensity",
    "UpperQuartileIntensity",
)
TEXTURE = {  # CellProfiler name: skimage.feature.graycoprops name
    "Contrast": "contrast",
    "Homogeneity": "homogeneity",
    "Energy": "energy",
    "Correlation": "correlation",
    "AngularSecondMoment": "ASM",
    "Dissimilarity": "dissimilarity",
}
GLCM_DISTANCE = 3
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GREY_LEVELS = 16
RINGS = 4


def feature_names(channels: list[str]) -> list[str]:
    """Column names of ``classic_features``, in its order."""
    names = [f"{obj}_AreaShape_{f}" for obj in ("Nuclei", "Cells") for f in SHAPE]
    names += [
        f"{obj}_Intensity_{f}_{ch}"
        for obj in ("Nuclei", "Cytoplasm", "Cells")
        for f in INTENSITY
        for ch in channels
    ]
    names += [f"Cells_Texture_{f}_{ch}_{GLCM_DISTANCE}" for f in TEXTURE for ch in channels]
    names += [
        f"Cells_RadialDistribution_FracAtD_{ch}_{k + 1}of{RINGS}"
        for ch in channels
        for k in range(RINGS)
    ]
    return names


def otsu_thresholds(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """Otsu's threshold of each image of (n, H, W), as ``skimage.filters.threshold_otsu``
    computes it (foreground: ``> threshold``); a constant image gets its value (no foreground)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    lo, hi = flat.min(1), flat.max(1)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    idx = np.minimum(((flat - lo[:, None]) / width[:, None]).astype(np.int64), bins - 1)
    idx += bins * np.arange(len(flat))[:, None]
    hist = np.bincount(idx.ravel(), minlength=bins * len(flat)).reshape(-1, bins).astype(float)
    centres = lo[:, None] + (np.arange(bins) + 0.5) * width[:, None]
    mass = hist * centres
    w1, w2 = np.cumsum(hist, 1), np.cumsum(hist[:, ::-1], 1)[:, ::-1]
    m1 = np.cumsum(mass, 1) / np.maximum(w1, 1)
    m2 = np.cumsum(mass[:, ::-1], 1)[:, ::-1] / np.maximum(w2, 1)
    between = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    best = centres[np.arange(len(flat)), between.argmax(1)]
    return np.where(hi > lo, best, hi)


def _nucleus(
    foreground: np.ndarray, centre_distance: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """The foreground component containing (or nearest to) the centre, holes filled, or None;
    and the other components (other nuclei)."""
    labels, n = ndimage.label(foreground)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    big = np.flatnonzero(areas >= MIN_NUCLEUS_AREA) + 1
    if len(big) == 0:
        return None, np.zeros_like(foreground)
    nearest = big[np.argmin(ndimage.minimum(centre_distance, labels, big))]
    others = np.isin(labels, big[big != nearest])
    return ndimage.binary_fill_holes(labels == nearest), others


def _cell(foreground: np.ndarray, nucleus: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The component of ``foreground | nucleus`` holding the nucleus, holes filled, limited to
    pixels at least as near to this nucleus as to any other (a Voronoi split of touching
    cells)."""
    region = foreground | nucleus
    if others.any():
        own = ndimage.distance_transform_edt(~nucleus)
        region &= own <= ndimage.distance_transform_edt(~others)
    labels, _ = ndimage.label(region)
    return ndimage.binary_fill_holes(labels == labels[nucleus][0]) | nucleus


def segment(smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nucleus and cell masks (n, H, W) and whether the nucleus is a fallback, from smoothed
    scaled crops (n, C, H, W).

    The nucleus is the connected component (of at least ``MIN_NUCLEUS_AREA`` pixels) of Otsu's
    foreground of the first channel that contains the crop centre, or else the nearest one.
    The cell is the component of Otsu's foreground of the sum of the other channels (all
    channels when there is one) that holds the nucleus, united with it, and cut where another
    nucleus of the crop is nearer. A crop without a nucleus (empty, constant, no
    foreground) gets a centred disc of the median nucleus area of this call's crops (or of
    radius ``FALLBACK_RADIUS_FRACTION`` of the crop side when none has one); its cell is then
    found as above around that disc.
    """
    n, _, h, w = smooth.shape
    dna = smooth[:, 0]
    body = smooth[:, 1:].sum(1) if smooth.shape[1] > 1 else dna
    dna_fg = dna > otsu_thresholds(dna)[:, None, None]
    body_fg = body > otsu_thresholds(body)[:, None, None]
    rows, cols = np.indices((h, w))
    centre_distance = np.hypot(rows - (h - 1) / 2, cols - (w - 1) / 2)
    found = [_nucleus(fg, centre_distance) for fg in dna_fg]
    areas = [nuc.sum() for nuc, _ in found if nuc is not None]
    radius = np.sqrt(np.median(areas) / np.pi) if areas else FALLBACK_RADIUS_FRACTION * min(h, w)
    disc = centre_distance <= max(radius, 1.0)
    nuclei = np.stack([disc if nuc is None else nuc for nuc, _ in found])
    cells = np.stack([_cell(body_fg[i], nuclei[i], found[i][1]) for i in range(n)])
    return nuclei, cells, np.array([nuc is None for nuc, _ in found])


def _shape(mask: np.ndarray) -> np.ndarray:
    """AreaShape features of a non-empty mask, in ``SHAPE`` order."""
    rr, cc = np.nonzero(mask)
    area = rr.size
    a, c = rr.var(), cc.var()
    b = np.mean((rr - rr.mean()) * (cc - cc.mean()))
    half = np.hypot((a - c) / 2, b)
    l1, l2 = (a + c) / 2 + half, max((a + c) / 2 - half, 0.0)
    eccentricity = np.sqrt(1 - l2 / l1) if l1 > 0 else 0.0
    hull = convex_hull_image(mask[rr.min() : rr.max() + 1, cc.min() : cc.max() + 1])
    length = perimeter(mask)
    form_factor = 4 * np.pi * area / length**2 if length > 0 else 1.0
    return np.array(
        [
            area,
            length,
            eccentricity,
            area / hull.sum(),
            4 * np.sqrt(l1),
            4 * np.sqrt(l2),
            form_factor,
        ]
    )


def _intensity(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(``INTENSITY``, C) statistics of each channel in ``mask``; zeros when it is empty."""
    values = image[:, mask].astype(np.float64)
    if values.shape[1] == 0:
        return np.zeros((len(INTENSITY), len(image)))
    low, median, upper, high = np.quantile(values, [0, 0.5, 0.75, 1], axis=1)
    return np.stack([values.mean(1), values.std(1), median, values.sum(1), low, high, upper])


def _texture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(``TEXTURE``, C) Haralick features of each channel in ``mask`` (non-empty), over the
    co-occurring pixel pairs inside it, quantised between the channel's 1st and 99th
    percentile there; a constant channel, or one without any such pair, scores as constant."""
    rr, cc = np.nonzero(mask)
    box = (slice(rr.min(), rr.max() + 1), slice(cc.min(), cc.max() + 1))
    low, high = np.percentile(image[:, rr, cc], [1, 99], axis=1)[:, :, None, None]
    scale = GREY_LEVELS / np.maximum(high - low, 1e-6)
    levels = np.clip(((image[:, *box] - low) * scale).astype(np.int64), 0, GREY_LEVELS - 1)
    levels = np.where(mask[box], levels + 1, 0).astype(np.uint8)  # 0: outside the cell
    pairs = [
        graycomatrix(q, [GLCM_DISTANCE], GLCM_ANGLES, GREY_LEVELS + 1, symmetric=True)[1:, 1:, 0]
        for q in levels
    ]  # pairs within the cell only
    glcm = np.stack(pairs, axis=2)  # (levels, levels, C, angles)
    glcm[0, 0][glcm.sum((0, 1)) == 0] = 1
    return np.stack([graycoprops(glcm, prop).mean(1) for prop in TEXTURE.values()])


def _radial(image: np.ndarray, cell: np.ndarray, nucleus: np.ndarray) -> np.ndarray:
    """(C, ``RINGS``) fraction of each channel's intensity in the cell per ring around the
    nucleus centre; zeros for a channel without intensity in the cell."""
    rr, cc = np.nonzero(cell)
    nr, nc = np.nonzero(nucleus)
    to_centre = np.hypot(rr - nr.mean(), cc - nc.mean())
    to_edge = ndimage.distance_transform_edt(np.pad(cell, 1))[rr + 1, cc + 1]  # >= 1 inside
    ring = np.minimum((RINGS * to_centre / (to_centre + to_edge)).astype(np.int64), RINGS - 1)
    sums = np.stack([np.bincount(ring, weights=v, minlength=RINGS) for v in image[:, rr, cc]])
    total = sums.sum(1, keepdims=True)
    return np.divide(sums, total, out=np.zeros_like(sums), where=total > 0)


def _measure(image: np.ndarray, nucleus: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """One crop's feature vector, in ``feature_names`` order."""
    parts = [
        _shape(nucleus),
        _shape(cell),
        _intensity(image, nucleus),
        _intensity(image, cell & ~nucleus),
        _intensity(image, cell),
        _texture(image, cell),
        _radial(image, cell, nucleus),
    ]
    return np.concatenate([p.ravel() for p in parts])


def classic_features(crops: np.ndarray, channels: list[str]) -> pd.DataFrame:
    """CellProfiler-style features (columns ``feature_names(channels)``) of scaled float crops
    (n, C, H, W), one row per crop; see ``segment`` for the masks and their fallback."""
    x = np.maximum(np.asarray(crops, dtype=np.float32), 0)
    if x.ndim != 4 or x.shape[1] != len(channels):
        raise ValueError(f"crops shaped {x.shape} do not match channels {channels}")
    smooth = ndimage.gaussian_filter(x, sigma=(0, 0, SIGMA, SIGMA))
    nuclei, cells, _ = segment(smooth)
    rows = [_measure(x[i], nuclei[i], cells[i]) for i in range(len(x))]
    values = np.array(rows).reshape(len(x), -1)
    return pd.DataFrame(values, columns=feature_names(channels))


def _chunk_features(task: Chunk) -> np.ndarray:
    """Features of one chunk of the store's cells (see ``cellclr.baselines.chunks``)."""
    store, scaled = read_scaled(task)
    return classic_features(scaled, store.channels).to_numpy()


def standardize_columns(values: np.ndarray) -> np.ndarray:
    """Z-score each column (mean 0, std 1); a constant column becomes 0."""
    varies = values.max(0) > values.min(0)
    std = np.where(varies, values.std(0), 1.0)
    return np.where(varies, (values - values.mean(0)) / std, 0.0)


def write_classic_embeddings(
    crops_path: Path,
    out: Path,
    *,
    normalize: str = "plate",
    normalize_min_cells: int = 100,
    workers: int = 0,
    batch: int = 256,
    standardize: bool = True,
) -> Path:
    """Write ``out/embeddings.parquet`` (returned) as ``cellclr embed`` does: the store's
    ``Metadata_`` columns in its cell order, then the classic features of every cell.

    Crops are scaled per plate and channel as for the learned model (``normalize``,
    ``normalize_min_cells``), measured in chunks of ``batch`` cells over ``workers``
    processes (0: the cores this job may use; 1: in this process). With ``standardize`` each
    feature is z-scored over all cells: raw features span wildly different scales (areas in
    hundreds, intensities near 0.1), so cosine distances over them would be ruled by a few.
    """
    store = CropStore(crops_path)
    tasks = chunk_tasks(store, normalize, normalize_min_cells, batch)
    parts = list(map_chunks(_chunk_features, tasks, workers or available_cores(), "classic"))
    values = np.concatenate(parts)
    if standardize:
        values = standardize_columns(values)
    path = Path(out) / EMBEDDINGS
    metadata = store.cells[metadata_columns(store.cells)]
    with EmbeddingWriter(path, metadata, feature_names(store.channels)) as writer:
        writer.append(values)
    return path
