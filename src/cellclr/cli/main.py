"""The ``cellclr`` command: one verb per pipeline stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import os
import shlex
import sys
from collections.abc import Iterator

from tqdm import tqdm

from cellclr import __version__
from cellclr.cli import configs, cropping, datasets, learning, profiling, runs, store
from cellclr.errors import CellclrError

log = logging.getLogger(__name__)

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
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show only warnings and errors (no progress notes)",
    )
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="show debugging messages too"
    )
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


class TqdmHandler(logging.Handler):
    """Writes each message to standard error with ``tqdm.write``, which redraws a progress bar
    below the message instead of breaking it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class MessageFormatter(logging.Formatter):
    """The message alone; a warning or an error says so first (``cellclr: warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"cellclr: {record.levelname.lower()}: {message}"
        return message


def log_level(args: argparse.Namespace) -> int:
    """DEBUG with -v; WARNING with -q, and in all but the main process under torchrun (whose
    progress notes would repeat the main process's); INFO otherwise."""
    if args.verbose:
        return logging.DEBUG
    if args.quiet or os.environ.get("RANK", "0") != "0":
        return logging.WARNING
    return logging.INFO


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """The library's messages (the ``cellclr`` logger) on standard error, from ``level`` up,
    while a verb runs; the logger is left as it was afterwards."""
    logger = logging.getLogger("cellclr")
    handler = TqdmHandler()
    handler.setFormatter(MessageFormatter())
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(build_parser(), attach_dashed_values(list(argv)))
    # under torchrun only the main process prints results (stdout); the others' progress notes
    # are left out by log_level (their warnings and errors still show, on stderr)
    quiet = os.environ.get("RANK", "0") != "0"
    finished = False
    try:
        with (
            logging_to_stderr(log_level(args)),
            contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext(),
        ):
            log.debug(f"cellclr {__version__}: cellclr {shlex.join(argv)}")
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
