"""Illumination correction in the spirit of CellProfiler's illumination pipeline.

Per plate and channel, ``IlluminationAccumulator`` averages the images one at a time, each
clipped at its own 99.5th percentile so that bright debris cannot dominate. ``function`` turns
the average into a smooth multiplicative illumination function with mean 1: block-mean
downsampling by 4, heavy Gaussian smoothing, bilinear upsampling. ``correct`` divides by it.
The functions of a plate are stored together in one ``.npz`` file, one array per channel.

The smoothing is a Gaussian-weighted local linear fit: a plane fitted around each pixel under
Gaussian weights, from the pixels inside the image only. Away from the border it is a Gaussian
blur. At the border a plain blur averages the dim corners with the brighter inside (with a falloff
to 60% it under-corrects them by about 12%), and point-reflected padding, which avoids that,
multiplies the noise of the outermost pixels; the fit keeps the slope of the falloff without
either.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellclr.errors import CellclrError
from cellclr.outputs import atomic_file

CLIP_PERCENTILE = 99.5  # each image is clipped here before it is added
BLOCK = 4  # downsampling factor for the smoothing
SMOOTHING_FRACTION = 1 / 8  # default Gaussian sigma: this fraction of the shorter side
MIN_SIDE = 8 * BLOCK  # so that the default smoothing spans a downsampled pixel or more
FLOOR = 0.01  # lowest value of a function (mean 1): correction never gains more than 100x


class IlluminationError(CellclrError, ValueError):
    """Images, an illumination function or a file of them that cannot be used."""


class IlluminationAccumulator:
    """Running robust average of a plate's images of one channel (one float64 image of memory).

    ``add`` each image, then ``function`` gives the float32 illumination function.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        if len(shape) != 2 or min(shape) < MIN_SIDE:
            raise IlluminationError(
                f"illumination images must be 2-D, at least {MIN_SIDE} x {MIN_SIDE}, got {shape}"
            )
        self.shape = (int(shape[0]), int(shape[1]))
        self.count = 0
        self._sum = np.zeros(self.shape, dtype=np.float64)

    def add(self, image: np.ndarray) -> None:
        """Add one 2-D image (any integer or float dtype), clipped at its 99.5th percentile."""
        _check_shape(image.shape, self.shape)
        # the percentile of every 7th pixel: as good for clipping, a tenth of the time
        clip = np.percentile(np.ravel(image)[::7], CLIP_PERCENTILE)
        self._sum += np.minimum(image, clip)
        self.count += 1

    def function(self, smoothing: float | None = None) -> np.ndarray:
        """The illumination function (float32, mean 1): the average, smoothed with Gaussian
        weights of sigma ``smoothing`` full-resolution pixels (default: 1/8 of the shorter side,
        128 px on a 1280 x 1024 field: far wider than a cell, so no cell outline survives)."""
        if self.count == 0:
            raise IlluminationError("no image was added: cannot estimate an illumination function")
        sigma = min(self.shape) * SMOOTHING_FRACTION if smoothing is None else smoothing
        if sigma < BLOCK:
            raise IlluminationError(f"smoothing must be >= {BLOCK} pixels, got {smoothing}")
        small = _block_mean(self._sum / self.count, BLOCK)
        # a plane fitted near a corner can overshoot where the average is far from planar
        # (few fields, cells in the same places); the data's own range bounds it
        fitted = np.clip(_smooth(small, sigma / BLOCK), small.min(), small.max())
        smooth = _upsample(fitted, BLOCK, self.shape)
        mean = smooth.mean()
        if not mean > 0:
            raise IlluminationError(f"the {self.count} image(s) average to {mean}: all dark?")
        return np.maximum(smooth / mean, FLOOR).astype(np.float32)


def _check_shape(image_shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(image_shape) != tuple(expected):
        raise IlluminationError(
            f"image shape {tuple(image_shape)} does not match the illumination shape "
            f"{tuple(expected)}"
        )


def _block_mean(image: np.ndarray, block: int) -> np.ndarray:
    """Mean of each ``block`` x ``block`` tile (edges padded by repetition)."""
    rows, cols = image.shape
    padded = np.pad(image, ((0, -rows % block), (0, -cols % block)), mode="edge")
    tiles = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block)
    return tiles.mean(axis=(1, 3))


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local linear fit at each pixel (see the module docstring)."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    basis = [np.ones_like(image), (rows - rows.mean()) / sigma, (cols - cols.mean()) / sigma]

    def blur(values: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(values, sigma, mode="constant")  # no data outside

    # the weighted normal equations of a plane a + b * row + c * col around every pixel
    gram = np.stack([np.stack([blur(u * v) for v in basis], axis=-1) for u in basis], axis=-2)
    moments = np.stack([blur(u * image) for u in basis], axis=-1)
    plane = np.linalg.solve(gram, moments[..., None])[..., 0]
    return (plane * np.stack(basis, axis=-1)).sum(axis=-1)


def _upsample(image: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by ``block``, tile centres on pixel centres, cut to ``shape``."""
    full = ndi.zoom(image, block, order=1, mode="nearest", grid_mode=True)
    return full[: shape[0], : shape[1]]


def correct(image: np.ndarray, illum: np.ndarray) -> np.ndarray:
    """``image / illum`` as uint16 counts: rounded to the nearest integer (halves to even) and
    clipped to 0..65535, so that a pixel the division lifts above 65535 saturates there."""
    _check_shape(image.shape, illum.shape)
    if not (np.isfinite(illum).all() and (illum > 0).all()):
        raise IlluminationError("an illumination function must be finite and positive")
    corrected = np.rint(np.asarray(image, dtype=np.float32) / illum)
    return np.clip(corrected, 0, 65535).astype(np.uint16)


def save_illumination(path: Path, functions: dict[str, np.ndarray]) -> None:
    """Write a plate's functions (channel name -> 2-D array) to one ``.npz``, atomically."""
    arrays = {name: np.asarray(values, dtype=np.float32) for name, values in functions.items()}
    for name, values in arrays.items():
        if values.ndim != 2:
            raise IlluminationError(f"the {name} function must be 2-D, got shape {values.shape}")
    # written member by member: np.savez(**arrays) breaks on a channel named "file"
    with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, values in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, values, allow_pickle=False)


def load_illumination(path: Path) -> dict[str, np.ndarray]:
    """Read the functions ``save_illumination`` wrote: channel name -> float32 2-D array."""
    path = Path(path)
    if not path.is_file():
        raise IlluminationError(f"illumination file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with loaded as archive:
            functions = {name: archive[name].astype(np.float32) for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise IlluminationError(f"cannot read illumination file {path}: {error}") from error
    for name, values in functions.items():
        if values.ndim != 2:
            raise IlluminationError(f"illumination file {path}: {name} is not a 2-D array")
    return functions


def load_cellprofiler_function(path: str | Path) -> np.ndarray:
    """A CellProfiler illumination function (``<plate>_Illum<Ch>.npy``, an array its SaveImages
    wrote): 2-D, finite and positive, as float32. CellProfiler divides it out
    (CorrectIlluminationApply, "Divide"), as ``correct`` does; its scale does not matter."""
    path = Path(path)
    named = f"CellProfiler illumination function {path}"
    if not path.is_file():
        raise IlluminationError(f"{named} not found")
    try:
        values = np.load(path, allow_pickle=False)
        if not isinstance(values, np.ndarray):
            raise ValueError("not a single .npy array")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise IlluminationError(f"cannot read {named}: {error}") from error
    values = np.squeeze(values)
    if values.ndim != 2 or values.dtype.kind not in "fiu":
        raise IlluminationError(
            f"{named}: expected a 2-D array of numbers, got {values.dtype} of shape {values.shape}"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise IlluminationError(f"{named}: holds values that are not finite and positive")
    return values.astype(np.float32)


def check_function_shape(
    function: np.ndarray, image_shape: tuple[int, ...], function_path: str, image_path: str
) -> None:
    """Refuse an illumination function of another shape than the image, saying when it is the
    image's shape transposed (rows and columns swapped)."""
    if function.shape == tuple(image_shape):
        return
    hint = ""
    if function.shape == tuple(image_shape)[::-1]:
        hint = " (rows and columns swapped: it was saved transposed)"
    raise IlluminationError(
        f"illumination function {function_path} is {function.shape[0]} x {function.shape[1]} "
        f"(rows x columns) but image {image_path} is {image_shape[0]} x {image_shape[1]}{hint}: "
        "the function must be made from images of this size and orientation"
    )
