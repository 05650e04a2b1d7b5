"""The crop stage's verb: ``crop`` (raw fields of view -> a crop store)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cellclr.cli.common import (
    Verb,
    at_least,
    channel_list,
    config_args,
    config_of,
    names_arg,
    overwrite_arg,
)
from cellclr.columns import TREATMENT


def _shard(text: str) -> tuple[int, int]:
    """An argparse type: ``I/N``, shard I (0 to N-1) of N."""
    from cellclr.cropping.stage import CropError, check_shard

    match = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, two integers (e.g. 0/8)")
    try:
        return check_shard(int(match[1]), int(match[2]))
    except CropError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _crop_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--bbbc021", type=Path, help="BBBC021 folder (metadata/ and WeekN/)")
    source.add_argument(
        "--images-table",
        type=Path,
        help="CSV/parquet: Metadata_Plate, Metadata_Well, Metadata_Site, treatment columns, "
        "one image-path column per channel",
    )
    source.add_argument(
        "--loaddata",
        type=Path,
        help="CellProfiler LoadData or CytoTable table (CSV/parquet): FileName_<Ch> and "
        "PathName_<Ch> (or Image_FileName_Orig<Ch>), Metadata_Plate/Well/Site (or "
        "Image_Metadata_*), one row per field or per object; FileName_Illum<Ch> columns name "
        "CellProfiler's illumination functions, used instead of our own",
    )
    names_arg(
        p,
        "--channels",
        "channels to read, in this order: columns of the image table, e.g. DNA,Tubulin,Actin, "
        "or LoadData channels, e.g. DNA,ER,RNA,AGP,Mito (default there: all)",
        "CHANNEL",
    )
    p.add_argument(
        "--images-root",
        "--root",
        dest="root",
        type=Path,
        help="image table: where relative image paths start (default: the table's folder); "
        "LoadData table: the folder of the images, replacing the table's PathName (the longest "
        "tail of PathName found under it, else it), or holding the files a table without "
        "PathName names",
    )
    p.add_argument(
        "--platemap",
        type=Path,
        help="plate map (CSV/TSV/parquet) joined by plate and well: Metadata_Plate (or plate, "
        "Assay_Plate_Barcode), Metadata_Well (or well_position), compound (Metadata_Compound, "
        "jcp2022, broad_sample, ...) and concentration (Metadata_Concentration, "
        "mmoles_per_liter, ...); or JUMP's barcode_platemap.csv with platemap/<name>.txt "
        "beside it. Optional: without treatments the cells carry plate, well and site, and a "
        "plate map can be joined later (cellclr profile --platemap)",
    )
    p.add_argument(
        "--nucleus-channel",
        help="the channel nuclei are found in (default: the one named DNA, else the first)",
    )
    p.add_argument(
        "--edge",
        choices=["skip", "pad"],
        help="boxes that leave the field: skip them (default) or pad them with zeros "
        "(recorded per cell in Metadata_PaddedPixels)",
    )
    p.add_argument("--out", type=Path, required=True, help="crop store folder")
    p.add_argument("--box", type=at_least(8), help="crop side in pixels (default: 96)")
    names_arg(p, "--plates", "only these plates", "PLATE")
    names_arg(p, "--wells", "only these wells", "WELL")
    p.add_argument(
        "--workers", type=at_least(0), help="processes (default: the cores this job may use)"
    )
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="crop only shard I of N, I from 0 to N-1, e.g. --shard "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in a job array with --array=0-(N-1): the "
        "selected plates sorted by name, plate k to shard k %% N. Every job, given the same "
        "options, writes its own plates into the same OUT (a shared filesystem); the last to "
        "finish finalises the store, and a run without --shard afterwards also does (cropping "
        "anything missing). Not with --overwrite",
    )
    p.add_argument(
        "--locations",
        type=Path,
        help="nucleus centres instead of detection: a folder, "
        "LOCATIONS/<plate>/<well>-<site>-Nuclei.csv (DeepProfiler), or a CellProfiler object "
        "table (CSV/parquet) with Nuclei_Location_Center_X/Y (or Location_Center_X/Y), matched "
        "to fields by plate, well and site or by ImageNumber",
    )
    p.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="skip sites with a missing image file (listed in the summary)",
    )
    p.add_argument("--no-illumination", action="store_true", help="no illumination correction")
    config_args(p)
    overwrite_arg(p)


def _crop(args: argparse.Namespace) -> None:
    from cellclr.cropping.stage import crop

    cfg = config_of(args)
    c = cfg.crop
    if args.bbbc021 or args.images_table or args.loaddata:
        c.bbbc021 = str(args.bbbc021 or "")
        c.images_table = str(args.images_table or "")
        c.loaddata = str(args.loaddata or "")
    if args.channels:
        c.channels = channel_list(args.channels)
    for name in ("plates", "wells"):
        if getattr(args, name) is not None:
            setattr(c, name, channel_list(getattr(args, name)))
    for name in ("box", "workers", "nucleus_channel", "edge"):
        if getattr(args, name) is not None:
            setattr(c, name, getattr(args, name))
    for name, key in (("root", "images_root"), ("platemap", "platemap"), ("locations", None)):
        if getattr(args, name):
            setattr(c, key or name, str(getattr(args, name)))
    c.skip_incomplete = c.skip_incomplete or args.skip_incomplete
    c.illumination = c.illumination and not args.no_illumination
    summary = crop(args.out, cfg, overwrite=args.overwrite, shard=args.shard)
    missing = summary["plates_missing"]
    if args.shard:
        n = summary["plates_selected"]
        print(
            f"shard {summary['shard']}: {len(summary['shard_plates'])} plates done "
            f"({len(summary['plates_cropped'])} cropped now); "
            + (
                f"{len(missing)} of {n} plates still missing: the last shard to finish "
                "finalises the store (if none does, run this crop without --shard)"
                if missing
                else f"all {n} plates done: the store is complete"
            )
        )
    print(
        f"cropped {summary['cells']} cells from {summary['sites_cropped']} sites "
        f"({summary['off_edge']} boxes off the image edge "
        f"{'padded' if c.edge == 'pad' else 'skipped'}"
        + (
            f", {summary['outside_field']} nucleus centres outside the field left out)"
            if summary["outside_field"]
            else ")"
        )
        + ("" if missing else f"; plates in the store: {len(summary['plates_in_store'])}")
    )
    if summary["skipped_incomplete"]:
        print(
            f"skipped {len(summary['skipped_incomplete'])} incomplete sites: "
            + ", ".join(summary["skipped_incomplete"][:20])
        )
    if not missing and not _has_treatments(args.out):
        print(
            "no treatments: the cells carry plate, well and site (join a plate map with "
            "--platemap here, or later with `cellclr profile --platemap`)"
        )
    print(f"crop store{' (not finalised yet)' if missing else ''}: {args.out}")


def _has_treatments(store: Path) -> bool:
    import pyarrow.parquet as pq

    names = pq.read_schema(store / "cells.parquet").names
    return any(column in names for column in TREATMENT)


VERBS = (
    Verb(
        "crop",
        "raw fields of view -> single-cell crop store",
        "Illumination correction (ours, or CellProfiler's functions named by a LoadData table), "
        "nucleus detection (or nucleus centres from CSV files or a CellProfiler object table) "
        "and a fixed box around each nucleus, plate by plate, from 16-bit (or 8-bit) TIFFs "
        "(plain or compressed, one plane per file); treatments, where known, from the table or a "
        "plate map (--platemap); a rerun "
        "(also after a kill) continues OUT.partial, where a store is built until it is complete "
        "(a retry with other settings replaces an unfinished one), and --overwrite replaces a "
        "finished store made with other settings once the new one is complete; --shard I/N "
        "splits the plates over the N jobs of an array. Options override [crop] of the config.",
        _crop_args,
        _crop,
    ),
)
