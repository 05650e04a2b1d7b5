"""Numbers and labels as the report writes them (plain text; the template escapes it)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd


def score(m: dict[str, Any]) -> str:
    """``34/103 (33.0%)``."""
    total = m.get("total", 0)
    pct = f"{100 * m['correct'] / total:.1f}%" if total else "n/a"
    return f"{m.get('correct', 0)}/{total} ({pct})"


def drop(metrics: dict[str, Any]) -> str:
    value = metrics.get("drop_pct")
    return "n/a" if value is None or pd.isna(value) else f"{value:.1f} points"


def ci(m: dict[str, Any]) -> str:
    low, high = m.get("ci95", [None, None])
    if low is None or pd.isna(low):
        return "–"
    return f"{100 * low:.0f}–{100 * high:.0f}%"


def mean_ap(m: dict[str, Any]) -> str:
    value = m.get("map")
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def batch_measure(m: dict[str, Any] | None, key: str = "map", percent: bool = False) -> str:
    """A batch measure beside its chance level: ``0.337 (0.105)``, ``41% (15%)``; "–" where
    it was not computed."""
    value = (m or {}).get(key)
    if value is None or pd.isna(value):
        return "–"
    chance = (m or {}).get("chance")
    form = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.3f}")
    return form(value) + ("" if chance is None or pd.isna(chance) else f" ({form(chance)})")


def retrieved(m: dict[str, Any]) -> str:
    """The share of treatments retrieved: ``4/6 (67%)``, or ``67%`` without the count."""
    fraction = m.get("retrieved")
    if fraction is None or pd.isna(fraction):
        return "–"
    total = m.get("treatments")
    n = m.get("n_retrieved", None if not total else round(fraction * total))
    return f"{n}/{total} ({100 * fraction:.0f}%)" if total else f"{100 * fraction:.0f}%"


def plural(n: Any, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {sec} s"


def natural_key(text: str) -> list[Any]:
    """Sort key putting Week2 before Week10."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


def batch_label(label: Any) -> str:
    """A batch label as shown: multi-week labels (``Week1,Week2``) become ``multi (2 weeks)``."""
    parts = str(label).split(",")
    return str(label) if len(parts) == 1 else f"multi ({len(parts)} weeks)"
