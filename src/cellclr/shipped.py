"""The configs shipped inside the package (``cellclr/configs/NAME.toml``), addressed by name.

``--config bbbc021-cpu`` (or ``load_config("bbbc021-cpu")``) names one of them: a value that is
not an existing file, has no path separator and no ``.toml`` suffix. Anything else is a path.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

SUFFIX = ".toml"


def _folder() -> Path:
    return Path(str(files("cellclr") / "configs"))


def shipped_names() -> list[str]:
    """The names of the shipped configs, sorted."""
    return sorted(p.stem for p in _folder().glob(f"*{SUFFIX}"))


def is_name(value: str | Path) -> bool:
    """Whether ``value`` names a shipped config rather than a file: not an existing file, no
    path separator and no ``.toml`` suffix."""
    text = str(value)
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return (
        bool(text)
        and not any(s in text for s in separators)
        and not text.endswith(SUFFIX)
        and not Path(text).is_file()
    )


def shipped_path(name: str) -> Path | None:
    """The file of the shipped config ``name``, or None when there is no such config."""
    path = _folder() / f"{name}{SUFFIX}"
    return path if name in shipped_names() else None


def listing() -> str:
    """``a, b, c``: the shipped names, for error messages."""
    return ", ".join(shipped_names())


def description(name: str) -> str:
    """The first comment line of a shipped config: what it is for, in one line."""
    path = shipped_path(name)
    lines = path.read_text(encoding="utf-8").splitlines() if path else []
    first = lines[0] if lines else ""
    return first.removeprefix("#").strip() if first.startswith("#") else ""
