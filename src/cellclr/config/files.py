"""Reading a config: defaults, then a TOML file (a path, or a shipped config's name), then
``--set section.key=value`` overrides (or a dict of them); every problem is one ``ConfigError``
naming the file or override and the key."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from cellclr.config.sections import Config
from cellclr.errors import CellclrError, naming
from cellclr.shipped import is_name, listing, shipped_path

# keys that moved to another section: a config that still uses them gets told where
MOVED = {
    "train.temperature": "simclr.temperature (supcon.temperature for SupCon)",
    "train.label": "supcon.label",
    "model.proj_hidden": "simclr.proj_hidden (supcon.proj_hidden for SupCon)",
    "model.proj_dim": "simclr.proj_dim (supcon.proj_dim for SupCon)",
    "evaluate.control": "screen.control",
    "evaluate.tvn_lambda": "postprocess.tvn_lambda",
    "profile.treatment": "screen.treatment",
}

Overrides = Sequence[str] | Mapping[str, Any]


class ConfigError(CellclrError, ValueError):
    """A config file or override that cannot be used."""


def _message(error: dict[str, Any]) -> str:
    """One pydantic error as ``section.key: what is wrong``."""
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    where, kind, value, ctx = ".".join(loc), error["type"], error.get("input"), error.get("ctx")
    if kind == "extra_forbidden":
        if where in MOVED:
            return f"{where} is now {MOVED[where]}"
        model = Config if len(loc) == 1 else Config.model_fields[loc[0]].annotation
        known = ", ".join(model.model_fields)
        if len(loc) == 1:
            return f"unknown section [{where}] (known: {known})"
        return f"unknown key {where} (known: {known})"
    if kind == "literal_error":
        return f"{where}: {value!r} is not one of {ctx['expected'].replace(' or ', ', ')}"
    if kind in ("too_short", "too_long"):
        field = Config.model_fields[loc[0]].annotation.model_fields[loc[1]]
        low = next((m.min_length for m in field.metadata if hasattr(m, "min_length")), 0)
        high = next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)
        size = str(low) if low == high else f"at least {low}" if high is None else f"{low}-{high}"
        return f"{where}: expected a list of {size} values, got {value!r}"
    if kind == "value_error":  # a section's validator names its key; a key's names none
        return f"{where}.{ctx['error']}" if len(loc) == 1 else f"{where}: {ctx['error']}"
    explain = {
        "bool_type": "expected true or false",
        "int_type": "expected an integer",
        "float_type": "expected a number",
        "string_type": "expected a string",
        "list_type": "expected a list",
        "finite_number": "expected a finite number",
        "string_pattern_mismatch": "expected auto, cpu, cuda or cuda:N",
    }
    if kind in explain:
        return f"{where}: {explain[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {value!r} is out of range ({error['msg'].lower()})"
    return f"{where}: {error['msg']}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts; any problem is a ``ConfigError`` naming the source."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_message(e.errors()[0])}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    name, value = text.split("=", 1)
    section, key = _split(name, f"--set {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return section, key, parsed


def _split(name: str, source: str) -> tuple[str, str]:
    parts = name.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{source}: the key must look like section.key, e.g. train.epochs")
    return parts[0], parts[1]


def config_path(value: str | Path) -> Path:
    """The file of a config: ``value`` as a path, or the shipped config it names (a value that
    is not a file, with no path separator and no .toml suffix, e.g. ``bbbc021-cpu``)."""
    if is_name(value):
        found = shipped_path(str(value))
        if found is None:
            raise ConfigError(
                f"config {str(value)!r}: neither a file nor a shipped config ({listing()})"
            )
        return found
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a file (--config takes a TOML file)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (shipped configs, by name: {listing()})")
    return path


def _overrides(overrides: Overrides) -> list[tuple[str, str, Any, str]]:
    """(section, key, value, source) of each override: ``"section.key=value"`` strings, or a
    dict ``{"section.key": value}`` (values as Python objects)."""
    if isinstance(overrides, Mapping):
        return [
            (*_split(k, f"override {k!r}"), v, f"override {k}={v!r}") for k, v in overrides.items()
        ]
    return [(*parse_override(text), f"--set {text}") for text in overrides]


def load_config(path: str | Path | None = None, overrides: Overrides = ()) -> Config:
    """Defaults, then the TOML file (if any: a path or a shipped config's name), then the
    overrides: ``["train.epochs=5"]`` (as ``--set`` takes them) or ``{"train.epochs": 5}``."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = config_from_dict(raw, str(path) if path else "config")
    for section, key, value, source in _overrides(overrides):
        merged = cfg.to_dict()
        if section not in merged:
            config_from_dict({section: {}}, source)  # names the unknown section
        merged[section][key] = value
        cfg = config_from_dict(merged, source)
    return cfg


ConfigLike = Config | str | Path | Mapping[str, Any] | None


def as_config(cfg: ConfigLike = None) -> Config:
    """What every stage function takes as ``cfg``: a ``Config``; a TOML path or a shipped
    config's name (``"bbbc021-cpu"``); a dict of overrides of the defaults
    (``{"train.epochs": 5}``); or None, the defaults (``cellclr configs`` lists them)."""
    if cfg is None:
        return load_config()
    if isinstance(cfg, Config):
        return cfg
    if isinstance(cfg, Mapping):
        return load_config(None, cfg)
    if isinstance(cfg, str | Path):
        return load_config(cfg)
    raise ConfigError(
        f"cfg: a Config, a TOML path, a shipped config's name or a dict of overrides, not "
        f"{type(cfg).__name__}"
    )


def save_config(cfg: Config, path: Path) -> None:
    with naming(path):
        path.write_text(tomli_w.dumps(cfg.to_dict()))
