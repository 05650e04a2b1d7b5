"""Batches of crops for training and embedding: read from the memory-mapped store in a
background thread, moved to the device as uint16, normalised there."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cellclr.store import CropStore, Normalization
from cellclr.store.format import HIGH_PCT, LOW_PCT


class CropBatches:
    """Iterate over normalised float batches (B, C, H, W) on ``device``: channels-last, for an
    encoder, or contiguous (``channels_last=False``), for the augmentations, which sample from
    it faster on a CPU and make new tensors anyway.

    Each batch is scaled per cell and channel to ``(x - low) / (high - low)`` with the
    statistics of the cell's plate (or well), or its own percentiles (``normalize = "cell"``,
    computed on the device: ``crop_percentiles``); see ``CropStore.normalization``.
    """

    def __init__(
        self,
        store: CropStore,
        norm: Normalization,
        batches: Sequence[np.ndarray],
        device: torch.device,
        prefetch: int = 3,
        channels_last: bool = True,
    ) -> None:
        self.store, self.batches, self.device, self.prefetch = store, batches, device, prefetch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.groups = torch.from_numpy(np.ascontiguousarray(norm.group_of_cell).copy())
        self.low = torch.from_numpy(norm.low).to(device)
        self.scale = torch.from_numpy(1.0 / (norm.high - norm.low)).to(device)
        self.per_cell = norm.per_cell

    def __len__(self) -> int:
        return len(self.batches)

    def _read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        crops = torch.from_numpy(self.store.read(indices))
        groups = self.groups[torch.from_numpy(np.asarray(indices, dtype=np.int64))]
        if self.device.type == "cuda":
            crops, groups = crops.pin_memory(), groups.pin_memory()
        return crops, groups

    def __iter__(self) -> Iterator[torch.Tensor]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for indices in self.batches:
                    if stop.is_set():
                        return
                    q.put(self._read(indices))
                q.put(None)
            except BaseException as e:  # handed to the consumer, raised there
                q.put(e)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                crops, groups = item
                crops = crops.to(self.device, non_blocking=True)
                groups = groups.to(self.device, non_blocking=True)
                x = crops.float()
                if self.per_cell:
                    low, high = crop_percentiles(x)
                    x = (x - low[:, :, None, None]) / (high - low).clamp_min(1.0)[:, :, None, None]
                else:
                    low, scale = self.low[groups], self.scale[groups]
                    x = (x - low[:, :, None, None]) * scale[:, :, None, None]
                yield x.contiguous(memory_format=self.memory_format)
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def crop_percentiles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each crop's own ``LOW_PCT`` and ``HIGH_PCT`` percentiles per channel, (B, C) each, with
    numpy's linear interpolation, on the crops' device (no host sync). Each percentile needs
    only the few values at one end of a crop's sorted pixels: ``topk`` finds them, several
    times faster than sorting every pixel, with the same values."""
    flat = x.flatten(2)
    n = flat.shape[2]
    out = []
    for pct in (LOW_PCT, HIGH_PCT):
        position = pct / 100 * (n - 1)
        below = int(position)
        above = min(below + 1, n - 1)
        weight = position - below
        if above < n - 1 - below:  # nearer the smallest: those up to `above`, ascending
            values = flat.topk(above + 1, dim=2, largest=False).values
            low, high = values[..., below], values[..., above]
        else:  # nearer the largest: those down to `below`, descending
            values = flat.topk(n - below, dim=2, largest=True).values
            low, high = values[..., n - 1 - below], values[..., n - 1 - above]
        out.append(low * (1 - weight) + high * weight)
    return out[0], out[1]
