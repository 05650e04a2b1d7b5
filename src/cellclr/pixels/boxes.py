"""Cutting a square box of every channel around each nucleus centre, and boxes near the edge.

A box of side ``box`` has its top-left pixel at ``round(centre) - box // 2`` (row from Y, column
from X). A box that leaves the field of view is handled by ``crop.edge``:

- ``"skip"`` (the default): the cell is left out and counted (``off_edge`` in ``sites.parquet``
  and the summary).
- ``"pad"``: the cell is kept; the part of the box outside the field is filled with zeros (below
  any camera's offset, so real pixels are rarely 0), and the cell index records how many pixels
  of the box (per channel plane) are padding, in ``Metadata_PaddedPixels`` (0 for a box inside
  the field). The column is in ``cells.parquet`` of every store cropped with ``"pad"`` (and only
  there), so padded cells can be told apart or left out: ``cells[cells.Metadata_PaddedPixels ==
  0]``. ``off_edge`` then counts the padded boxes.

In both modes a centre that lies outside the field itself (a locations table that does not
belong to the image) is never cropped: it is counted apart, in ``outside_field``.
"""

from __future__ import annotations

import numpy as np

PADDED = "Metadata_PaddedPixels"


def inside_field(centres: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which (x, y) centres, rounded to a pixel, lie in a field of ``shape`` (rows, columns)."""
    centre = np.round(centres[:, ::-1]).astype(int)
    return (centre >= 0).all(axis=1) & (centre[:, 0] < shape[0]) & (centre[:, 1] < shape[1])


def crop_boxes(
    images: list[np.ndarray], centres: np.ndarray, box: int, pad: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of side ``box`` around each (x, y) centre: the uint16 crops (n, C, box, box), which
    centres were cropped (a boolean mask), and the number of padded pixels of each crop."""
    height, width = images[0].shape
    top_left = np.round(centres[:, ::-1]).astype(int) - box // 2  # (row, col)
    bottom_right = top_left + box
    inside = (top_left >= 0).all(axis=1) & (bottom_right[:, 0] <= height)
    inside &= bottom_right[:, 1] <= width
    kept = inside_field(centres, (height, width)) if pad else inside
    stack = np.stack(images)
    crops = np.zeros((int(kept.sum()), len(images), box, box), dtype=np.uint16)
    padded = np.zeros(len(crops), dtype=np.int64)
    for i, (r, c) in enumerate(top_left[kept]):
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + box, height), min(c + box, width)
        crops[i, :, r0 - r : r1 - r, c0 - c : c1 - c] = stack[:, r0:r1, c0:c1]
        padded[i] = box * box - (r1 - r0) * (c1 - c0)
    return crops, kept, padded
