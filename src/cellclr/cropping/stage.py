"""``cellclr crop``: raw fields of view -> illumination correction -> nuclei -> crop store.

Plate by plate (``cellclr.cropping.plates``): a plate's illumination functions are estimated from
a sample of its sites and saved (``illum/<stem>.npz``); then a process pool handles its sites,
one site's images at a time per worker, and the main process streams the crops into
``plates/<stem>.npy``; the plate's site record (``sites/<stem>.parquet``) marks it done. A plate
done with all its selected sites is skipped, so a rerun (after an error or a kill, or one job
per plate on a cluster, with ``--plates``) continues where the last stopped; a plate with new
sites (more wells, files that arrived since) is cropped again with the sites it held. The crop
store is (re)built from the finished plates at the end.

A store made with other settings (another image table, box, detection, ...) is replaced only
with ``overwrite``, and only once the new one is complete: the new one is built in
``<out>.partial`` (which a rerun continues) and renamed into place at the end.

Across machines, ``shard=(i, n)`` (``--shard I/N``, one job of an array) crops only shard i's
share of the selected plates (``shard_plates``: sorted by name, plate k to shard k % n) into
``out`` itself. The jobs claim ``out`` with one ``crop.json``, created whole and only once (a
job that finds another fingerprint there refuses), and each writes only its own plates' files.
A job that ends with every selected plate finished finalises the store; finalising writes each
file atomically and identically from the plates' files, which no job changes any more, so two
jobs ending together do no harm. A run without ``shard`` crops what is missing and finalises.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import PLATE, SITE_KEYS
from cellclr.config import Config, ConfigLike, CropConfig, as_config
from cellclr.cropping.plates import (
    RECORD_COLUMNS,
    check_cellprofiler_illumination,
    crop_plate,
    missing_files,
    pending_plates,
    plate_done,
    plate_illumination,
    record_skipped,
    shard_plates,
    site_records,
    site_tasks,
)
from cellclr.cropping.sites import CropError
from cellclr.cropping.sources import check_treatments, load_sites, nucleus_channel, nucleus_table
from cellclr.fingerprint import fingerprint
from cellclr.metadata import metadata_columns
from cellclr.outputs import (
    OutputError,
    OutputExistsError,
    check_apart,
    check_new_output,
    partial_path,
    swap_in,
    write_parquet,
)
from cellclr.pixels.nuclei import NucleusParams
from cellclr.progress import progress_bar
from cellclr.stages import Stage
from cellclr.store import finalize_store
from cellclr.tables.image_table import select_sites
from cellclr.tables.loaddata import illumination_columns
from cellclr.tables.locations import locations_digest
from cellclr.workers import process_pool

log = logging.getLogger(__name__)
CROP_MANIFEST = "crop.json"
LAYOUT = "plate-files-2"  # of the plates' files: an older store is cropped again (--overwrite)


def crop(
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Crop the images that ``cfg.crop`` names (a BBBC021 folder, an image table or a LoadData
    table, with a plate map) into the crop store at ``out``; return the summary (see
    ``crop_sites``)."""
    cfg = as_config(cfg)
    table, channels = load_sites(cfg.crop)
    return crop_sites(table, channels, out, cfg, overwrite=overwrite, shard=shard)


def check_shard(shard: int, shards: int) -> tuple[int, int]:
    """Shard I of N: N at least 1, I from 0 to N-1 (SLURM's array task id with --array=0-N-1)."""
    if shards < 1:
        raise CropError(f"shard {shard}/{shards}: N, the number of shards, must be at least 1")
    if not 0 <= shard < shards:
        raise CropError(
            f"shard {shard}/{shards}: I counts from 0 and must lie in 0..{shards - 1} (with "
            f"SLURM: --array=0-{shards - 1}, --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    return shard, shards


def table_fingerprint(
    table: pd.DataFrame, channels: list[str], cfg: Config, nuclei: dict | None = None
) -> str:
    """The crop stage's fingerprint: the table (file names, not folders, also of CellProfiler's
    illumination functions), the nucleus centres of a locations table, and crop settings."""
    files = [*channels, *illumination_columns(table, channels)]
    names = table[files].map(lambda p: Path(p).name)
    meta = table[metadata_columns(table)]
    digest = pd.util.hash_pandas_object(pd.concat([meta, names], axis=1), index=False).sum()
    inputs = [str(int(digest)), *channels, LAYOUT]
    if nuclei is not None:
        inputs.append(locations_digest(nuclei))
    return fingerprint("crop", inputs, cfg, ("crop",))


def nucleus_params(c: CropConfig) -> NucleusParams:
    return NucleusParams(
        smoothing=c.nucleus_smoothing,
        threshold=c.nucleus_threshold,
        min_area=c.nucleus_min_area,
        max_area=c.nucleus_max_area,
        min_distance=c.nucleus_min_distance,
        split_depth=c.nucleus_split_depth,
    )


def crop_sites(
    table: pd.DataFrame,
    channels: list[str],
    out: str | Path,
    cfg: Config,
    *,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Crop every site of ``table`` (restricted to ``crop.plates``/``crop.wells``, and with
    ``shard`` to that shard's plates) into the crop store at ``out``; return a summary (also in
    ``out/stage.json`` once the store is complete; ``plates_missing``: the selected plates
    that a sharded run leaves to other shards, unfinished)."""
    stage = Stage("crop", "", cfg)  # its fingerprint once the table is read
    c = cfg.crop
    out = Path(out)
    if shard is not None:
        check_shard(*shard)
        if overwrite:
            raise CropError(
                "--shard cannot be used with --overwrite: the jobs of an array cannot replace a "
                f"store together; delete {out} first, or replace it with a run without --shard"
            )
    table = check_treatments(table)
    nucleus_channel(channels, c)  # a nucleus channel that is not read is an error now
    nuclei = nucleus_table(c, table)
    fp = stage.fingerprint = table_fingerprint(table, channels, cfg, nuclei)
    selected = select_sites(table, c.plates, c.wells)
    inputs = [c.bbbc021, c.images_table, c.loaddata, c.platemap, c.images_root, c.locations]
    work = _work_folder(out, fp, overwrite, inputs, sharded=shard is not None)
    mine = selected
    if shard is not None:
        mine = selected[selected[PLATE].isin(shard_plates(selected[PLATE], *shard))]
    summary, skipped = _crop_into(work, table, mine, channels, cfg, nuclei)
    pending = pending_plates(work, selected, channels) if shard is not None else []
    if not pending:
        _finalise(work, channels, skipped, summary["plates_cropped"])
    summary["plates_in_store"] = _plates_in_store(work)
    summary["plates_missing"] = pending
    if shard is not None:
        summary["shard"] = f"{shard[0]}/{shard[1]}"
        summary["shard_plates"] = sorted(set(mine[PLATE]))
        summary["plates_selected"] = selected[PLATE].nunique()
    if pending:  # not finished: no config.toml nor stage.json, which mark a finished output
        return summary
    stage.manifest.update(summary)
    stage.finish(work)
    if work != out:
        swap_in(work, out)
    return summary


def _crop_into(
    folder: Path,
    table: pd.DataFrame,
    selected: pd.DataFrame,
    channels: list[str],
    cfg: Config,
    nuclei: dict | None,
) -> tuple[dict, list[dict]]:
    """Crop the plates of ``selected`` that ``folder`` lacks; return a summary and the records
    of the sites skipped (missing files)."""
    c = cfg.crop
    # every site of the selected plates, checked once for missing files
    rows = table[table[PLATE].isin(set(selected[PLATE]))]
    absent = missing_files(rows, channels) if len(rows) else pd.Series(dtype=str)
    keys = pd.MultiIndex.from_frame(rows[SITE_KEYS])
    is_selected = keys.isin(pd.MultiIndex.from_frame(selected[SITE_KEYS]))
    flagged = is_selected & (absent != "").to_numpy()
    incomplete = rows[flagged].assign(missing=absent[flagged].to_numpy())
    if len(incomplete) and not c.skip_incomplete:
        first = incomplete.iloc[0]
        raise CropError(
            f"missing image file: {first['missing']} (site {first['Metadata_Plate']} "
            f"{first['Metadata_Well']} s{first['Metadata_Site']}; {len(incomplete)} "
            "incomplete sites in all; --skip-incomplete skips them)"
        )
    complete = rows[(absent == "").to_numpy()]
    todo = _sites_to_crop(folder, complete, is_selected[(absent == "").to_numpy()])
    skipped = [
        {**{k: r[k] for k in SITE_KEYS}, "cells": 0, "off_edge": 0, "outside_field": 0}
        | {"illumination": False}
        | {"status": f"skipped: missing {r['missing']}"}
        for _, r in incomplete.iterrows()
    ]
    records, plates_done = _crop_plates(folder, todo, complete, skipped, channels, c, nuclei)
    record_skipped(folder, skipped)
    records += skipped
    summary = {
        "plates_cropped": plates_done,
        "sites_cropped": int(sum(r["status"] == "ok" for r in records)),
        "cells": int(sum(r["cells"] for r in records)),
        "off_edge": int(sum(r["off_edge"] for r in records)),
        "outside_field": int(sum(r["outside_field"] for r in records)),
        "skipped_incomplete": [
            f"{r['Metadata_Plate']} {r['Metadata_Well']} s{r['Metadata_Site']}" for r in skipped
        ],
        "plates_without_illumination": sorted(
            {r[PLATE] for r in records if r["status"] == "ok" and not r["illumination"]}
        ),
    }
    return summary, skipped


def _finalise(folder: Path, channels: list[str], skipped: list[dict], cropped: list[str]) -> None:
    """Join the plates' site records into ``sites.parquet`` and finalise the store, unless it is
    finalised and no plate was cropped. Every file is replaced atomically, and with the same
    bytes by any job: a job finalising while another does so too leaves a valid store."""
    sites = pd.concat([site_records(folder), pd.DataFrame(skipped, columns=RECORD_COLUMNS)])
    sites = sites.drop_duplicates(SITE_KEYS).sort_values(SITE_KEYS)
    write_parquet(sites.reset_index(drop=True), folder / "sites.parquet")
    if cropped or not (folder / "store.json").is_file():
        finalize_store(folder, channels)


def _plates_in_store(folder: Path) -> list[str]:
    """The plates of the finalised store in ``folder`` (none when it is not finalised)."""
    if not (folder / "store.json").is_file():
        return []
    plates = pd.read_parquet(folder / "cells.parquet", columns=[PLATE]).iloc[:, 0]
    return sorted(plates.astype(str).unique())


def _crop_plates(
    folder: Path,
    todo: pd.DataFrame,
    complete: pd.DataFrame,
    skipped: list[dict],
    channels: list[str],
    c: CropConfig,
    nuclei: dict | None,
) -> tuple[list[dict], list[str]]:
    """Crop the sites of ``todo`` plate by plate; return their records and the plates done."""
    params = nucleus_params(c)
    workers = c.workers or _usable_cpus()
    records: list[dict] = []
    plates_done = []
    with ExitStack() as stack:
        bar = stack.enter_context(progress_bar(total=len(todo), desc="crop", unit="site"))
        use_pool = workers > 1 and len(todo) > 1
        pool = stack.enter_context(process_pool(workers)) if use_pool else None
        for plate, sites in todo.groupby(PLATE, sort=True):
            plate = str(plate)
            plate_sites = complete[complete[PLATE] == plate]
            theirs = c.illumination and check_cellprofiler_illumination(sites, channels)
            illum = None if theirs else plate_illumination(folder, plate, plate_sites, channels, c)
            tasks = site_tasks(plate, sites, channels, c, params, illum, nuclei)
            own = [r for r in skipped if r[PLATE] == plate]
            records += crop_plate(folder, plate, tasks, own, pool, bar)
            plates_done.append(plate)
    return records, plates_done


def _usable_cpus() -> int:
    """The cores this process may run on (a cluster job's share of a node), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _sites_to_crop(folder: Path, complete: pd.DataFrame, selected: np.ndarray) -> pd.DataFrame:
    """The sites to crop: for each plate with a selected site not cropped yet (a new well, a
    file that has appeared since), the plate again, with the sites it held before."""
    records = site_records(folder)
    done = pd.MultiIndex.from_frame(records.loc[records["status"] == "ok", SITE_KEYS])
    keys = pd.MultiIndex.from_frame(complete[SITE_KEYS])
    was_cropped = keys.isin(done) if len(done) else np.zeros(len(complete), dtype=bool)
    parts = []
    for plate, idx in complete.groupby(PLATE, sort=True).indices.items():
        wanted = selected[idx] | was_cropped[idx]
        if plate_done(folder, str(plate)) and was_cropped[idx][selected[idx]].all():
            continue
        parts.append(complete.iloc[idx[wanted]])
    return pd.concat(parts) if parts else complete.iloc[:0]


def _fingerprint_in(folder: Path) -> str | None:
    """The fingerprint of the crops in ``folder`` (None when it holds none, or unreadable)."""
    try:
        return json.loads((folder / CROP_MANIFEST).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _unclaimed(folder: Path) -> bool:
    """Whether ``folder`` is absent, or empty but for the temporary files of jobs claiming it."""
    if not folder.exists():
        return True
    prefix = f".{CROP_MANIFEST}."
    return folder.is_dir() and all(p.name.startswith(prefix) for p in folder.iterdir())


def _claim(folder: Path, fp: str) -> Path:
    """Make ``folder`` a crop store of fingerprint ``fp`` (its ``crop.json``) unless it is one;
    refuse one claimed with another. Safe when jobs race: the file appears whole, linked from a
    written temporary file (which fails if the name exists), and every job reads the winner."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / CROP_MANIFEST
    if not manifest.exists():
        tmp = folder / f".{CROP_MANIFEST}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps({"fingerprint": fp}, indent=2, sort_keys=True) + "\n")
        try:
            os.link(tmp, manifest)
        except FileExistsError:
            pass  # another job claimed it first
        finally:
            tmp.unlink()
    if _fingerprint_in(folder) != fp:
        raise OutputExistsError(
            f"{manifest} was written at the same time by a crop from another image table or "
            "with other crop settings: give every job of an array the same table and options"
        )
    (folder / "plates").mkdir(exist_ok=True)
    return folder


def _work_folder(
    out: Path, fp: str, overwrite: bool, inputs: list[str], sharded: bool = False
) -> Path:
    """Where this run crops. ``out`` itself when it holds plates cropped the same way (they are
    kept, missing ones are added); else the staging folder ``out.partial``, which becomes
    ``out`` once the store is complete: so a run that fails leaves ``out`` as it was and only
    ``out.partial`` behind, which a retry with the same settings continues and a retry with
    other settings replaces (no ``--overwrite`` needed for what never completed). An existing
    ``out`` made otherwise is replaced only with ``overwrite`` (never a folder cellclr did not
    make, never an input). A ``sharded`` run (one of several jobs) claims and fills ``out``
    itself, and only ever adds to it."""
    check_apart(out, inputs)
    same = _fingerprint_in(out) == fp
    if sharded:
        if _unclaimed(out) or same:
            return _claim(out, fp)
        what = "exists and is not a crop store"
        if (out / CROP_MANIFEST).is_file():
            what = "holds crops made from another image table or crop settings"
        raise OutputExistsError(
            f"{out} {what}: --shard adds plates to a store made the same way, never replaces "
            f"one; delete {out} first, or replace it with a run without --shard (--overwrite)"
        )
    if same:
        return _claim(out, fp)
    if (out / CROP_MANIFEST).is_file() and not _holds_crops(out):
        pass  # claimed by a run that cropped nothing (an older cellclr): nothing to keep
    elif (out / CROP_MANIFEST).is_file() and not overwrite:
        raise OutputExistsError(
            f"{out} holds crops made from another image table or crop settings (or by an older "
            "cellclr): pass --overwrite to replace them (they are kept until the new store is "
            "complete)"
        )
    elif not _unclaimed(out):
        check_new_output(out, overwrite, inputs)  # a store from import-crops may be replaced
    work = partial_path(out)
    if work.exists() and _fingerprint_in(work) != fp:
        if _fingerprint_in(work) is None and not _unclaimed(work):
            raise OutputError(f"{work} exists and is not an unfinished crop store: remove it")
        log.warning(f"crop: replacing {work}, an unfinished crop with other settings")
        shutil.rmtree(work)
    elif work.exists():
        log.info(f"crop: continuing the unfinished crop in {work}")
    return _claim(work, fp)


def _holds_crops(folder: Path) -> bool:
    """Whether ``folder`` holds a finished store or any plate's crops."""
    return (folder / "store.json").is_file() or any((folder / "plates").glob("*.npy"))
