"""Nucleus detection on the DNA channel, and reading nucleus locations that others detected.

``detect_nuclei`` follows CellProfiler's IdentifyPrimaryObjects with shape-based declumping:
Gaussian smoothing, an automatic global threshold (Otsu or Li) on the smoothed image, hole
filling, removal of specks, then a watershed of the negated distance transform from markers at
its h-maxima. Two nuclei are split where the mask narrows between them by at least
``split_depth`` pixels (two overlapping discs of radius r, centres 1.6-1.8 r apart, narrow by
0.4-0.56 r) and their centres are at least ``min_distance`` apart, while a single oval or
bean-shaped nucleus, whose distance ridge has only shallow bumps, stays whole. Nuclei pressed
flat against each other, with no neck in the mask, stay merged: the distance transform cannot
see them. Results use CellProfiler's column names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation

from cellclr.errors import CellclrError

X, Y, AREA = "Nuclei_Location_Center_X", "Nuclei_Location_Center_Y", "Nuclei_AreaShape_Area"
COLUMNS = (X, Y, AREA)
LOCATION_COLUMNS = (X, Y)
THRESHOLDS = {"otsu": filters.threshold_otsu, "li": filters.threshold_li}
NOISE_BACKGROUND_PCT = 25.0  # the background level; robust while nuclei cover < 3/4 of a field
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: diagonal neighbours touch


class DetectionError(CellclrError, ValueError):
    """A DNA image, detection setting or locations file that cannot be used."""


@dataclass(frozen=True)
class NucleusParams:
    """Settings of ``detect_nuclei``; lengths in pixels, areas in pixels².

    The defaults suit BBBC021 at full resolution (MCF-7 nuclei about 25-40 px across, median
    area about 800 px², mitotic figures down to about 100 px²).

    - ``smoothing``: Gaussian sigma before thresholding; 1 px keeps the dark seam between
      touching nuclei that 2 px blurs over, and DAPI is bright enough not to need more.
    - ``threshold``: ``"otsu"`` or ``"li"`` (Li sits lower and grows dim nuclei).
    - ``min_area``, ``max_area``: objects kept after splitting (specks and unsplit clumps go).
    - ``min_distance``: markers (h-maxima) closer than this are merged into the higher one.
    - ``split_depth``: the h of the h-maxima: how much the distance transform must dip between
      two maxima for them to seed two nuclei. 1 px splits the touching pairs of BBBC021 whose
      seam the threshold fills in, yet leaves every single nucleus of the example field whole.
    - ``min_snr``: the threshold never sits below the background (25th percentile) plus this
      many noise sigmas, so an empty field yields nothing instead of blobs of noise.
    """

    smoothing: float = 1.0
    threshold: str = "otsu"
    min_area: int = 50
    max_area: int = 5000
    min_distance: int = 7
    split_depth: float = 1.0
    min_snr: float = 5.0

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLDS:
            raise DetectionError(
                f"unknown threshold {self.threshold!r}: use one of {sorted(THRESHOLDS)}"
            )
        if min(self.smoothing, self.min_distance, self.min_snr) < 0 or self.split_depth <= 0:
            raise DetectionError(
                "smoothing, min_distance and min_snr must be >= 0, and split_depth > 0"
            )
        if not 1 <= self.min_area <= self.max_area:
            raise DetectionError(
                f"need 1 <= min_area <= max_area, got {self.min_area} and {self.max_area}"
            )


def detect_nuclei(dna: np.ndarray, params: NucleusParams | None = None) -> pd.DataFrame:
    """Find nuclei in a 2-D DNA image: one row per nucleus, centroid X (column), Y (row) and
    area in pixels, sorted by (Y, X). A field without nuclei gives an empty frame."""
    params = params or NucleusParams()
    image = np.asarray(dna, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise DetectionError(f"the DNA image must be 2-D with pixels, got shape {image.shape}")
    smoothed = ndi.gaussian_filter(image, params.smoothing)
    mask = _foreground(image, smoothed, params)
    return _measure(_split(mask, params), params)


def _foreground(image: np.ndarray, smoothed: np.ndarray, params: NucleusParams) -> np.ndarray:
    """Thresholded, hole-filled mask without objects smaller than ``min_area``."""
    if smoothed.max() <= smoothed.min():
        return np.zeros(image.shape, dtype=bool)
    level = max(THRESHOLDS[params.threshold](smoothed), _noise_floor(image, smoothed, params))
    mask = ndi.binary_fill_holes(smoothed > level)
    labels, _ = ndi.label(mask)
    keep = np.bincount(labels.ravel()) >= params.min_area
    keep[0] = False
    return keep[labels]


def _noise_floor(image: np.ndarray, smoothed: np.ndarray, params: NucleusParams) -> float:
    """Background plus ``min_snr`` noise sigmas (robust sigma of neighbouring-pixel steps)."""
    sigma = 1.4826 * np.median(np.abs(np.diff(image, axis=1))) / np.sqrt(2)
    return float(np.percentile(smoothed, NOISE_BACKGROUND_PCT) + params.min_snr * sigma)


def _split(mask: np.ndarray, params: NucleusParams) -> np.ndarray:
    """Label image: a watershed of the negated distance transform from its h-maxima."""
    distance = ndi.distance_transform_edt(mask)
    return segmentation.watershed(-distance, _markers(mask, distance, params), mask=mask)


def _markers(mask: np.ndarray, distance: np.ndarray, params: NucleusParams) -> np.ndarray:
    """One label per h-maximum of ``distance``, computed object by object (fast on sparse
    fields). The maxima are the plateaus of the h-reconstruction, taken 8-connected, so that
    equal peaks of one dome (common: distances are square roots of integers) stay one marker."""
    objects, _ = ndi.label(mask)
    markers = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        inside = objects[box] == index
        dome = np.where(inside, distance[box], 0.0)
        flat = morphology.reconstruction(dome - params.split_depth, dome)
        peaks, found = ndi.label(morphology.local_maxima(flat, connectivity=2) & inside, _EIGHT)
        peaks = _merge_close(peaks, found, dome, params.min_distance)
        markers[box][peaks > 0] = peaks[peaks > 0] + count
        count += found
    return markers


def _merge_close(peaks: np.ndarray, found: int, dome: np.ndarray, min_distance: int) -> np.ndarray:
    """Relabel each marker whose centre lies within ``min_distance`` of a higher one's to it."""
    if found < 2:
        return peaks
    index = np.arange(1, found + 1)
    centres = np.array(ndi.center_of_mass(peaks > 0, peaks, index))
    target = np.arange(found + 1)  # marker label -> the label it keeps
    kept: list[int] = []
    for label in index[np.argsort(-ndi.maximum(dome, peaks, index), kind="stable")]:
        near = [k for k in kept if np.hypot(*(centres[k - 1] - centres[label - 1])) < min_distance]
        if near:
            target[label] = near[0]  # the highest marker near it
        else:
            kept.append(label)
    return target[peaks]


def _measure(labels: np.ndarray, params: NucleusParams) -> pd.DataFrame:
    """Centroids and areas of the labelled objects within the area limits, sorted by (Y, X)."""
    props = measure.regionprops_table(labels, properties=("centroid", "area"))
    frame = pd.DataFrame(
        {
            X: np.asarray(props["centroid-1"], dtype=np.float64),
            Y: np.asarray(props["centroid-0"], dtype=np.float64),
            AREA: np.asarray(props["area"], dtype=np.int64),
        }
    )
    frame = frame[frame[AREA].between(params.min_area, params.max_area)]
    return frame.sort_values([Y, X]).reset_index(drop=True)


def read_locations(path: Path) -> pd.DataFrame:
    """Nucleus centres from a DeepProfiler/CellProfiler per-site locations CSV: the columns
    ``Nuclei_Location_Center_X`` and ``_Y`` as floats (other columns are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DetectionError(f"locations file not found: {path}")
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise DetectionError(f"cannot read locations file {path}: {error}") from error
    missing = [column for column in LOCATION_COLUMNS if column not in table.columns]
    if missing:
        raise DetectionError(f"locations file {path} lacks column(s) {', '.join(missing)}")
    locations = table[list(LOCATION_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    for column in LOCATION_COLUMNS:
        bad = locations[column].isna()
        if bad.any():
            raise DetectionError(
                f"locations file {path}: column {column} has {int(bad.sum())} missing or "
                f"non-numeric value(s), first in data row {int(bad.to_numpy().argmax()) + 1}"
            )
    return locations.astype(np.float64).reset_index(drop=True)
