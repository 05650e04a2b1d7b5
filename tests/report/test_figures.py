"""The report's figures (cellclr.report.figures)."""

import numpy as np
import pytest

from cellclr.errors import CellclrError
from cellclr.report.figures import channel_colours, composite


def test_composite_draws_dna_blue_tubulin_green_actin_red() -> None:
    crops = np.zeros((3, 3, 4, 4), np.uint16)
    for c in range(3):
        crops[c, c] = 1000  # crop c is bright in channel c only
    rgb = composite(crops)
    assert rgb.shape == (3, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert [int(rgb[c].mean(axis=(0, 1)).argmax()) for c in range(3)] == [2, 1, 0]
    five = composite(np.random.default_rng(0).integers(0, 4000, (2, 5, 4, 4)).astype(np.uint16))
    assert five.shape == (2, 4, 4, 3) and five.max() <= 1


def test_composite_gives_each_of_five_channels_its_own_colour() -> None:
    crops = np.zeros((5, 5, 4, 4), np.uint16)
    for c in range(5):
        crops[c, c] = 1000  # crop c is bright in channel c only
    rgb = composite(crops)
    colours = channel_colours(5)
    for c in range(5):
        np.testing.assert_allclose(rgb[c].mean(axis=(0, 1)), colours[c], atol=1e-6)
    assert len({tuple(c) for c in colours}) == 5
    for n in range(1, 9):  # any count up to 8: distinct colours, one channel in grey
        assert len({tuple(c) for c in channel_colours(n)}) == n
    assert channel_colours(1).tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(CellclrError, match="1 to 8 channels"):
        channel_colours(9)
