from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellclr.baselines.classic import (
    classic_features,
    feature_names,
    otsu_thresholds,
    segment,
    write_classic_embeddings,
)
from cellclr.store import CropStore
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files

CHANNELS = ["DNA", "Tubulin", "Actin"]
SIZE = 68


def ellipse(ry: float, rx: float, size: int = SIZE) -> np.ndarray:
    rows, cols = np.indices((size, size)) - (size - 1) / 2
    return (rows / ry) ** 2 + (cols / rx) ** 2 <= 1


def cell_crop(nucleus: np.ndarray, cell: np.ndarray, v: float = 0.6, u: float = 0.4) -> np.ndarray:
    """A 3-channel crop: ``nucleus`` at ``v`` in DNA, ``cell`` at ``u`` in the other channels."""
    crop = np.zeros((3, SIZE, SIZE), np.float32)
    crop[0][nucleus] = v
    crop[1:, cell] = u
    return crop


def test_otsu_matches_skimage() -> None:
    from skimage.filters import threshold_otsu

    images = np.random.default_rng(0).gamma(2.0, size=(4, 30, 30))
    expected = [threshold_otsu(im) for im in images]
    np.testing.assert_allclose(otsu_thresholds(images), expected)


def test_disc_nucleus_and_cell() -> None:
    r, big = 10, 22
    feats = classic_features(cell_crop(ellipse(r, r), ellipse(big, big))[None], CHANNELS).iloc[0]
    assert feats["Nuclei_AreaShape_Area"] == pytest.approx(np.pi * r**2, rel=0.04)
    assert feats["Nuclei_Intensity_MeanIntensity_DNA"] == pytest.approx(0.6, rel=0.03)
    assert feats["Cells_AreaShape_Area"] == pytest.approx(np.pi * big**2, rel=0.04)
    assert feats["Cytoplasm_Intensity_MeanIntensity_Actin"] == pytest.approx(0.4, rel=0.03)
    assert feats["Nuclei_AreaShape_Eccentricity"] < 0.15
    assert feats["Nuclei_AreaShape_MajorAxisLength"] == pytest.approx(2 * r, rel=0.05)
    assert feats["Cells_AreaShape_Solidity"] > 0.95


def test_ellipse_is_eccentric() -> None:
    crop = cell_crop(ellipse(14, 7), ellipse(25, 12))
    feats = classic_features(crop[None], CHANNELS).iloc[0]
    assert feats["Nuclei_AreaShape_Eccentricity"] == pytest.approx(np.sqrt(1 - 0.25), abs=0.05)
    assert feats["Cells_AreaShape_Eccentricity"] > 0.8


def test_texture_tells_stripes_from_smooth() -> None:
    smooth = cell_crop(ellipse(8, 8), ellipse(25, 25))
    striped = smooth.copy()
    striped[1:, ::4] *= 2.0  # bright lines every fourth row
    feats = classic_features(np.stack([smooth, striped]), CHANNELS)
    contrast = feats["Cells_Texture_Contrast_Tubulin_3"]
    assert contrast[1] > contrast[0] + 1
    assert (
        feats["Cells_Texture_Homogeneity_Actin_3"][1]
        < feats["Cells_Texture_Homogeneity_Actin_3"][0]
    )


@pytest.mark.parametrize("n_channels", [1, 5])
def test_any_channel_count(n_channels: int) -> None:
    channels = [f"C{i}" for i in range(n_channels)]
    crops = np.random.default_rng(1).random((3, n_channels, 40, 40)).astype(np.float32)
    crops[:, :, 14:26, 14:26] += 1
    feats = classic_features(crops, channels)
    assert list(feats.columns) == feature_names(channels)
    assert len(feats.columns) == 14 + 31 * n_channels
    assert np.isfinite(feats.to_numpy()).all()


def test_degenerate_crops_fall_back_to_median_disc() -> None:
    good = cell_crop(ellipse(9, 9), ellipse(20, 20))
    crops = np.stack([good, np.zeros_like(good), np.full_like(good, 0.3)])
    _, _, fallback = segment(crops)
    assert fallback.tolist() == [False, True, True]
    feats = classic_features(crops, CHANNELS)
    assert np.isfinite(feats.to_numpy()).all()
    area = feats["Nuclei_AreaShape_Area"]
    assert area[1] == pytest.approx(area[0], rel=0.1) and area[2] == area[1]
    alone = classic_features(np.zeros((1, 2, 32, 32)), ["DNA", "Actin"])
    assert np.isfinite(alone.to_numpy()).all()
    assert alone["Nuclei_AreaShape_Area"][0] == pytest.approx(np.pi * 4**2, rel=0.2)


def test_write_classic_embeddings(tmp_path: Path) -> None:
    npz, csv = make_crop_files(tmp_path / "input", size=24)
    store = import_crops(npz, csv, tmp_path / "store", CHANNELS)
    cells = CropStore(store).cells
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = pd.read_parquet(write_classic_embeddings(store, tmp_path / "one", workers=1, batch=10))
    two = pd.read_parquet(write_classic_embeddings(store, tmp_path / "two", workers=2, batch=10))
    pd.testing.assert_frame_equal(one, two)
    meta = [c for c in cells.columns if c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(one[meta], cells[meta].reset_index(drop=True))
    feats = one.drop(columns=meta)
    assert list(feats.columns) == feature_names(CHANNELS)
    values = feats.to_numpy(np.float64)
    assert np.isfinite(values).all()
    varies = values.std(0) > 0
    assert varies.sum() > len(feature_names(CHANNELS)) // 2
    np.testing.assert_allclose(values.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(0)[varies], 1, atol=1e-4)
