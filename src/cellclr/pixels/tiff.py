"""Reading one field of view of one channel from a TIFF file, as microscopes write them.

Any compression tifffile decodes (LZW, deflate/zlib, zstd, ... through ``imagecodecs``), plain
TIFF or OME-TIFF, any field size. A file must hold one 2-D plane: a multi-page, multi-channel,
z-stack or RGB file is refused (one plane per file is what CellProfiler's LoadData, DeepProfiler
and our image tables name), rather than guessing which plane was meant. Pixels are counts:
unsigned 16-bit (12-bit cameras store their counts in 16-bit words, read as they are) or 8-bit
(kept as 0..255, not stretched); signed, 32-bit and floating-point pixels are refused, never
cast or wrapped.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import tifffile

from cellclr.errors import CellclrError


class ImageReadError(CellclrError, ValueError):
    """An image file that is missing or cannot be read as one 2-D plane of counts."""


# little- and big-endian TIFF, and BigTIFF
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_image(path: str) -> np.ndarray:
    """The 2-D image of counts in the TIFF at ``path``, as uint16; a missing, unreadable,
    truncated or multi-plane file, or pixels that are not unsigned 8/16-bit counts, are errors
    naming the file."""
    if not os.path.isfile(path):
        raise ImageReadError(f"missing image file: {path}")
    with open(path, "rb") as f:
        if f.read(4) not in TIFF_MAGIC:  # what it holds instead is not ours to print
            raise ImageReadError(
                f"unreadable TIFF {path}: not a TIFF file (it does not start with a TIFF header)"
            )
    try:
        with tifffile.TiffFile(path) as tif:
            image = _single_plane(tif, path)
    except ImageReadError:
        raise
    except Exception as e:  # tifffile raises many types for truncated or corrupt files
        raise ImageReadError(_read_failure(path, e)) from None
    image = np.squeeze(image)
    if image.size == 0:
        raise ImageReadError(f"unreadable TIFF {path}: truncated or corrupt (it holds no pixels)")
    if image.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D image, got shape {image.shape}")
    if image.dtype.kind != "u" or image.dtype.itemsize > 2:
        raise ImageReadError(
            f"{path}: {image.dtype} pixels; cellclr reads unsigned 16-bit (or 8-bit) counts: "
            "convert the images to 16-bit counts (uint16 TIFFs)"
        )
    return image.astype(np.uint16, copy=False)


def _single_plane(tif: tifffile.TiffFile, path: str) -> np.ndarray:
    """The pixels of the file's first series, refused (before decoding) if it holds more than
    one 2-D plane."""
    if not tif.series:
        raise ImageReadError(f"unreadable TIFF {path}: truncated or corrupt (it holds no image)")
    series = tif.series[0]
    extra = {ax: n for ax, n in zip(series.axes, series.shape, strict=True) if ax not in "YX"}
    planes = math.prod(n for n in extra.values())
    if planes > 1:
        what = "RGB/colour samples" if extra.get("S", 1) > 1 else f"{planes} planes"
        raise ImageReadError(
            f"{path}: holds {what} (shape {tuple(series.shape)}, axes {series.axes!r}"
            f"{', OME-TIFF' if tif.is_ome else ''}); cellclr reads one 2-D plane per file: "
            "save each channel (and z-plane, time point) as a TIFF of its own"
        )
    return series.asarray()


def _read_failure(path: str, error: Exception) -> str:
    """The message for a TIFF that tifffile could not decode: a missing codec says so. Bytes
    of the file that tifffile quotes are left out: the message never shows file contents."""
    text = re.sub(r"""\bb(['"]).*?(?<!\\)\1""", "<bytes>", f"{type(error).__name__}: {error}")
    if "imagecodecs" in str(error):
        return (
            f"{path}: its compression needs the imagecodecs package, which is not installed "
            f"or lacks that codec ({text}): pip install imagecodecs"
        )
    return f"unreadable TIFF {path}: truncated or corrupt ({text})"
