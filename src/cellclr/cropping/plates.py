"""One plate of the crop stage: its illumination functions, its sites' crops streamed into
``plates/<stem>.npy``, and the record of its sites (``sites/<stem>.parquet``).

A plate is done once its site record is written, which happens last, after its crops and its
rows of the cell index are in place; before a plate's crops are replaced, its record and index
are removed first. So a run stopped at any point (an error, a kill) leaves each plate either
done, with files that match, or not done, and the next run crops only the plates not done.

Jobs of an array share the plates out by name (``shard_plates``), and each finds out from the
plates' records which plates are not finished yet (``pending_plates``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cellclr.columns import PLATE, SITE, SITE_KEYS, WELL
from cellclr.config import CropConfig
from cellclr.cropping.sites import CropError, Site, process_site_task, read_site
from cellclr.cropping.sources import nucleus_channel
from cellclr.metadata import metadata_columns
from cellclr.outputs import write_parquet
from cellclr.pixels.illumination import IlluminationAccumulator, save_illumination
from cellclr.pixels.nuclei import NucleusParams
from cellclr.store.format import plate_file_stem
from cellclr.store.writer import NpyAppender, plate_files, write_digest, write_plate_index
from cellclr.tables.loaddata import illumination_columns

log = logging.getLogger(__name__)

RECORDS = "sites"  # sites/<stem>.parquet: the sites of each finished plate
RECORD_COLUMNS = [*SITE_KEYS, "cells", "off_edge", "outside_field", "illumination", "status"]


def record_file(folder: Path, plate: str) -> Path:
    return folder / RECORDS / f"{plate_file_stem(plate)}.parquet"


def plate_done(folder: Path, plate: str) -> bool:
    """Whether the plate's crops, index rows and site record are all in place."""
    npy, index = plate_files(folder, plate)
    return npy.is_file() and index.is_file() and record_file(folder, plate).is_file()


def site_records(folder: Path) -> pd.DataFrame:
    """The site records of every finished plate in ``folder``."""
    parts = [pd.read_parquet(p) for p in sorted((folder / RECORDS).glob("*.parquet"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)


def missing_files(table: pd.DataFrame, channels: list[str]) -> pd.Series:
    """Per site, the first of its channel files that does not exist ('' when complete)."""

    def first_missing(row: pd.Series) -> str:
        return next((row[c] for c in channels if not os.path.isfile(row[c])), "")

    return table.apply(first_missing, axis=1)


def shard_plates(plates: Iterable[str], shard: int, shards: int) -> list[str]:
    """The plates of shard ``shard`` (0 to ``shards`` - 1): the plates sorted by name, plate k
    going to shard k % ``shards``. Only the names count, so every job given the same table and
    selection agrees on its share, the shares are disjoint and cover every plate, and their
    sizes differ by one plate at most."""
    return sorted({str(p) for p in plates})[shard::shards]


def pending_plates(folder: Path, selected: pd.DataFrame, channels: list[str]) -> list[str]:
    """The plates of ``selected`` not finished in ``folder``: with a selected site that no
    plate record holds, or one recorded as skipped whose files have all arrived since (a rerun
    crops it). Reads the records of every plate; checks files only of sites recorded skipped."""
    records = site_records(folder).drop_duplicates(SITE_KEYS).set_index(SITE_KEYS)["status"]
    status = records.reindex(pd.MultiIndex.from_frame(selected[SITE_KEYS])).to_numpy()
    pending = pd.isna(status)
    skipped = ~pending & (status != "ok")
    if skipped.any():
        pending[skipped] = (missing_files(selected[skipped], channels) == "").to_numpy()
    return sorted(set(selected.loc[pending, PLATE]))


def record_skipped(folder: Path, skipped: list[dict]) -> None:
    """Record the plates that have skipped sites and no record: none of their selected sites
    could be read (missing files), so there is nothing to crop, and they count as finished
    (``pending_plates``); a later run crops them once their files are there."""
    table = pd.DataFrame(skipped, columns=RECORD_COLUMNS)
    for plate, rows in table.groupby(PLATE, sort=True):
        record = record_file(folder, str(plate))
        if not record.exists():
            record.parent.mkdir(exist_ok=True)
            write_parquet(rows.reset_index(drop=True), record)


def locations_file(folder: str, plate: str, well: str, site: int) -> str:
    """``folder/<plate>/<well>-<site>-Nuclei.csv``, which must lie inside ``folder``: a plate or
    well name such as ``../x`` may not read files elsewhere."""
    root = os.path.abspath(folder)
    path = os.path.normpath(os.path.join(root, plate, f"{well}-{site}-Nuclei.csv"))
    if not Path(path).is_relative_to(root):
        raise CropError(
            f"plate {plate!r}, well {well!r}: its locations file {path} would lie outside the "
            f"locations folder {folder}: rename the plate or well"
        )
    return path


def plate_illumination(
    folder: Path, plate: str, sites: pd.DataFrame, channels: list[str], c: CropConfig
) -> Path | None:
    """The plate's illumination file, estimated from its complete sites the first time; None
    (no correction, logged) when switched off or with too few sites for a reliable estimate:
    a few fields average cell density, not illumination."""
    if not c.illumination:
        return None
    path = folder / "illum" / f"{plate_file_stem(plate)}.npz"
    if path.is_file():
        return path
    if len(sites) < c.illumination_min_sites:
        log.warning(
            f"plate {plate}: {len(sites)} complete sites, fewer than "
            f"crop.illumination_min_sites={c.illumination_min_sites}: no illumination correction"
        )
        return None
    _estimate_illumination(plate, sites, channels, c.illumination_sites, path)
    return path


def _estimate_illumination(
    plate: str, sites: pd.DataFrame, channels: list[str], n_sites: int, path: Path
) -> None:
    """Illumination functions from up to ``n_sites`` sites spread evenly over the plate."""
    pick = np.unique(np.linspace(0, len(sites) - 1, min(n_sites, len(sites))).round().astype(int))
    accumulators: list[IlluminationAccumulator] = []
    for _, row in sites.iloc[pick].iterrows():
        images = read_site([row[ch] for ch in channels])
        if not accumulators:
            accumulators = [IlluminationAccumulator(images[0].shape) for _ in channels]
        elif images[0].shape != accumulators[0].shape:
            raise CropError(
                f"{row[channels[0]]}: image shape {images[0].shape} differs from that of the "
                f"other fields of plate {plate} ({accumulators[0].shape}): the fields of a plate "
                "must all have one size"
            )
        for acc, image in zip(accumulators, images, strict=True):
            acc.add(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_illumination(
        path, {ch: acc.function() for ch, acc in zip(channels, accumulators, strict=True)}
    )


def site_tasks(
    plate: str,
    sites: pd.DataFrame,
    channels: list[str],
    c: CropConfig,
    params: NucleusParams,
    illum: Path | None,
    nuclei: dict[tuple, pd.DataFrame] | None = None,
) -> list[tuple[Site, int, NucleusParams]]:
    """The work of each of the plate's sites, for ``process_site_task``: ``illum`` is the
    plate's own illumination file (CellProfiler's functions, when the table names them and
    ``crop.illumination`` is on, take its place); ``nuclei`` the centres of each field when a
    locations table gives them."""
    meta_cols = metadata_columns(sites)
    cp_columns = illumination_columns(sites, channels) if c.illumination else []
    nucleus = nucleus_channel(channels, c)
    tasks = []
    for _, row in sites.iterrows():
        key = (str(plate), str(row[WELL]), int(row[SITE]))
        locations = None
        if c.locations and nuclei is None:
            locations = locations_file(c.locations, plate, key[1], key[2])
        site = Site(
            [row[ch] for ch in channels],
            tuple(channels),
            {k: row[k] for k in meta_cols},
            None if cp_columns or not illum else str(illum),
            locations,
            nucleus=nucleus,
            cp_illumination=tuple(row[col] for col in cp_columns) if cp_columns else None,
            nuclei=None if nuclei is None else nuclei[key],
            pad=c.edge == "pad",
        )
        tasks.append((site, c.box, params))
    return tasks


def check_cellprofiler_illumination(sites: pd.DataFrame, channels: list[str]) -> bool:
    """Whether the sites' table names CellProfiler illumination functions; if so, every one
    named must exist (an error names the first missing file and its channel)."""
    columns = illumination_columns(sites, channels)
    for channel, column in zip(channels, columns, strict=False):
        for path in sites[column].unique():
            if not os.path.isfile(path):
                raise CropError(
                    f"CellProfiler illumination function not found: {path} (channel {channel}, "
                    f"named by the table's FileName_Illum{channel}): put it there, or pass "
                    "--no-illumination (crop.illumination = false), or drop the table's "
                    "FileName_Illum columns to estimate our own"
                )
    return bool(columns)


def crop_plate(
    folder: Path,
    plate: str,
    tasks: list[tuple[Site, int, NucleusParams]],
    skipped: list[dict],
    pool: Executor | None,
    bar: tqdm,
) -> list[dict]:
    """Crop the plate's sites (in ``pool`` when given) into its files in ``folder/plates``,
    then record it as done with its sites' records and ``skipped`` (its incomplete sites);
    return the records of the sites cropped."""
    npy, index = plate_files(folder, plate)
    results = (
        pool.map(process_site_task, tasks, chunksize=2) if pool else map(process_site_task, tasks)
    )
    tmp = npy.with_name(f".{npy.name}.tmp")
    _, box, _ = tasks[0]
    writer = NpyAppender(tmp, (len(tasks[0][0].channels), box, box))
    cells, records = [], []
    try:
        for result in results:
            writer.append(result.crops)
            cells.append(result.cells)
            records.append(result.record)
            bar.update()
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: the error raised is the one to tell
            writer.close()
        tmp.unlink(missing_ok=True)  # no half-written plate is left behind
        raise
    digest = writer.close()
    if writer.count == 0:
        tmp.unlink()
        raise CropError(f"plate {plate}: no cells were found in {len(tasks)} sites")
    record = record_file(folder, plate)
    if index.is_file():  # the plate is in the store: the store is invalid until finalized
        (folder / "store.json").unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    index.unlink(missing_ok=True)
    os.replace(tmp, npy)
    write_digest(npy, digest)
    write_plate_index(folder, plate, pd.concat(cells, ignore_index=True))
    record.parent.mkdir(exist_ok=True)
    write_parquet(pd.DataFrame([*records, *skipped], columns=RECORD_COLUMNS), record)
    return records
