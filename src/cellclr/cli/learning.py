"""Verbs of the learning stages: ``train``, ``embed``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellclr.cli.common import Verb, any_crop_size_arg, config_args, config_of, overwrite_arg


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="model folder to create")
    config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted training from its last checkpoint (what happens anyway: "
        "an unfinished training in OUT.partial with the same crops and settings is continued, "
        "one with other settings replaced)",
    )
    overwrite_arg(p)


def _train(args: argparse.Namespace) -> None:
    from cellclr.pipeline import train

    out = train(args.crops, args.out, config_of(args), overwrite=args.overwrite)
    print(f"model: {out}")


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model folder from `cellclr train`")
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="embeddings folder to create")
    config_args(p, "--model")
    any_crop_size_arg(p)
    overwrite_arg(p)


def _embed(args: argparse.Namespace) -> None:
    from cellclr.learning.embed import embed

    cfg = config_of(args, args.model)
    out = embed(
        args.model,
        args.crops,
        args.out,
        cfg,
        overwrite=args.overwrite,
        any_crop_size=args.any_crop_size,
    )
    print(f"embeddings: {out}")


VERBS = (
    Verb(
        "train",
        "train an encoder on a crop store (SimCLR, SupCon or DINO: train.method)",
        "Train train.method (simclr, supcon or dino) on the crops; writes model.pt, "
        "checkpoint.pt, train_log.jsonl and config.toml "
        "into --out.",
        _train_args,
        _train,
    ),
    Verb(
        "embed",
        "embed every cell with a trained encoder",
        "Write embeddings.parquet: the cells' Metadata_ columns and their backbone features.",
        _embed_args,
        _embed,
    ),
)
