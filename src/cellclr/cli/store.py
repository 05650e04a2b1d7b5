"""The crop store's verbs: ``import-crops`` (crops made elsewhere -> a crop store) and
``verify`` (are its plate arrays those that were written?)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import Verb, channel_list, names_arg, overwrite_arg


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, required=True, help=".npz (or .npy) file of crops")
    p.add_argument("--key", default="images", help="array name inside the .npz (default: images)")
    p.add_argument(
        "--cells", type=Path, required=True, help="CSV or parquet table, one row per crop"
    )
    names_arg(p, "--channels", "channel names, e.g. DNA,Tubulin,Actin", "CHANNEL")
    p.add_argument("--out", type=Path, required=True, help="crop store folder to create")
    overwrite_arg(p)


def _import(args: argparse.Namespace) -> None:
    from cellclr.store.import_crops import import_crops

    channels = channel_list(args.channels)
    out = import_crops(args.images, args.cells, args.out, channels, args.key, args.overwrite)
    print(f"crop store: {out}")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", type=Path, help="crop store folder")


def _verify(args: argparse.Namespace) -> None:
    from cellclr.store import StoreError
    from cellclr.store.integrity import verify_store

    result = verify_store(args.store)
    for name in result.differ:
        print(f"{args.store / name}: differs from its recorded hash")
    for name in result.unrecorded:
        print(f"{args.store / name}: no recorded hash (written before hashes were kept)")
    for note in result.notes:
        print(f"{args.store}: {note}")
    size = f"{result.plates} plates, {result.bytes / 1e9:.2f} GB"
    if result.differ:
        raise StoreError(
            f"{args.store}: {len(result.differ)} of {result.plates} plates differ from their "
            f"recorded hash, first {result.differ[0]}: the store was changed after it was "
            "written; make it again"
        )
    checked = result.plates - len(result.unrecorded)
    print(f"{args.store}: {size}; {checked} of {result.plates} match their recorded hash")


VERBS = (
    Verb(
        "import-crops",
        "convert crops (npz) + cells (CSV) into a crop store",
        "Convert an array of single-cell crops (cells x channels x H x W, 16-bit counts) and a "
        "row-aligned cell table with Metadata_ columns into a crop store.",
        _import_args,
        _import,
    ),
    Verb(
        "verify",
        "check every plate of a crop store against its recorded hash",
        "Recompute the SHA-256 of every plate array of a crop store (reading all of it, with a "
        "progress bar) and compare it with the hash recorded when the plate was written. "
        "Opening a store only compares each plate file's size and modification time with "
        "those recorded when the store was finalised; when every hash matches, verify records "
        "them again (a store copied without its file times, or one written before they were "
        "recorded). Exit 2 when a plate differs.",
        _verify_args,
        _verify,
    ),
)
