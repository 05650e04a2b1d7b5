"""Illumination functions estimated from a synthetic plate with known vignetting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cellclr.errors import CellclrError
from cellclr.pixels.illumination import (
    IlluminationAccumulator,
    IlluminationError,
    correct,
    load_illumination,
    save_illumination,
)

SHAPE = (192, 256)
ROWS, COLS = np.mgrid[: SHAPE[0], : SHAPE[1]]
_Y = (ROWS - (SHAPE[0] - 1) / 2) / ((SHAPE[0] - 1) / 2)
_X = (COLS - (SHAPE[1] - 1) / 2) / ((SHAPE[1] - 1) / 2)
VIGNETTING = 1 - 0.2 * (_X**2 + _Y**2)  # quadratic falloff: 1 in the centre, 0.6 in the corners
TRUTH = VIGNETTING / VIGNETTING.mean()


def make_image(rng: np.random.Generator, n_cells: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """uint16 field: (background 1000 + sparse bright cells of +2000) x vignetting + noise,
    and the mask of its cells."""
    centres = rng.uniform((0, 0), SHAPE, (n_cells, 2))
    row, col = centres[:, 0, None, None], centres[:, 1, None, None]
    cells = ((ROWS - row) ** 2 + (COLS - col) ** 2 <= 4.5**2).any(axis=0)
    image = VIGNETTING * (1000 + 2000 * cells) + rng.normal(0, 20, SHAPE)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16), cells


@pytest.fixture(scope="module")
def plate_function() -> np.ndarray:
    rng = np.random.default_rng(0)
    accumulator = IlluminationAccumulator(SHAPE)
    for _ in range(60):
        accumulator.add(make_image(rng)[0])
    assert accumulator.count == 60
    return accumulator.function()


def test_function_matches_the_vignetting(plate_function: np.ndarray) -> None:
    assert plate_function.dtype == np.float32 and plate_function.shape == SHAPE
    assert plate_function.mean() == pytest.approx(1.0, abs=1e-5)
    error = np.abs(plate_function / TRUTH - 1)
    assert error.mean() < 0.015
    assert np.percentile(error, 99) < 0.05  # the worst pixels: the outermost corners
    corner, centre = plate_function[:24, :24].mean(), plate_function[84:108, 116:140].mean()
    assert corner / centre == pytest.approx(
        TRUTH[:24, :24].mean() / TRUTH[84:108, 116:140].mean(), abs=0.04
    )


def test_correction_flattens_the_background(plate_function: np.ndarray) -> None:
    image, cells = make_image(np.random.default_rng(99))
    corrected = correct(image, plate_function)
    assert corrected.dtype == np.uint16 and corrected.shape == SHAPE
    background, flat = image[~cells].astype(float), corrected[~cells].astype(float)
    raw_cv, flat_cv = background.std() / background.mean(), flat.std() / flat.mean()
    assert raw_cv > 0.08  # the vignetting
    assert flat_cv < 0.35 * raw_cv  # little more than the 2% noise is left


def test_bright_debris_is_clipped() -> None:
    rng = np.random.default_rng(1)
    images = [make_image(rng)[0] for _ in range(8)]
    clean, dirty = IlluminationAccumulator(SHAPE), IlluminationAccumulator(SHAPE)
    for image in images:
        clean.add(image)
    images[3][100:104, 50:54] = 65535  # a speck of debris saturates the camera
    for image in images:
        dirty.add(image.astype(np.float64))  # any dtype
    assert np.abs(dirty.function() / clean.function() - 1).max() < 0.01


def test_correct_rounds_and_clips_to_uint16() -> None:
    illum = np.array([[0.5, 2.0], [1.0, 4.0]], np.float32)
    image = np.array([[40000, 7], [-3.0, 10]])
    assert correct(image, illum).tolist() == [[65535, 4], [0, 2]]  # 80000, 3.5, -3, 2.5
    assert correct(image, illum).dtype == np.uint16


def test_shape_and_value_errors() -> None:
    accumulator = IlluminationAccumulator(SHAPE)
    with pytest.raises(IlluminationError, match="no image"):
        accumulator.function()
    with pytest.raises(IlluminationError, match=r"\(100, 100\).*\(192, 256\)"):
        accumulator.add(np.zeros((100, 100), np.uint16))
    with pytest.raises(CellclrError, match=r"\(192, 256\).*\(256, 192\)"):
        correct(np.zeros(SHAPE, np.uint16), np.ones((256, 192), np.float32))
    with pytest.raises(IlluminationError, match="positive"):
        correct(np.zeros((2, 2)), np.array([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(IlluminationError, match="at least"):
        IlluminationAccumulator((4, 4))
    accumulator.add(np.zeros(SHAPE))
    with pytest.raises(IlluminationError, match="average to 0"):
        accumulator.function()
    with pytest.raises(IlluminationError, match="smoothing"):
        accumulator.function(smoothing=1.0)


def test_save_and_load_round_trip(tmp_path: Path, plate_function: np.ndarray) -> None:
    path = tmp_path / "Week2_24381.npz"
    functions = {"DNA": plate_function, "Tubulin": plate_function[::-1], "file": np.eye(3)}
    save_illumination(path, functions)
    loaded = load_illumination(path)
    assert list(loaded) == list(functions)
    for name, values in functions.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], values.astype(np.float32))
    save_illumination(path, {"DNA": np.ones((4, 4))})  # replaces the file
    assert list(load_illumination(path)) == ["DNA"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Week2_24381.npz"]  # no temp file left


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(IlluminationError, match=r"not found.*nowhere\.npz"):
        load_illumination(tmp_path / "nowhere.npz")
    with pytest.raises(IlluminationError, match="2-D"):
        save_illumination(tmp_path / "bad.npz", {"DNA": np.ones(5)})


def _text(path: Path) -> None:
    path.write_bytes(b"not a zip")


def _truncated(path: Path) -> None:
    save_illumination(path, {"DNA": np.ones((64, 64))})
    path.write_bytes(path.read_bytes()[:100])


def _npy(path: Path) -> None:
    with path.open("wb") as file:
        np.save(file, np.ones((3, 3)))


def _one_dimensional(path: Path) -> None:
    with path.open("wb") as file:
        np.savez(file, DNA=np.ones(3))


@pytest.mark.parametrize("write", [_text, _truncated, _npy, _one_dimensional])
def test_corrupt_files_are_named(tmp_path: Path, write: Callable[[Path], None]) -> None:
    path = tmp_path / "plate.npz"
    write(path)
    with pytest.raises(IlluminationError, match=r"illumination file .*plate\.npz"):
        load_illumination(path)
