"""The configuration reference, written from the config's models (``docs/configuration.md`` is
this module's output: ``python -m cellclr.config.reference > docs/configuration.md``; a test
checks that they agree, so no key goes undocumented)."""

from __future__ import annotations

import sys
import typing
from typing import Any

from cellclr.config.sections import Config

HEADER = """# Configuration reference

A TOML file overrides the defaults below, and `--set section.key=value` (or, from Python, a dict
`{"section.key": value}`) overrides the file. `--config` takes a file or a shipped config's
name (`cellclr configs` lists them; `cellclr configs show NAME > my.toml` prints one to edit).
Unknown keys, wrong types, `nan`/`inf`, unknown choices and values out of range are errors that
name the file or override. Every output folder keeps the resolved `config.toml`. Keys marked
*runtime* change how fast a stage runs or where it reads, not what it produces: they are left
out of the stage's fingerprint, so changing them does not redo finished stages.

This page is generated from the config's models (`python -m cellclr.config.reference`).
"""


def _type(annotation: Any) -> str:
    """A short name for a key's type: ``int``, ``float``, ``bool``, ``text``, ``list``, or its
    choices."""
    base = annotation
    while typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    if typing.get_origin(base) is typing.Literal:
        return " \\| ".join(f"`{c}`" for c in typing.get_args(base))
    if typing.get_origin(base) is list:
        return "list"
    return {int: "integer", float: "number", bool: "true/false", str: "text"}.get(base, str(base))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    return f"`{value}`"


def reference() -> str:
    """The configuration reference as Markdown: a table per section."""
    out = [HEADER]
    for name, section in Config.model_fields.items():
        model = section.annotation
        doc = " ".join((model.__doc__ or "").split())
        out += [f"## `[{name}]`", "", doc, "", "| key | type | default | what it does |"]
        out += ["|---|---|---|---|"]
        runtime = model.runtime_keys()
        for key, field in model.model_fields.items():
            what = field.description or ""
            if key in runtime:
                what += " *(runtime)*"
            default = _value(field.get_default(call_default_factory=True))
            out.append(f"| `{key}` | {_type(field.annotation)} | {default} | {what} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference())
