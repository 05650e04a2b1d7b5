"""What the verbs share: the ``Verb`` record, common arguments, and result printing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellclr.config import Config


@dataclass(frozen=True)
class Verb:
    """One ``cellclr VERB``: its help, its arguments and the function that runs it."""

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum, {low}")
        return value

    return parse


def config_args(p: argparse.ArgumentParser, default_from: str | None = None) -> None:
    where = f" (default: the config saved in {default_from})" if default_from else ""
    p.add_argument(
        "--config",
        metavar="NAME_OR_FILE",
        help=f"a shipped config's name (`cellclr configs` lists them) or a TOML file{where}",
    )
    set_arg(p, "override a config key, e.g. --set train.epochs=5 (repeatable)")


def set_arg(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)


def overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def any_crop_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--any-crop-size",
        action="store_true",
        help="embed crops of another size than the model learnt from (resized to its view "
        "size: right only when their pixels are smaller or larger in the same ratio)",
    )


def channel_list(text: str | list[str] | None) -> list[str] | None:
    """``DNA, Tubulin,Actin`` (or ``["DNA", "Tubulin,Actin"]``, as ``names_arg`` collects
    them) -> ``["DNA", "Tubulin", "Actin"]``."""
    if not text:
        return None
    parts = [text] if isinstance(text, str) else text
    return [c.strip() for part in parts for c in part.split(",") if c.strip()]


def names_arg(p: argparse.ArgumentParser, flag: str, help: str, metavar: str = "NAME") -> None:
    """An option naming several things, written either way: ``--plates A,B`` or ``--plates A
    B`` (read back with ``channel_list``)."""
    p.add_argument(flag, nargs="+", metavar=metavar, help=f"{help} (comma- or space-separated)")


def config_of(args: argparse.Namespace, upstream: Path | None = None) -> Config:
    """``--config`` (else the config saved in the upstream stage's folder), then ``--set``."""
    from cellclr.config import load_config

    path = args.config
    if path is None and upstream is not None and (upstream / "config.toml").is_file():
        path = upstream / "config.toml"
    return load_config(path, args.set)


def print_metrics(eval_dir: Path) -> None:
    from cellclr.outputs import read_json_object
    from cellclr.profiling.results import summary_lines

    metrics = read_json_object(eval_dir / "metrics.json")
    print("\n".join(summary_lines(metrics)))
    print(f"results: {eval_dir}")


def print_results(run: Path) -> None:
    from cellclr.pipeline import format_results, load_results

    results = load_results(run)
    if not results.empty:
        print(format_results(results))
    metrics = run / "eval" / "metrics.json"
    if metrics.is_file():
        from cellclr.outputs import read_json_object

        skipped = read_json_object(metrics).get("skipped") or {}
        for what, why in skipped.items():
            print(f"skipped {what}: {why}")
    print(f"results: {run}")
