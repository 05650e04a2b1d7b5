"""Counter-based random numbers for augmentations: every draw is a hash of (seed, epoch, the cell's
position in the epoch's global order, the view, the parameter, the element), computed as batched
tensor operations on the training device.

So a cell's views do not depend on which process or which batch slice it lands in: one process
with batch B and N processes with B/N each see the same views, and a resumed run needs no
generator state. The hash is Chris Wellons' ``lowbias32``, evaluated on 32-bit values held in
int64 tensors (products wrap, and the mask keeps the low 32 bits, which are exact).
"""

from __future__ import annotations

import torch

MASK = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # separates the streams of consecutive indices
TWO_POW_24 = float(2**24)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit hash of each element (int64 tensor of values in [0, 2**32))."""
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & MASK
    x = ((x ^ (x >> 15)) * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def mix(key: torch.Tensor, value: int | torch.Tensor) -> torch.Tensor:
    """A new key from a key and a value (an int, or a tensor broadcast against ``key``)."""
    return hash32((key ^ hash32((torch.as_tensor(value) * GOLDEN + 1) & MASK)) & MASK)


def cell_keys(seed: int, epoch: int, positions: torch.Tensor, view: int) -> torch.Tensor:
    """One key per cell: ``positions`` (int64) are the cells' places in the epoch's global
    order; ``view`` tells a cell's views apart."""
    base = mix(mix(mix(torch.tensor(seed & MASK), seed >> 32), epoch), view)
    return mix(base.to(positions.device), positions.long())


class KeyedRandom:
    """Random numbers for a batch, one independent stream per sample key."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys  # (B,) int64

    def __len__(self) -> int:
        return len(self.keys)

    def bits(self, draw: int, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape) 32-bit hashes for parameter ``draw`` (of the ``rows`` only, if given)."""
        keys = self.keys if rows is None else self.keys[rows]
        keys = mix(keys, draw).view(-1, *([1] * len(shape)))
        count = 1
        for s in shape:
            count *= s
        element = torch.arange(count, device=keys.device, dtype=torch.int64).view(1, *shape)
        return mix(keys, element) if shape else keys.view(-1)

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
        total = (h & 0xFF) + ((h >> 8) & 0xFF) + ((h >> 16) & 0xFF) + (h >> 24)
        return (total.float() - 510.0) / 147.80
