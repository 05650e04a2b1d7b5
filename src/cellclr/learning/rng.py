"""Counter-based random numbers for augmentations: every draw is a hash of (seed, epoch, the cell's
position in the epoch's global order, the view, the parameter, the element), computed as batched
tensor operations on the training device.

So a cell's views do not depend on which process or which batch slice it lands in: one process
with batch B and N processes with B/N each see the same views, and a resumed run needs no
generator state. The hash is Chris Wellons' ``lowbias32``, evaluated on 32-bit values held in
int64 tensors (products wrap, and the mask keeps the low 32 bits, which are exact).

Nothing here waits for the device: the parts of a key that do not depend on the cell (seed,
epoch, view, parameter) are hashed as Python integers and enter the tensor arithmetic as
scalars, the keys of every view of an epoch are drawn in one go (``view_keys``), and a batch's
per-sample parameters are drawn together (``KeyedRandom``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

MASK = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # separates the streams of consecutive indices
TWO_POW_24 = float(2**24)
DRAWS = 32  # parameters a KeyedRandom draws in bulk (ids 0..31; larger ids are drawn alone)


def hash32(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """A well-mixed 32-bit hash of each element (int64 tensor of values in [0, 2**32)), in
    ``x`` itself if ``inplace``. Each pass works in place, its shifts in one scratch tensor:
    on a CPU, a new tensor of a batch's size costs more in page faults than the arithmetic."""
    x = x if inplace else x.clone()
    scratch = torch.bitwise_right_shift(x, 16)
    x.bitwise_xor_(scratch).mul_(0x7FEB352D).bitwise_and_(MASK)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=scratch))
    x.mul_(0x846CA68B).bitwise_and_(MASK)
    return x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=scratch))


def hash32_int(x: int) -> int:
    """``hash32`` of one Python integer in [0, 2**32)."""
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & MASK
    x = ((x ^ (x >> 15)) * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def mix_int(key: int, value: int) -> int:
    """``mix`` of two Python integers."""
    return hash32_int(key ^ hash32_int((value * GOLDEN + 1) & MASK))


def mix(key: torch.Tensor | int, value: int | torch.Tensor) -> torch.Tensor:
    """A new key from a key and a value (ints, or tensors broadcast against each other)."""
    if isinstance(value, int):
        value = hash32_int((value * GOLDEN + 1) & MASK)
    else:
        value = hash32((value * GOLDEN + 1) & MASK)
    return hash32(key ^ value, inplace=True)  # both are 32-bit: so is their xor


def _base(seed: int, epoch: int, view: int) -> int:
    return mix_int(mix_int(mix_int(seed & MASK, seed >> 32), epoch), view)


def cell_keys(seed: int, epoch: int, positions: torch.Tensor, view: int) -> torch.Tensor:
    """One key per cell: ``positions`` (int64) are the cells' places in the epoch's global
    order; ``view`` tells a cell's views apart."""
    return mix(_base(seed, epoch, view), positions.long())


def view_keys(seed: int, epoch: int, positions: torch.Tensor, views: Sequence[int]) -> torch.Tensor:
    """``cell_keys`` of several views at once: (len(views), *positions.shape), on the device
    of ``positions``; the positions are hashed once for all views."""
    spread = hash32((positions.long() * GOLDEN + 1) & MASK)
    return torch.stack([hash32(spread ^ _base(seed, epoch, v)) for v in views])


def _spread(count: int, device: torch.device) -> torch.Tensor:
    """The hashed element indices 0..count-1 (the value part of ``mix``), cached per device."""
    key = (count, str(device))
    if key not in _SPREAD:
        if len(_SPREAD) > 64:
            _SPREAD.clear()
        element = torch.arange(count, device=device, dtype=torch.int64)
        _SPREAD[key] = hash32((element * GOLDEN + 1) & MASK)
    return _SPREAD[key]


_SPREAD: dict[tuple[int, str], torch.Tensor] = {}


class KeyedRandom:
    """Random numbers for a batch, one independent stream per sample key. The keys of the
    per-sample parameters (ids below ``DRAWS``) are drawn together on first use."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys  # (B,) int64
        self._params: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _key(self, draw: int) -> torch.Tensor:
        """(B,) keys of parameter ``draw``: ``mix(keys, draw)``."""
        if draw >= DRAWS:
            return mix(self.keys, draw)
        if self._params is None:
            self._params = hash32(self.keys[:, None] ^ _spread(DRAWS, self.keys.device))
        return self._params[:, draw]

    def bits(self, draw: int, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape) 32-bit hashes for parameter ``draw`` (of the ``rows`` only, if given)."""
        keys = self._key(draw)
        keys = keys if rows is None else keys[rows]
        if not shape:
            return keys
        count = 1
        for s in shape:
            count *= s
        element = _spread(count, keys.device).view(1, *shape)
        return hash32(keys.view(-1, *([1] * len(shape))) ^ element, inplace=True)

    def uniform(
        self, draw: int, *shape: int, low: float = 0.0, high: float = 1.0, rows=None
    ) -> torch.Tensor:
        """Uniform floats in [low, high), shaped (B, *shape)."""
        u = (self.bits(draw, *shape, rows=rows) >> 8).float() / TWO_POW_24
        return low + (high - low) * u

    def integers(self, draw: int, high: int) -> torch.Tensor:
        """One integer in [0, high) per sample."""
        return (self.uniform(draw) * high).long().clamp_(max=high - 1)

    def normal(self, draw: int, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Approximately standard normal floats: the sum of the four bytes of one hash,
        standardised (Irwin-Hall with 4 terms; tails end at 3.5 sigma), shaped (B, *shape)."""
        h = self.bits(draw, *shape, rows=rows)
        if sys.byteorder == "little" and h.is_contiguous():
            b = h.view(torch.uint8).view(*h.shape, 8)  # the bytes of each int64, low first
            total = b[..., 0].to(torch.int32).add_(b[..., 1]).add_(b[..., 2]).add_(b[..., 3])
        else:
            total = (h & 0xFF) + ((h >> 8) & 0xFF) + ((h >> 16) & 0xFF) + (h >> 24)
        return total.sub_(510).float().div_(147.80)
