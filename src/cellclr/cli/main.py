"""The ``cellclr`` command: one verb per pipeline stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import sys

from cellclr import __version__
from cellclr.cli import images, learning, profiling, runs, store
from cellclr.errors import CellclrError

EPILOG = """\
typical use:
  cellclr import-crops --images crops.npz --cells cells.csv --channels DNA,Tubulin,Actin \
      --out runs/x/crops
  cellclr run --config configs/bbbc021-cpu.toml --crops runs/x/crops --out runs/x

Every stage writes into its own folder, with the resolved config (config.toml) and a manifest
(stage.json); an existing output is replaced only with --overwrite.
"""

# in pipeline order: raw images, the crop store, learning, profiling, whole runs
VERBS = (*images.VERBS, *store.VERBS, *learning.VERBS, *profiling.VERBS, *runs.VERBS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclr",
        description="Contrastive (SimCLR) single-cell representations and MoA evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellclr {__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        p = subparsers.add_parser(verb.name, help=verb.help, description=verb.description)
        verb.arguments(p)
        p.set_defaults(handler=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
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
