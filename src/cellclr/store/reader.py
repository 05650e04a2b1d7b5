"""Reading a crop store: crops from memory-mapped per-plate arrays, and the intensity statistics
each plate is normalised with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.store.format import FORMAT_VERSION, NORMALIZE_MODES, StoreError


@dataclass(frozen=True)
class Normalization:
    """Per-cell group codes and the low/high intensity of each group and channel."""

    group_of_cell: np.ndarray  # (n_cells,) int64 index into low/high
    low: np.ndarray  # (n_groups, n_channels) float32
    high: np.ndarray  # (n_groups, n_channels) float32
    source: pd.DataFrame  # per plate: which statistics it uses


class CropStore:
    """Read access to a crop store; crops come from memory-mapped arrays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise StoreError(f"{self.path} is not a crop store (no store.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{meta_path}: unsupported format version {meta.get('format_version')}"
            )
        self.channels: list[str] = meta["channels"]
        self.crop_shape: tuple[int, int, int] = tuple(meta["crop_shape"])
        self.id: str = meta["id"]
        self.cells = pd.read_parquet(self.path / "cells.parquet")
        self.files = sorted(self.cells["Metadata_CropFile"].unique())
        self._arrays: list[np.ndarray] | None = None
        self.file_of = pd.Categorical(self.cells["Metadata_CropFile"], self.files).codes.astype(
            np.int64
        )
        self.row_of = self.cells["Metadata_CropRow"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def arrays(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = []
            for f in self.files:
                path = self.path / f
                if not path.is_file():
                    raise StoreError(f"crop file missing from the store: {path}")
                self._arrays.append(np.load(path, mmap_mode="r"))
        return self._arrays

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
        """Choose intensity statistics per plate.

        ``plate``: each plate's own, falling back to its batch's and then to the overall ones
        when it has fewer than ``min_cells`` cells (few cells give unreliable statistics);
        ``batch``: each batch's (falling back to overall); ``global``: overall; ``none``:
        raw counts scaled by 1/65535.
        """
        if mode not in NORMALIZE_MODES:
            raise StoreError(f"unknown normalisation {mode!r}: choose {', '.join(NORMALIZE_MODES)}")
        plates = self.cells["Metadata_Plate"].astype(str)
        plate_codes, plate_names = pd.factorize(plates, sort=True)
        n_ch = len(self.channels)
        if mode == "none":
            low = np.zeros((len(plate_names), n_ch), np.float32)
            high = np.full((len(plate_names), n_ch), 65535.0, np.float32)
            source = pd.DataFrame({"Metadata_Plate": plate_names, "level": "none"})
            return Normalization(plate_codes.astype(np.int64), low, high, source)
        stats = pd.read_parquet(self.path / "normalization.parquet")
        table = {
            (lv, k): g.set_index("channel").loc[self.channels]
            for (lv, k), g in stats.groupby(["level", "key"])
        }
        batch_of_plate = (
            self.cells.assign(_p=plates).groupby("_p")["Metadata_Batch"].first().astype(str)
        )
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
        source = pd.DataFrame({"Metadata_Plate": plate_names, "level": levels})
        return Normalization(plate_codes.astype(np.int64), low, high, source)
