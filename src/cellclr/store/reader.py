"""Reading a crop store: crops from memory-mapped per-plate arrays, and the intensity statistics
each plate is normalised with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, CROP_FILE, CROP_ROW, PLATE, WELL
from cellclr.store.format import (
    FORMAT_VERSION,
    HIGH_PCT,
    LOW_PCT,
    NORMALIZE_MODES,
    StoreError,
)
from cellclr.store.integrity import RECORD, check_plate_file


@dataclass(frozen=True)
class Normalization:
    """Per-cell group codes and the low/high intensity of each group and channel; or, with
    ``per_cell``, each crop scaled by its own percentiles (``crop_percentiles``)."""

    group_of_cell: np.ndarray  # (n_cells,) int64 index into low/high
    low: np.ndarray  # (n_groups, n_channels) float32
    high: np.ndarray  # (n_groups, n_channels) float32
    source: pd.DataFrame  # per plate: which statistics it uses
    per_cell: bool = False


def crop_percentiles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each crop's own low and high percentiles (``LOW_PCT``, ``HIGH_PCT``) per channel, as
    numpy's linear interpolation gives them: (n, C) each."""
    flat = x.reshape(*x.shape[:2], -1)
    low, high = np.percentile(flat, [LOW_PCT, HIGH_PCT], axis=2)
    return low.astype(np.float32), high.astype(np.float32)


class CropStore:
    """Read access to a crop store; crops come from memory-mapped arrays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_meta(self.path)
        self.channels: list[str] = meta["channels"]
        self.crop_shape: tuple[int, int, int] = tuple(meta["crop_shape"])
        self.id: str = meta["id"]
        self._record: dict | None = meta.get(RECORD)  # None: a store from before records
        self.cells = read_part(self.path, "cells.parquet")
        missing = [c for c in (CROP_FILE, CROP_ROW) if c not in self.cells]
        if missing:
            raise StoreError(f"{self.path / 'cells.parquet'}: lacks the columns {missing}")
        self.files = sorted(self.cells[CROP_FILE].unique())
        self._arrays: list[np.ndarray] | None = None
        self.file_of = pd.Categorical(self.cells[CROP_FILE], self.files).codes.astype(np.int64)
        self.row_of = self.cells[CROP_ROW].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def arrays(self) -> list[np.ndarray]:
        if self._arrays is None:
            rows = np.zeros(len(self.files), np.int64)
            np.maximum.at(rows, self.file_of, self.row_of + 1)
            self._arrays = [self._open(f, int(n)) for f, n in zip(self.files, rows, strict=True)]
        return self._arrays

    def _open(self, name: str, rows: int) -> np.ndarray:
        """A plate's crops, memory-mapped, checked against the index (``rows`` at least) and
        against the size and modification time recorded when the store was finalised."""
        path = self.path / name
        if not path.is_file():
            raise StoreError(f"the store at {self.path} is incomplete: missing {name}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise StoreError(f"{path}: truncated or corrupt crop file ({e})") from None
        if not isinstance(array, np.ndarray):
            raise StoreError(f"{path}: corrupt crop file (not an .npy array)")
        if array.dtype != np.uint16 or array.shape[1:] != self.crop_shape or len(array) < rows:
            raise StoreError(
                f"{path}: corrupt crop file: holds {array.dtype} {array.shape}, the index needs "
                f"uint16 ({rows} or more, {', '.join(map(str, self.crop_shape))})"
            )
        check_plate_file(self.path, name, self._record)
        return array

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The crops of the given cells, in that order, as uint16 (n, C, H, W)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.crop_shape), dtype=np.uint16)
        files = self.file_of[indices]
        rows = self.row_of[indices]
        for f in np.unique(files):
            where = np.flatnonzero(files == f)
            order = np.argsort(rows[where], kind="stable")
            out[where[order]] = self.arrays[f][rows[where[order]]]
        return out

    def normalization(self, mode: str = "plate", min_cells: int = 100) -> Normalization:
        """Choose intensity statistics per plate (or well, or cell).

        ``plate``: each plate's own, falling back to its batch's and then to the overall ones
        when it has fewer than ``min_cells`` cells (few cells give unreliable statistics);
        ``batch``: each batch's (falling back to overall); ``global``: overall; ``well``: the
        statistics of all the cells of each well (read from the crops now), falling back to its
        plate's, batch's and the overall ones below ``min_cells``; ``cell``: each crop scaled
        by its own percentiles (no plate, batch or well effect on intensities is left, and no
        absolute intensity either); ``none``: raw counts scaled by 1/65535.
        """
        if mode not in NORMALIZE_MODES:
            raise StoreError(f"unknown normalisation {mode!r}: choose {', '.join(NORMALIZE_MODES)}")
        plates = self.cells[PLATE].astype(str)
        plate_codes, plate_names = pd.factorize(plates, sort=True)
        n_ch = len(self.channels)
        if mode in ("none", "cell"):
            low = np.zeros((len(plate_names), n_ch), np.float32)
            high = np.full((len(plate_names), n_ch), 65535.0, np.float32)
            source = pd.DataFrame({PLATE: plate_names, "level": mode})
            codes = plate_codes.astype(np.int64)
            return Normalization(codes, low, high, source, per_cell=mode == "cell")
        if mode == "well":
            return self._well_normalization(min_cells)
        stats = read_part(self.path, "normalization.parquet")
        table = {
            (lv, k): g.set_index("channel").loc[self.channels]
            for (lv, k), g in stats.groupby(["level", "key"])
        }
        batch_of_plate = self.cells.assign(_p=plates).groupby("_p")[BATCH].first().astype(str)
        low = np.empty((len(plate_names), n_ch), np.float32)
        high = np.empty_like(low)
        levels = []
        for i, plate in enumerate(plate_names):
            candidates = [("plate", plate), ("batch", batch_of_plate[plate]), ("global", "all")]
            candidates = candidates[["plate", "batch", "global"].index(mode) :]
            for level, key in candidates:
                t = table[(level, key)]
                if level == "global" or int(t["n_cells"].iloc[0]) >= min_cells:
                    break
            low[i], high[i] = t["low"].to_numpy(), t["high"].to_numpy()
            levels.append(level)
        high = np.maximum(high, low + 1.0)  # a constant channel must not divide by zero
        source = pd.DataFrame({PLATE: plate_names, "level": levels})
        return Normalization(plate_codes.astype(np.int64), low, high, source)

    def _well_normalization(self, min_cells: int) -> Normalization:
        """``normalization("well")``: per well, the percentiles of its cells' pixels (at most
        ``STATS_MAX_CELLS`` cells and about ``STATS_MAX_PIXELS`` pixels per channel, as for
        plates), else its plate's (batch's, overall) statistics below ``min_cells``."""
        from cellclr.store.writer import group_percentiles

        keys = [PLATE, WELL]
        wells = self.cells[keys].astype(str)
        codes = wells.groupby(keys, sort=True).ngroup().to_numpy(np.int64)
        names = wells.drop_duplicates().sort_values(keys).reset_index(drop=True)
        counts = np.bincount(codes, minlength=len(names))
        plates = self.normalization("plate", min_cells)
        plate_of_well = np.zeros(len(names), np.int64)
        plate_of_well[codes] = plates.group_of_cell
        low, high = plates.low[plate_of_well].copy(), plates.high[plate_of_well].copy()
        levels = plates.source["level"].to_numpy(object)[plate_of_well]
        own = counts >= min_cells
        if own.any():
            cells = self.cells.assign(_well=codes)[own[codes]]
            arrays = {f: self.arrays[self.files.index(f)] for f in cells[CROP_FILE].unique()}
            for well, (lo, hi) in group_percentiles(cells, arrays, "_well").items():
                low[well], high[well], levels[well] = lo, hi, "well"
        high = np.maximum(high, low + 1.0)
        return Normalization(codes, low, high, names.assign(level=levels))


def _read_meta(store: Path) -> dict:
    """``store.json``: what the store holds; a missing or corrupt one is a clear error."""
    path = store / "store.json"
    if not path.is_file():
        if (store / "plates").is_dir():
            raise StoreError(
                f"the store at {store} is incomplete: missing store.json (its writing stopped "
                "before the end: run the crop or import again)"
            )
        raise StoreError(f"{store} is not a crop store (no store.json)")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: corrupt store description (not JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise StoreError(f"{path}: unsupported format version {version}")
    missing = [k for k in ("channels", "crop_shape", "id") if k not in meta]
    if missing:
        raise StoreError(f"{path}: corrupt store description (no {', '.join(missing)})")
    return meta


def read_part(store: Path, name: str) -> pd.DataFrame:
    """One of the store's tables; a missing or unreadable one is an error naming it."""
    path = store / name
    if not path.is_file():
        raise StoreError(f"the store at {store} is incomplete: missing {name}")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise StoreError(f"{path}: corrupt table ({e})") from None
