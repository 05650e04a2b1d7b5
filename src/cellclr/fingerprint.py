"""Fingerprints of a stage's inputs and config: equal fingerprints mean equal outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cellclr.config import Config
from cellclr.errors import CellclrError


def fingerprint(stage: str, inputs: list[str], cfg: Config, sections: tuple[str, ...]) -> str:
    d = cfg.to_dict()
    relevant: dict[str, Any] = {
        s: {k: v for k, v in d[s].items() if k not in runtime_keys(s)} for s in sections
    }
    blob = json.dumps({"stage": stage, "inputs": inputs, "config": relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | Path | None) -> str:
    """A digest of a file's bytes ('' for none): a stage input that is a file of another
    tool (a plate map, a feature table), fingerprinted by content, not by name."""
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise CellclrError(f"{path}: cannot read it ({e.strerror or e})") from None


def runtime_keys(section: str) -> set[str]:
    """The keys of a config section that change how fast a stage runs or where it reads, not
    what it produces (marked in ``cellclr.config.sections``): left out of fingerprints."""
    return Config.model_fields[section].annotation.runtime_keys()
