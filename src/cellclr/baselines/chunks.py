"""Measuring a crop store in chunks of cells over a process pool, for the feature baselines.

A chunk is ``(store path, cell indices, low, high)``: its cells and the per-channel intensities
that ``read_scaled`` maps to 0 and 1 (the plate's percentiles, as the learned model sees them).
``map_chunks`` runs a function over the chunks in a pool (``cellclr.workers.process_pool``) or
in this process, in order, with a progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import lru_cache
from typing import TypeVar

import numpy as np

from cellclr.progress import progress_bar
from cellclr.store import CropStore
from cellclr.store.reader import crop_percentiles
from cellclr.workers import process_pool

Chunk = tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]
T = TypeVar("T")


@lru_cache(maxsize=1)
def open_store(path: str) -> CropStore:
    """The store at ``path``, opened once per process."""
    return CropStore(path)


def chunk_tasks(
    store: CropStore, normalize: str, normalize_min_cells: int, batch: int
) -> list[Chunk]:
    """The store's cells in chunks of ``batch``, each with its cells' scaling."""
    norm = store.normalization(normalize, normalize_min_cells)
    n = len(store)
    tasks = []
    for start in range(0, n, batch):
        indices = np.arange(start, min(start + batch, n))
        groups = norm.group_of_cell[indices]
        if norm.per_cell:  # each crop's own statistics, computed where it is read
            tasks.append((str(store.path), indices, None, None))
        else:
            tasks.append((str(store.path), indices, norm.low[groups], norm.high[groups]))
    return tasks


def read_scaled(task: Chunk) -> tuple[CropStore, np.ndarray]:
    """The chunk's store and its crops as float32 ``(x - low) / (high - low)`` (n, C, H, W),
    with the chunk's statistics or, when it has none, each crop's own percentiles."""
    path, indices, low, high = task
    store = open_store(path)
    crops = store.read(indices).astype(np.float32)
    if low is None:
        low, high = crop_percentiles(crops)
        high = np.maximum(high, low + 1.0)
    return store, (crops - low[:, :, None, None]) / (high - low)[:, :, None, None]


def available_cores() -> int:
    """The cores this process may run on (a cluster job's allocation, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_chunks(
    work: Callable[[Chunk], T], tasks: list[Chunk], workers: int, desc: str
) -> Iterator[T]:
    """``work`` of each chunk, in order, over ``workers`` processes (1: in this process), with
    a progress bar counting cells."""
    workers = max(1, min(workers, len(tasks)))
    with ExitStack() as stack:
        total = sum(len(task[1]) for task in tasks)
        bar = stack.enter_context(progress_bar(total=total, desc=desc, unit="cell"))
        if workers > 1:
            results = stack.enter_context(process_pool(workers)).map(work, tasks)
        else:
            stack.callback(open_store.cache_clear)
            results = map(work, tasks)
        for task, part in zip(tasks, results, strict=True):
            bar.update(len(task[1]))
            yield part
