"""Verbs of the data sets: ``download`` (BBBC021), ``simulate`` (a BBBC021-like screen)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import Verb, at_least, channel_list, names_arg, overwrite_arg


def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=["bbbc021"],
        default="bbbc021",
        help="the data set (default and only one: bbbc021)",
    )
    p.add_argument("legacy_dataset", nargs="?", choices=["bbbc021"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True, help="folder to download into")
    names_arg(p, "--plates", "only these plates, e.g. Week1_22123", "PLATE")
    p.add_argument("--retries", type=at_least(1), default=5, help="attempts per file (default: 5)")


def _download(args: argparse.Namespace) -> None:
    from cellclr.datasets.download import download_bbbc021

    done = download_bbbc021(args.out, channel_list(args.plates), retries=args.retries)
    print(f"{len(done)} plates in {args.out}")


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--seed", type=int, default=0, help="the screen's random seed (default: 0)")
    overwrite_arg(p)


def _simulate(args: argparse.Namespace) -> None:
    from cellclr.datasets.simulate import simulate_screen

    summary = simulate_screen(args.out, seed=args.seed, overwrite=args.overwrite)
    print(", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int)))
    print(f"screen: {args.out}  (next: cellclr crop --bbbc021 {args.out} --out ...)")


VERBS = (
    Verb(
        "download",
        "download BBBC021 (metadata and plate zips)",
        "Download BBBC021 from the Broad over HTTPS: the metadata CSVs and one zip per plate, "
        "resuming partial files and skipping finished plates.",
        _download_args,
        _download,
    ),
    Verb(
        "simulate",
        "render a simulated BBBC021-like screen (TIFFs + metadata)",
        "Render 16-bit 3-channel fields of view of simulated MCF-7-like cells with MoA "
        "phenotypes and week-to-week batch effects, in BBBC021's layout, so that "
        "`cellclr crop --bbbc021 OUT` reads it. Deterministic for a seed.",
        _simulate_args,
        _simulate,
    ),
)
