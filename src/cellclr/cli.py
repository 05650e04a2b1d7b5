"""The ``cellclr`` command: one verb per pipeline stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cellclr import __version__
from cellclr.config import Config, load_config
from cellclr.errors import CellclrError

EPILOG = """\
typical use:
  cellclr import-crops --images crops.npz --cells cells.csv --channels DNA,Tubulin,Actin \
      --out runs/x/crops
  cellclr run --config configs/bbbc021-cpu.toml --crops runs/x/crops --out runs/x

Every stage writes into its own folder, with the resolved config (config.toml) and a manifest
(stage.json); an existing output is replaced only with --overwrite.
"""


def _config_args(p: argparse.ArgumentParser, default_from: str | None = None) -> None:
    where = f" (default: the config saved in {default_from})" if default_from else ""
    p.add_argument("--config", type=Path, help=f"TOML config file{where}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclr",
        description="Contrastive (SimCLR) single-cell representations and MoA evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellclr {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser(
        "import-crops",
        help="convert crops (npz) + cells (CSV) into a crop store",
        description="Convert an array of single-cell crops (cells x channels x H x"
        " W, 16-bit counts) and a row-aligned cell table with Metadata_ columns"
        " into a crop store.",
    )
    p.add_argument("--images", type=Path, required=True, help=".npz (or .npy) file of crops")
    p.add_argument("--key", default="images", help="array name inside the .npz (default: images)")
    p.add_argument(
        "--cells", type=Path, required=True, help="CSV or parquet table, one row per crop"
    )
    p.add_argument("--channels", help="comma-separated channel names, e.g. DNA,Tubulin,Actin")
    p.add_argument("--out", type=Path, required=True, help="crop store folder to create")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "train",
        help="train a SimCLR encoder on a crop store",
        description="Train a SimCLR model; writes model.pt, checkpoint.pt, "
        "train_log.jsonl and config.toml into --out.",
    )
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="model folder to create")
    _config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted training from its last checkpoint",
    )
    _overwrite_arg(p)

    p = verbs.add_parser(
        "embed",
        help="embed every cell with a trained encoder",
        description="Write embeddings.parquet: the cells' Metadata_ columns and "
        "their backbone features.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder from `cellclr train`")
    p.add_argument("--crops", type=Path, required=True, help="crop store folder")
    p.add_argument("--out", type=Path, required=True, help="embeddings folder to create")
    _config_args(p, "--model")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "profile",
        help="aggregate cells into well and treatment profiles",
        description="Well profile = mean of its cells; treatment profile = median"
        " of its wells. Writes wells.parquet and treatments.parquet.",
    )
    p.add_argument("--embeddings", type=Path, required=True, help="folder from `cellclr embed`")
    p.add_argument("--out", type=Path, required=True, help="profiles folder to create")
    _config_args(p, "--embeddings")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "evaluate",
        help="NSC, NSCB and drop of treatment profiles",
        description="MoA evaluation as in Ljosa et al. 2013 (see the README). "
        "Writes metrics.json, nsc.parquet and nscb.parquet.",
    )
    p.add_argument("--profiles", type=Path, required=True, help="folder from `cellclr profile`")
    p.add_argument("--out", type=Path, required=True, help="evaluation folder to create")
    _config_args(p, "--profiles")
    _overwrite_arg(p)

    p = verbs.add_parser(
        "run",
        help="train, embed, profile and evaluate in one go",
        description="Run every stage after import into OUT/model, "
        "OUT/embeddings, OUT/profiles and OUT/eval. A stage whose output exists "
        "for the same inputs and config is skipped; an interrupted training "
        "resumes.",
    )
    _config_args(p)
    p.add_argument(
        "--crops", type=Path, help="crop store folder (default: data.crops of the config)"
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _overwrite_arg(p)
    return parser


def _config(args: argparse.Namespace, upstream: Path | None = None) -> Config:
    path = args.config
    if path is None and upstream is not None and (upstream / "config.toml").is_file():
        path = upstream / "config.toml"
    return load_config(path, args.set)


def _print_metrics(eval_dir: Path) -> None:
    from cellclr.evaluate import summary_line

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    print(summary_line(metrics))
    print(f"results: {eval_dir}")


def dispatch(args: argparse.Namespace) -> None:
    if args.verb == "import-crops":
        from cellclr.import_crops import import_crops

        channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
        out = import_crops(args.images, args.cells, args.out, channels, args.key, args.overwrite)
        print(f"crop store: {out}")
    elif args.verb == "train":
        from cellclr.train import train

        out = train(
            args.crops, args.out, _config(args), overwrite=args.overwrite, resume=args.resume
        )
        print(f"model: {out}")
    elif args.verb == "embed":
        from cellclr.embed import embed

        out = embed(
            args.model, args.crops, args.out, _config(args, args.model), overwrite=args.overwrite
        )
        print(f"embeddings: {out}")
    elif args.verb == "profile":
        from cellclr.profiles import profile

        out = profile(
            args.embeddings, args.out, _config(args, args.embeddings), overwrite=args.overwrite
        )
        print(f"profiles: {out}")
    elif args.verb == "evaluate":
        from cellclr.evaluate import evaluate

        evaluate(args.profiles, args.out, _config(args, args.profiles), overwrite=args.overwrite)
        _print_metrics(args.out)
    elif args.verb == "run":
        from cellclr.pipeline import run

        _print_metrics(run(_config(args), args.out, args.crops, overwrite=args.overwrite))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dispatch(args)
    except CellclrError as e:
        print(f"cellclr: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"cellclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "cellclr: interrupted (an interrupted training continues with --resume)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
