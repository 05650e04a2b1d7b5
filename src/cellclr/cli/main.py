"""The ``cellclr`` command: one verb per pipeline stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import sys

from cellclr import __version__
from cellclr.cli import configs, cropping, datasets, learning, profiling, runs, store
from cellclr.errors import CellclrError

EPILOG = """\
typical use:
  cellclr import-crops --images crops.npz --cells cells.csv --channels DNA,Tubulin,Actin \
      --out runs/x/crops
  cellclr run --config bbbc021-cpu --crops runs/x/crops --out runs/x

--config takes a shipped config by name (`cellclr configs` lists them) or a TOML file's path.
Every stage writes into its own folder, with the resolved config (config.toml) and a manifest
(stage.json); an existing output is replaced only with --overwrite.
"""

# in pipeline order: raw images, the crop store, learning, profiling, whole runs; then configs
VERBS = (
    *datasets.VERBS,
    *cropping.VERBS,
    *store.VERBS,
    *learning.VERBS,
    *profiling.VERBS,
    *runs.VERBS,
    *configs.VERBS,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclr",
        description="Contrastive (SimCLR) single-cell representations and MoA evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellclr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        p = subparsers.add_parser(verb.name, help=verb.help, description=verb.description)
        verb.arguments(p)
        p.set_defaults(handler=verb.run)
    return parser


# OS errors that bad input or a full disk cause: reported in one line, not as a traceback
EXPECTED_ERRNO = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.ENOTEMPTY,
    errno.ENAMETOOLONG,
}


def describe(error: BaseException) -> str | None:
    """The one-line message for an expected error; None for a bug (shown as a traceback)."""
    if isinstance(error, CellclrError):
        return str(error)
    if isinstance(error, OSError) and error.errno in EXPECTED_ERRNO:
        where = error.filename or ""
        if error.filename2:
            where += f" -> {error.filename2}"
        reason = error.strerror or os.strerror(error.errno)
        return f"{where}: {reason}" if where else reason
    return None


# what an interrupted verb leaves, and how to continue it
RESUME = {
    "train": " (run it again to continue from the last checkpoint, which is kept)",
    "crop": " (run it again: finished plates are kept)",
    "run": " (run it again: finished stages are skipped, training resumes)",
    "demo": " (run it again: finished stages are skipped, training resumes)",
    "download": " (run it again: finished plates are skipped, partial files resumed)",
}


# options whose value may start with "-" without being a number argparse knows (-1/3)
DASHED_VALUES = ("--shard",)


def attach_dashed_values(argv: list[str]) -> list[str]:
    """``--shard -1/3`` as ``--shard=-1/3``: argparse takes a value that starts with ``-`` and
    is not a plain number for an option, and says only "expected one argument"; so joined,
    the value reaches the option's own check, which says what is wrong with it."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        value = next(args, None) if arg in DASHED_VALUES else None
        if value is not None and value.startswith("-") and value[1:2].isdigit():
            out.append(f"{arg}={value}")
        else:
            out += [arg] if value is None else [arg, value]
    return out


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The arguments; an option the verb does not know is reported with the verb's usage (not
    the top-level one), as ``cellclr VERB --help`` would show it."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        verbs.choices[args.verb].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(build_parser(), attach_dashed_values(list(argv)))
    # under torchrun only the main process prints results (errors still come from every one)
    quiet = os.environ.get("RANK", "0") != "0"
    finished = False
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            args.handler(args)
        finished = True
    except KeyboardInterrupt:
        print(f"cellclr: interrupted{RESUME.get(args.verb, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read the output has gone (`cellclr ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        message = describe(e)
        if message is None or args.debug:
            raise
        print(f"cellclr: error: {message}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group(finished)
    return 0


def _leave_process_group(finished: bool) -> None:
    """Under torchrun: after the others have finished too, leave the process group cleanly
    (torch warns otherwise). After an error, leave without waiting: the others may never get
    there, and torchrun stops them when this process exits (an NCCL group is left to the exit,
    since its shutdown would wait for them)."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from cellclr.learning.distributed import leave, world_from_env

    if finished or dist.get_backend() != "nccl":
        leave(world_from_env(), wait=finished)


if __name__ == "__main__":
    sys.exit(main())
