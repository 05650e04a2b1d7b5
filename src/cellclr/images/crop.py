"""``cellclr crop``: raw fields of view -> illumination correction -> nuclei -> crop store.

Plate by plate: a plate's illumination functions are estimated from a sample of its sites and
saved (``illum/<plate>.npz``); then a process pool handles its sites, one site's images at a time
per worker, and the main process streams the crops into ``plates/<plate>.npy``. A plate whose
selected sites are all in ``sites.parquet`` is skipped, so a rerun (or one job per plate on a
cluster, with ``--plates``) continues where the last stopped; a plate with new sites (more wells,
files that arrived since) is cropped again with the sites it held. The crop store is (re)built
from the finished plates at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cellclr.config import Config, CropConfig, save_config
from cellclr.fingerprint import fingerprint
from cellclr.images.illumination import (
    IlluminationAccumulator,
    save_illumination,
)
from cellclr.images.nuclei import NucleusParams
from cellclr.images.sites import CropError, Site, process_site_task, read_site
from cellclr.images.table import SITE_KEYS, read_image_table, select_sites
from cellclr.metadata import metadata_columns
from cellclr.outputs import OutputExistsError, write_json, write_manifest, write_parquet
from cellclr.store import finalize_store
from cellclr.store.format import plate_file_stem
from cellclr.store.writer import NpyAppender, write_digest, write_plate_index
from cellclr.workers import process_pool

CROP_MANIFEST = "crop.json"


def load_sites(c: CropConfig) -> tuple[pd.DataFrame, list[str]]:
    """The image table and channel names that the ``[crop]`` settings point at."""
    if bool(c.bbbc021) == bool(c.images_table):
        raise CropError(
            "give either a BBBC021 folder (--bbbc021) or an image table "
            "(--images-table with --channels)"
        )
    if c.bbbc021:
        from cellclr.images.bbbc021 import CHANNELS, bbbc021_image_table

        return bbbc021_image_table(c.bbbc021), list(CHANNELS)
    return read_image_table(c.images_table, c.channels, c.images_root or None), list(c.channels)


def crop(out: str | Path, cfg: Config, *, overwrite: bool = False) -> dict:
    """Crop the images that ``cfg.crop`` names (a BBBC021 folder or an image table) into the
    crop store at ``out``; return the summary (see ``crop_sites``)."""
    table, channels = load_sites(cfg.crop)
    return crop_sites(table, channels, out, cfg, overwrite=overwrite)


def table_fingerprint(table: pd.DataFrame, channels: list[str], cfg: Config) -> str:
    """The crop stage's fingerprint: the table (file names, not folders) and crop settings."""
    names = table[channels].map(lambda p: Path(p).name)
    meta = table[metadata_columns(table)]
    digest = pd.util.hash_pandas_object(pd.concat([meta, names], axis=1), index=False).sum()
    return fingerprint("crop", [str(int(digest)), *channels], cfg, ("crop",))


def nucleus_params(c: CropConfig) -> NucleusParams:
    return NucleusParams(
        smoothing=c.nucleus_smoothing,
        threshold=c.nucleus_threshold,
        min_area=c.nucleus_min_area,
        max_area=c.nucleus_max_area,
        min_distance=c.nucleus_min_distance,
    )


def plate_done(out: Path, plate: str) -> bool:
    stem = plate_file_stem(plate)
    return (out / "plates" / f"{stem}.npy").is_file() and (
        out / "plates" / f"{stem}.parquet"
    ).is_file()


def missing_files(table: pd.DataFrame, channels: list[str]) -> pd.Series:
    """Per site, the first of its channel files that does not exist ('' when complete)."""

    def first_missing(row: pd.Series) -> str:
        return next((row[c] for c in channels if not os.path.isfile(row[c])), "")

    return table.apply(first_missing, axis=1)


def crop_sites(
    table: pd.DataFrame,
    channels: list[str],
    out: str | Path,
    cfg: Config,
    *,
    overwrite: bool = False,
) -> dict:
    """Crop every site of ``table`` (restricted to ``crop.plates``/``crop.wells``) into the crop
    store at ``out``; return a summary (also in ``out/crop.json``)."""
    t_start = time.perf_counter()
    c = cfg.crop
    out = Path(out)
    missing = [col for col in ("Metadata_Compound", "Metadata_Concentration") if col not in table]
    if missing:
        raise CropError(f"the image table lacks treatment columns {missing}")
    fp = table_fingerprint(table, channels, cfg)
    selected = select_sites(table, c.plates, c.wells)
    _prepare(out, fp, overwrite)
    # every site of the selected plates, checked once for missing files
    rows = table[table["Metadata_Plate"].isin(set(selected["Metadata_Plate"]))]
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
    todo = _sites_to_crop(out, complete, is_selected[(absent == "").to_numpy()])
    params = nucleus_params(c)
    workers = c.workers or os.cpu_count() or 1
    records: list[dict] = [
        {
            **{k: r[k] for k in SITE_KEYS},
            "cells": 0,
            "off_edge": 0,
            "illumination": False,
            "status": f"skipped: missing {r['missing']}",
        }
        for _, r in incomplete.iterrows()
    ]
    plates_done = []
    bar = tqdm(total=len(todo), desc="crop", unit="site", disable=None)
    pool = process_pool(workers) if workers > 1 and len(todo) > 1 else None
    try:
        for plate, sites in todo.groupby("Metadata_Plate", sort=True):
            plate_sites = complete[complete["Metadata_Plate"] == plate]
            illum = _plate_illumination(out, str(plate), plate_sites, channels, c)
            records += _crop_plate(out, str(plate), sites, channels, c, params, illum, pool, bar)
            plates_done.append(str(plate))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _write_sites(out, records)
    if plates_done or not (out / "store.json").is_file():
        finalize_store(out, channels)
    summary = {
        "plates_cropped": plates_done,
        "sites_cropped": int(sum(r["status"] == "ok" for r in records)),
        "cells": int(sum(r["cells"] for r in records)),
        "off_edge": int(sum(r["off_edge"] for r in records)),
        "skipped_incomplete": [
            f"{r['Metadata_Plate']} {r['Metadata_Well']} s{r['Metadata_Site']}"
            for r in records
            if r["status"] != "ok"
        ],
        "plates_without_illumination": sorted(
            {r["Metadata_Plate"] for r in records if r["status"] == "ok" and not r["illumination"]}
        ),
        "plates_in_store": sorted(p.stem for p in (out / "plates").glob("*.parquet")),
    }
    save_config(cfg, out / "config.toml")
    write_manifest(out, "crop", fp, seconds=round(time.perf_counter() - t_start, 1), **summary)
    return summary


def _sites_to_crop(out: Path, complete: pd.DataFrame, selected: np.ndarray) -> pd.DataFrame:
    """The sites to crop: for each plate with a selected site not cropped yet (a new well, a
    file that has appeared since), the plate again, with the sites it held before."""
    done = _cropped_sites(out)
    keys = pd.MultiIndex.from_frame(complete[SITE_KEYS])
    was_cropped = keys.isin(done) if len(done) else np.zeros(len(complete), dtype=bool)
    parts = []
    for plate, idx in complete.groupby("Metadata_Plate", sort=True).indices.items():
        wanted = selected[idx] | was_cropped[idx]
        if plate_done(out, str(plate)) and was_cropped[idx][selected[idx]].all():
            continue
        parts.append(complete.iloc[idx[wanted]])
    return pd.concat(parts) if parts else complete.iloc[:0]


def _cropped_sites(out: Path) -> pd.MultiIndex:
    """The sites that earlier runs cropped into the store (``sites.parquet``, status ok)."""
    path = out / "sites.parquet"
    if not path.is_file():
        return pd.MultiIndex.from_tuples([], names=SITE_KEYS)
    sites = pd.read_parquet(path)
    return pd.MultiIndex.from_frame(sites.loc[sites["status"] == "ok", SITE_KEYS])


def _prepare(out: Path, fp: str, overwrite: bool) -> None:
    """Create ``out``, or check that the plates already in it were cropped the same way (then
    they are kept and only missing plates are cropped, with or without ``overwrite``)."""
    same = (out / CROP_MANIFEST).is_file() and json.loads((out / CROP_MANIFEST).read_text())[
        "fingerprint"
    ] == fp
    if out.exists() and overwrite and not same:
        shutil.rmtree(out)
    if (out / CROP_MANIFEST).is_file():
        if not same:
            raise OutputExistsError(
                f"{out} holds crops made from another image table or crop settings: "
                "pass --overwrite to replace them"
            )
    elif out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"output exists and is not a crop folder: {out}")
    (out / "plates").mkdir(parents=True, exist_ok=True)
    write_json({"fingerprint": fp}, out / CROP_MANIFEST)


def _plate_illumination(
    out: Path, plate: str, sites: pd.DataFrame, channels: list[str], c: CropConfig
) -> Path | None:
    """The plate's illumination file, estimated from its complete sites the first time; None
    (no correction, logged) when switched off or with too few sites for a reliable estimate:
    a few fields average cell density, not illumination."""
    if not c.illumination:
        return None
    path = out / "illum" / f"{plate_file_stem(plate)}.npz"
    if path.is_file():
        return path
    if len(sites) < c.illumination_min_sites:
        tqdm.write(
            f"plate {plate}: {len(sites)} complete sites, fewer than "
            f"crop.illumination_min_sites={c.illumination_min_sites}: no illumination correction"
        )
        return None
    _estimate_illumination(sites, channels, c.illumination_sites, path)
    return path


def _crop_plate(
    out: Path,
    plate: str,
    sites: pd.DataFrame,
    channels: list[str],
    c: CropConfig,
    params: NucleusParams,
    illum: Path | None,
    pool: ProcessPoolExecutor | None,
    bar: tqdm,
) -> list[dict]:
    stem = plate_file_stem(plate)
    meta_cols = metadata_columns(sites)
    tasks = []
    for _, row in sites.iterrows():
        locations = None
        if c.locations:
            locations = str(
                Path(c.locations)
                / plate
                / f"{row['Metadata_Well']}-{row['Metadata_Site']}-Nuclei.csv"
            )
        site = Site(
            [row[ch] for ch in channels],
            tuple(channels),
            {k: row[k] for k in meta_cols},
            str(illum) if illum else None,
            locations,
        )
        tasks.append((site, c.box, params))
    results = (
        pool.map(process_site_task, tasks, chunksize=2) if pool else map(process_site_task, tasks)
    )
    tmp = out / "plates" / f".{stem}.npy.tmp"
    writer = NpyAppender(tmp, (len(channels), c.box, c.box))
    cells, records = [], []
    try:
        for result in results:
            writer.append(result.crops)
            cells.append(result.cells)
            records.append(result.record)
            bar.update()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)  # no half-written plate is left behind
        raise
    digest = writer.close()
    if writer.count == 0:
        tmp.unlink()
        raise CropError(f"plate {plate}: no cells were found in {len(sites)} sites")
    os.replace(tmp, out / "plates" / f"{stem}.npy")
    write_digest(out / "plates" / f"{stem}.npy", digest)
    write_plate_index(out, plate, pd.concat(cells, ignore_index=True))
    return records


def _estimate_illumination(
    sites: pd.DataFrame, channels: list[str], n_sites: int, path: Path
) -> None:
    """Illumination functions from up to ``n_sites`` sites spread evenly over the plate."""
    pick = np.unique(np.linspace(0, len(sites) - 1, min(n_sites, len(sites))).round().astype(int))
    accumulators: list[IlluminationAccumulator] = []
    for _, row in sites.iloc[pick].iterrows():
        images = read_site([row[ch] for ch in channels])
        if not accumulators:
            accumulators = [IlluminationAccumulator(images[0].shape) for _ in channels]
        for acc, image in zip(accumulators, images, strict=True):
            acc.add(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_illumination(
        path, {ch: acc.function() for ch, acc in zip(channels, accumulators, strict=True)}
    )


def _write_sites(out: Path, records: list[dict]) -> None:
    """Keep one row per site over all runs: ``sites.parquet``."""
    path = out / "sites.parquet"
    new = pd.DataFrame(records, columns=[*SITE_KEYS, "cells", "off_edge", "illumination", "status"])
    if path.is_file():
        old = pd.read_parquet(path)
        new = pd.concat([old, new]).drop_duplicates(SITE_KEYS, keep="last")
    write_parquet(new.sort_values(SITE_KEYS).reset_index(drop=True), path)
