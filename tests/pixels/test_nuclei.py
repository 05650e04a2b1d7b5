"""Nucleus detection on synthetic 16-bit DNA fields with known centres, and locations CSVs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cellclr.errors import CellclrError
from cellclr.pixels.nuclei import (
    COLUMNS,
    DetectionError,
    NucleusParams,
    detect_nuclei,
    read_locations,
)
from cellclr.store import CropStore
from tests.cropping.test_sources import XY, crop
from tests.helpers import TABLE

SIZE = 256
# (row, col, semi-axis a, semi-axis b, angle): isolated nuclei, discs and ellipses
SINGLES = [
    (30, 30, 10, 10, 0.0),
    (35, 110, 12, 8, 0.5),
    (40, 215, 9, 9, 0.0),
    (120, 40, 11, 9, 2.0),
    (215, 35, 8, 8, 0.0),
    (225, 225, 12, 9, 1.0),
]
# touching pairs: two overlapping nuclei, centres 1.6-1.8 mean radii apart
PAIRS = [
    ((110, 110, 10, 10, 0.0), (110, 127, 10, 10, 0.0)),  # 1.7 r, horizontal
    ((160, 190, 9, 9, 0.0), (175, 198, 10, 10, 0.0)),  # 1.8 r, diagonal, unequal
    ((205, 110, 11, 9, 0.3), (205, 126, 10, 9, 0.0)),  # 1.6 r, ellipse against a disc
]
NUCLEI = SINGLES + [nucleus for pair in PAIRS for nucleus in pair]
TRUTH = np.array([(row, col) for row, col, *_ in NUCLEI], float)


def _ellipse(row: float, col: float, a: float, b: float, angle: float) -> np.ndarray:
    rr, cc = np.mgrid[:SIZE, :SIZE]
    u = (cc - col) * np.cos(angle) + (rr - row) * np.sin(angle)
    v = -(cc - col) * np.sin(angle) + (rr - row) * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def make_field(seed: int, nuclei: Sequence[tuple[float, ...]] = tuple(NUCLEI)) -> np.ndarray:
    """uint16 field: uneven background (600-700), noise, textured nuclei of 1800-4000 counts."""
    rng = np.random.default_rng(seed)
    signal = np.zeros((SIZE, SIZE))
    for nucleus in nuclei:
        level = rng.uniform(1800, 4000)
        texture = ndi.gaussian_filter(rng.normal(0, 0.15, (SIZE, SIZE)), 2) * 3
        signal = np.maximum(signal, _ellipse(*nucleus) * level * (1 + texture))
    signal = ndi.gaussian_filter(signal, 1.0)  # the microscope's blur
    rows, cols = np.mgrid[:SIZE, :SIZE] / SIZE
    background = 600 + 70 * cols + 30 * rows
    image = background + signal + rng.normal(0, 30, (SIZE, SIZE))
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def _matches(found: pd.DataFrame, truth: np.ndarray, tol: float = 3.0) -> np.ndarray:
    """For each true centre, the number of detections within ``tol`` pixels."""
    points = found[["Nuclei_Location_Center_Y", "Nuclei_Location_Center_X"]].to_numpy()
    dist = np.linalg.norm(truth[:, None, :] - points[None, :, :], axis=2)
    return (dist <= tol).sum(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", ["otsu", "li"])
def test_every_nucleus_found_once_and_pairs_split(seed: int, threshold: str) -> None:
    found = detect_nuclei(make_field(seed), NucleusParams(threshold=threshold))
    assert list(found.columns) == list(COLUMNS)
    assert len(found) == len(TRUTH)  # nothing spurious, no pair left merged
    assert (_matches(found, TRUTH) == 1).all()


def test_centres_areas_and_order() -> None:
    found = detect_nuclei(make_field(0))
    x, y, area = (found[column] for column in COLUMNS)
    assert found.equals(found.sort_values([COLUMNS[1], COLUMNS[0]]))  # by (Y, X)
    disc = np.argmin(np.hypot(x - 30, y - 30))  # the disc of radius 10 at (30, 30)
    assert np.hypot(x[disc] - 30, y[disc] - 30) < 0.5
    assert area[disc] == pytest.approx(np.pi * 10**2, rel=0.15)
    assert area.dtype == np.int64


def test_min_distance_merges_close_markers() -> None:
    found = detect_nuclei(make_field(0), NucleusParams(min_distance=25))  # pairs are 16-17 apart
    assert len(found) == len(SINGLES) + len(PAIRS)
    assert (_matches(found, TRUTH[: len(SINGLES)]) == 1).all()


def test_area_filter_drops_speck_and_blob() -> None:
    speck, blob = (150, 30, 3, 3, 0.0), (170, 160, 45, 45, 0.0)  # ~28 px² and ~6400 px²
    image = make_field(3, nuclei=[*SINGLES[:3], speck, blob])
    found = detect_nuclei(image)
    assert len(found) == 3 and (_matches(found, TRUTH[:3]) == 1).all()
    loose = detect_nuclei(image, NucleusParams(min_area=10, max_area=10_000))
    assert (_matches(loose, np.array([[150.0, 30.0], [170.0, 160.0]])) == 1).all()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "image",
    [
        make_field(4, nuclei=[]),  # noisy, uneven background only
        np.zeros((64, 64), np.uint16),
        np.full((64, 64), 700, np.uint16),
    ],
    ids=["background", "zeros", "constant"],
)
def test_empty_fields_give_an_empty_frame(image: np.ndarray) -> None:
    found = detect_nuclei(image)
    assert found.empty and list(found.columns) == list(COLUMNS)


def test_bad_input_and_settings() -> None:
    with pytest.raises(DetectionError, match=r"2-D.*\(2, 8, 8\)"):
        detect_nuclei(np.zeros((2, 8, 8)))
    with pytest.raises(DetectionError, match=r"\(0, 5\)"):
        detect_nuclei(np.zeros((0, 5)))
    with pytest.raises(CellclrError, match="unknown threshold"):
        NucleusParams(threshold="mean")
    with pytest.raises(DetectionError, match="min_area"):
        NucleusParams(min_area=100, max_area=10)


def test_read_locations(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    pd.DataFrame(
        {
            "ImageNumber": [1, 1],
            "Nuclei_Location_Center_X": [10.5, 3],
            "Nuclei_Location_Center_Y": [4, 7.25],
        }
    ).to_csv(path, index=False)
    locations = read_locations(path)
    assert list(locations.columns) == ["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]
    assert locations.to_numpy().tolist() == [[10.5, 4.0], [3.0, 7.25]]
    path.write_text("Nuclei_Location_Center_X,Nuclei_Location_Center_Y\n")
    assert read_locations(path).empty


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (None, "not found"),
        ("", "cannot read"),
        ("Nuclei_Location_Center_X,Other\n1,2\n", "lacks column.*Nuclei_Location_Center_Y"),
        (
            "Nuclei_Location_Center_X,Nuclei_Location_Center_Y\n1,2\n3,\n",
            "Nuclei_Location_Center_Y has 1 missing.*row 2",
        ),
        ("Nuclei_Location_Center_X,Nuclei_Location_Center_Y\nabc,2\n", "Center_X has 1"),
    ],
    ids=["missing-file", "empty-file", "missing-column", "nan", "not-a-number"],
)
def test_read_locations_errors(tmp_path: Path, text: str | None, pattern: str) -> None:
    path = tmp_path / "site_B02_1.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DetectionError, match=pattern) as error:
        read_locations(path)
    assert "site_B02_1.csv" in str(error.value)


def test_our_nuclei_against_cellprofilers(field, tmp_path):
    # every nucleus detected is kept (boxes at the edge padded), so the cells are the detections
    assert crop(tmp_path, "crops", "--no-illumination", "--edge", "pad") == 0
    found = CropStore(tmp_path / "crops").cells[XY].to_numpy()
    assert 30 <= len(found) <= 60  # about 45 visible: whole ones and some cut by the edge
    table = pd.read_parquet(TABLE)
    theirs = table[XY].to_numpy()
    distance = np.array([np.hypot(*(found - t).T).min() for t in theirs])
    singles = table["Metadata_Nuclei_Number_Object_Number"] != 6
    assert (distance[singles.to_numpy()] < 6).all(), distance
    # CellProfiler's object 6 is one half of a single bean-shaped nucleus that its shape
    # declumping cut in two (objects 5 and 6: 6 touches 5 along 39% of its outline and has
    # 578 px², the other nuclei 748-1863; the other channels show one cell, one nucleus).
    # We find that nucleus whole: one detection between the halves, 13 px from 6's centre.
    six = table[~singles].iloc[0]
    assert six["Nuclei_Neighbors_FirstClosestObjectNumber_Adjacent"] == 5
    assert six["Nuclei_Neighbors_PercentTouching_Adjacent"] > 30
    near = np.hypot(*(found - six[XY].to_numpy(float)).T)
    assert (near < 30).sum() == 1 and near.min() < 15


def test_eager_declumping_splits_the_nucleus_cellprofiler_split(field, tmp_path):
    # a lower threshold and a shallower split depth cut that bean-shaped nucleus as CellProfiler
    # did: then all five of its nuclei have one of ours within 6 px (defaults keep it whole)
    eager = ["--set", "crop.nucleus_threshold=li", "--set", "crop.nucleus_split_depth=0.25"]
    assert crop(tmp_path, "crops", "--no-illumination", "--edge", "pad", *eager) == 0
    found = CropStore(tmp_path / "crops").cells[XY].to_numpy()
    assert 30 <= len(found) <= 60
    theirs = pd.read_parquet(TABLE)[XY].to_numpy()
    distance = np.array([np.hypot(*(found - t).T).min() for t in theirs])
    assert (distance < 6).all(), distance
