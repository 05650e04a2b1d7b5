"""The ``import-crops`` verb: crops made elsewhere -> a crop store."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import Verb, channel_list, overwrite_arg


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, required=True, help=".npz (or .npy) file of crops")
    p.add_argument("--key", default="images", help="array name inside the .npz (default: images)")
    p.add_argument(
        "--cells", type=Path, required=True, help="CSV or parquet table, one row per crop"
    )
    p.add_argument("--channels", help="comma-separated channel names, e.g. DNA,Tubulin,Actin")
    p.add_argument("--out", type=Path, required=True, help="crop store folder to create")
    overwrite_arg(p)


def _import(args: argparse.Namespace) -> None:
    from cellclr.store.import_crops import import_crops

    channels = channel_list(args.channels)
    out = import_crops(args.images, args.cells, args.out, channels, args.key, args.overwrite)
    print(f"crop store: {out}")


VERBS = (
    Verb(
        "import-crops",
        "convert crops (npz) + cells (CSV) into a crop store",
        "Convert an array of single-cell crops (cells x channels x H x W, 16-bit counts) and a "
        "row-aligned cell table with Metadata_ columns into a crop store.",
        _import_args,
        _import,
    ),
)
