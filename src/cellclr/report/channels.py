"""Which channels the example-cell composites show, and in which colours.

``report.channels`` (in the run's config) names the channels to show, in the order in which
they take the colours; empty: every channel of the store when it has at most
``DEFAULT_SHOWN``, else its first ``DEFAULT_SHOWN`` (with a note naming the others). The
``i``-th shown channel is drawn in ``PALETTE[i]``: hues as far apart as additive mixing
allows, DNA-blue, green and red first, as BBBC021's DNA, tubulin and actin are usually
shown; one channel alone is drawn in grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellclr.errors import CellclrError

# name, RGB in [0, 1]: channel i of the shown ones is drawn in colour i, additively
PALETTE: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("blue", (0.1, 0.35, 1.0)),
    ("green", (0.0, 1.0, 0.0)),
    ("red", (1.0, 0.0, 0.0)),
    ("magenta", (1.0, 0.0, 1.0)),
    ("cyan", (0.0, 1.0, 1.0)),
    ("yellow", (1.0, 1.0, 0.0)),
    ("orange", (1.0, 0.5, 0.0)),
    ("violet", (0.6, 0.3, 1.0)),
)
GREY = ("grey", (1.0, 1.0, 1.0))  # a single channel, as a greyscale image
MAX_SHOWN = len(PALETTE)  # more would share colours
DEFAULT_SHOWN = 6  # the palette's well-separated part; more channels need report.channels


class ChannelError(CellclrError):
    """``report.channels`` that the crop store cannot satisfy."""


@dataclass(frozen=True)
class Shown:
    """The channels of the composites: indices into the store's channels, names, colours."""

    indices: list[int]
    names: list[str]
    colours: np.ndarray  # (len(indices), 3) RGB in [0, 1]
    colour_names: list[str]
    hidden: list[str]  # the store's channels left out


def colours(n: int) -> tuple[np.ndarray, list[str]]:
    """The RGB colours (n, 3) and names of ``n`` shown channels."""
    if not 1 <= n <= MAX_SHOWN:
        raise ChannelError(f"composites show 1 to {MAX_SHOWN} channels, not {n}")
    chosen = [GREY] if n == 1 else list(PALETTE[:n])
    return np.array([rgb for _, rgb in chosen], dtype=np.float32), [name for name, _ in chosen]


def select(available: Sequence[str], wanted: Sequence[str], store: object = "") -> Shown:
    """The channels to show: ``wanted`` (``report.channels``) by name, else the default; an
    unknown or repeated name, or too many, is an error naming the store's channels."""
    available = list(available)
    where = f"the crop store {store} has" if store else "the crop store has"
    listing = f"{where} {', '.join(available)}"
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ChannelError(f"report.channels: unknown channel {', '.join(unknown)}: {listing}")
    if len(set(wanted)) != len(wanted):
        raise ChannelError(f"report.channels names a channel twice: {', '.join(wanted)}")
    if len(wanted) > MAX_SHOWN:
        raise ChannelError(
            f"report.channels: at most {MAX_SHOWN} channels in one composite, not {len(wanted)}"
        )
    names = list(wanted) or available[:DEFAULT_SHOWN]
    rgb, colour_names = colours(len(names))
    hidden = [name for name in available if name not in names]
    return Shown([available.index(n) for n in names], names, rgb, colour_names, hidden)
