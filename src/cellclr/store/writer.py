"""Writing a crop store: plates one at a time (``write_plate``, or ``NpyAppender`` when a
plate's cell count is known only at the end), then ``finalize_store`` (index, intensity
statistics, ``store.json``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, CROP_FILE, CROP_ROW, PLATE
from cellclr.errors import naming
from cellclr.metadata import batch_from_plate
from cellclr.outputs import atomic_file, write_json, write_parquet
from cellclr.store.format import (
    FORMAT_VERSION,
    HIGH_PCT,
    LOW_PCT,
    STATS_MAX_CELLS,
    STATS_MAX_PIXELS,
    StoreError,
    plate_file_stem,
)
from cellclr.store.integrity import RECORD, plate_records


def _npy_header_text(shape: tuple[int, ...]) -> bytes:
    return repr({"descr": "<u2", "fortran_order": False, "shape": shape}).encode("latin1")


def _npy_header(shape: tuple[int, ...], size: int) -> bytes:
    """A version 1.0 ``.npy`` header for uint16 data, padded to exactly ``size`` bytes."""
    text = _npy_header_text(shape)
    return b"\x93NUMPY\x01\x00" + (size - 10).to_bytes(2, "little") + text.ljust(size - 11) + b"\n"


class NpyAppender:
    """Write a uint16 ``.npy`` of crops whose count is known only at the end, a block at a time.

    The header reserves room for any count and is rewritten by ``close``, so memory holds one
    block, not the plate."""

    def __init__(self, path: Path, crop_shape: tuple[int, ...]) -> None:
        self.path, self.crop_shape, self.count = path, tuple(crop_shape), 0
        longest = 11 + len(_npy_header_text((10**15, *self.crop_shape))) + 1
        self._size = -(-longest // 64) * 64  # numpy aligns headers to 64 bytes
        self._fh = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._fh.write(_npy_header((0, *self.crop_shape), self._size))
        self._hash = hashlib.sha256()

    def append(self, crops: np.ndarray) -> None:
        if crops.dtype != np.uint16 or crops.shape[1:] != self.crop_shape:
            raise StoreError(f"{self.path}: crops must be uint16 of shape (n, {self.crop_shape})")
        data = np.ascontiguousarray(crops).tobytes()
        with naming(self.path):
            self._fh.write(data)
        self._hash.update(data)
        self.count += len(crops)

    def close(self) -> str:
        """Finish the file; return the SHA-256 of its crops (see ``write_digest``)."""
        with naming(self.path):
            try:
                self._fh.seek(0)
                self._fh.write(_npy_header((self.count, *self.crop_shape), self._size))
            finally:
                self._fh.close()  # flushes: where a full disk shows
        self._hash.update(repr((self.count, *self.crop_shape)).encode())
        return self._hash.hexdigest()


def write_digest(npy: Path, digest: str) -> None:
    """Keep the content hash of a plate's crops beside them (``<plate>.npy.sha256``), computed
    while writing, so that the store's id covers the pixels without reading them again."""
    with atomic_file(npy.with_name(npy.name + ".sha256")) as tmp:
        tmp.write_text(digest + "\n")


def _digest(npy: Path) -> str:
    """The recorded content hash of a plate's crops, or (for a store written before hashes
    were kept) one computed from the file."""
    recorded = npy.with_name(npy.name + ".sha256")
    if recorded.is_file():
        return recorded.read_text().strip()
    array = np.load(npy, mmap_mode="r")
    h = hashlib.sha256()
    for start in range(0, len(array), 4096):
        h.update(np.ascontiguousarray(array[start : start + 4096]).tobytes())
    h.update(repr(array.shape).encode())
    return h.hexdigest()


def plate_files(folder: Path, plate: str) -> tuple[Path, Path]:
    """A plate's crop array and index files, ``folder/plates/<stem>.npy`` and ``.parquet``.

    Two plates must never share files: an index already there that holds another plate is an
    error (``plate_file_stem`` makes that practically impossible; this makes it certain)."""
    stem = plate_file_stem(plate)
    npy, index = folder / "plates" / f"{stem}.npy", folder / "plates" / f"{stem}.parquet"
    if index.is_file():
        held = pd.read_parquet(index, columns=[PLATE])[PLATE]
        if len(held) and str(held.iloc[0]) != str(plate):
            raise StoreError(
                f"plates {held.iloc[0]!r} and {plate!r} map to the same file {npy}: "
                "rename one of them"
            )
    return npy, index


def write_plate_index(folder: Path, plate: str, cells: pd.DataFrame) -> None:
    """Write a plate's rows of the cell index, pointing at its ``.npy`` (``plate_files``)."""
    npy, index = plate_files(folder, plate)
    rows = cells.reset_index(drop=True).copy()
    rows[CROP_FILE] = f"plates/{npy.name}"
    rows[CROP_ROW] = np.arange(len(rows), dtype=np.int64)
    write_parquet(rows, index)


def write_plate(folder: Path, plate: str, images: np.ndarray, cells: pd.DataFrame) -> None:
    """Write one plate's crops and cell rows into ``folder/plates`` (each file atomically)."""
    if images.dtype != np.uint16 or images.ndim != 4:
        raise StoreError(f"plate {plate}: crops must be uint16 (cells, channels, H, W)")
    if len(images) != len(cells):
        raise StoreError(f"plate {plate}: {len(images)} crops but {len(cells)} cell rows")
    (folder / "plates").mkdir(parents=True, exist_ok=True)
    npy, _ = plate_files(folder, plate)
    with atomic_file(npy) as tmp:
        writer = NpyAppender(tmp, images.shape[1:])
        writer.append(images)
        digest = writer.close()
    write_digest(npy, digest)
    write_plate_index(folder, plate, cells)


def finalize_store(folder: Path, channels: list[str], seed: int = 0) -> None:
    """Join the per-plate indexes, compute normalisation statistics, write ``store.json`` (last:
    its id hashes the index, the channel names and every plate's pixels)."""
    (folder / "store.json").unlink(missing_ok=True)  # a store is valid only once finalized
    parts = sorted((folder / "plates").glob("*.parquet"))
    if not parts:
        raise StoreError(f"{folder}: no plates were written")
    cells = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    _check_one_plate_per_file(folder, cells)
    if BATCH not in cells:
        cells[BATCH] = cells[PLATE].map(batch_from_plate)
    write_parquet(cells, folder / "cells.parquet")
    arrays = {f: np.load(folder / f, mmap_mode="r") for f in cells[CROP_FILE].unique()}
    shapes = {a.shape[1:] for a in arrays.values()}
    if len(shapes) != 1:
        raise StoreError(f"{folder}: plates have crops of different shapes {sorted(shapes)}")
    shape = shapes.pop()
    if shape[0] != len(channels):
        raise StoreError(f"{folder}: crops have {shape[0]} channels but {len(channels)} names")
    write_parquet(_intensity_stats(cells, arrays, channels, seed), folder / "normalization.parquet")
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(cells, index=False).values.tobytes())
    digest.update(repr(list(channels)).encode())
    for f in sorted(arrays):
        digest.update(f"{f}:{_digest(folder / f)}".encode())
    write_json(
        {
            "format_version": FORMAT_VERSION,
            "channels": list(channels),
            "crop_shape": [int(s) for s in shape],
            "n_cells": len(cells),
            "id": digest.hexdigest()[:16],
            RECORD: plate_records(folder, list(arrays)),
        },
        folder / "store.json",
    )


def _check_one_plate_per_file(folder: Path, cells: pd.DataFrame) -> None:
    """Every crop file holds one plate, and every crop of it belongs to one cell."""
    plates = cells.groupby(CROP_FILE)[PLATE].nunique()
    if (plates > 1).any():
        raise StoreError(f"{folder}: {plates.idxmax()} holds crops of {plates.max()} plates")
    if cells.duplicated([CROP_FILE, CROP_ROW]).any():
        raise StoreError(f"{folder}: two cells of the index point at the same crop")


def _intensity_stats(
    cells: pd.DataFrame, arrays: dict[str, np.ndarray], channels: list[str], seed: int
) -> pd.DataFrame:
    """Percentiles of pixel values per channel, for each plate, each batch and overall."""
    rng = np.random.default_rng(seed)
    rows = []
    groups = [("plate", PLATE), ("batch", BATCH), ("global", None)]
    for level, column in groups:
        every = cells.assign(_all="all") if column is None else cells
        sizes = every.groupby(column or "_all").size()
        stats = group_percentiles(every, arrays, column or "_all", rng)
        for key, (low, high) in stats.items():
            for c, name in enumerate(channels):
                rows.append((level, str(key), name, int(sizes[key]), float(low[c]), float(high[c])))
    return pd.DataFrame(rows, columns=["level", "key", "channel", "n_cells", "low", "high"])


def group_percentiles(
    cells: pd.DataFrame,
    arrays: dict[str, np.ndarray],
    column: str,
    rng: np.random.Generator | None = None,
) -> dict:
    """Per value of ``column``: the ``LOW_PCT`` and ``HIGH_PCT`` percentiles of each channel
    over the pixels of its cells (at most ``STATS_MAX_CELLS`` of them, drawn with ``rng``, and
    an even subsample of about ``STATS_MAX_PIXELS`` pixels per channel), as float arrays."""
    rng = rng or np.random.default_rng(0)
    out = {}
    for key, group in cells.groupby(column, sort=True):
        take = group
        if len(group) > STATS_MAX_CELLS:
            take = group.iloc[np.sort(rng.choice(len(group), STATS_MAX_CELLS, replace=False))]
        pixels = np.concatenate(
            [arrays[f][np.sort(g[CROP_ROW].to_numpy())] for f, g in take.groupby(CROP_FILE)]
        )
        flat = pixels.transpose(1, 0, 2, 3).reshape(pixels.shape[1], -1)
        step = max(1, flat.shape[1] // STATS_MAX_PIXELS)  # an even subsample bounds the cost
        out[key] = np.percentile(flat[:, ::step], [LOW_PCT, HIGH_PCT], axis=1)
    return out
