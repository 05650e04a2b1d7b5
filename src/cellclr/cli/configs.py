"""The ``configs`` verb: list the shipped configs, or print one to copy and edit."""

from __future__ import annotations

import argparse
import sys

from cellclr.cli.common import Verb


def _configs_args(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(
        dest="action", metavar="ACTION", help="show NAME: print one (without it: list them)"
    )
    show = actions.add_parser(
        "show",
        help="print a shipped config verbatim",
        description="Print a shipped config verbatim, e.g. "
        "`cellclr configs show bbbc021-cpu > my.toml` to copy and edit it.",
    )
    show.add_argument("name", metavar="NAME", help="a name that `cellclr configs` lists")


def _configs(args: argparse.Namespace) -> None:
    from cellclr.config import ConfigError
    from cellclr.shipped import description, listing, shipped_names, shipped_path

    if args.action == "show":
        path = shipped_path(args.name)
        if path is None:
            raise ConfigError(f"{args.name!r} is not a shipped config ({listing()})")
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return
    names = shipped_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {description(name)}")


VERBS = (
    Verb(
        "configs",
        "list the shipped configs; `configs show NAME` prints one",
        "List the configs shipped with cellclr, each with a one-line description. Use one by "
        "name (`--config bbbc021-cpu`), or print it with `cellclr configs show NAME > my.toml`, "
        "edit the copy and pass its path (`--config my.toml`).",
        _configs_args,
        _configs,
    ),
)
