"""The building blocks of section data: table cells, tables and images, as plain dicts for
``templates/report.html``.

A table is ``{"header": [...], "rows": [[cell, ...], ...], "right": [column, ...],
"main": [row, ...]}``: ``right`` columns are right-aligned numbers, ``main`` rows are bold. A
cell is a string, or ``{"kind": ..., "text": ..., "detail": ...}`` for one that the template
marks up: ``treatment`` (the concentration in ``detail``, in grey), ``batch`` (the full label in
``detail`` as a tooltip), ``code``, ``bold``, or a text class: ``muted``, ``ok``, ``bad``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from cellclr.columns import COMPOUND, CONCENTRATION
from cellclr.report.figures import Png
from cellclr.report.formatting import batch_label

Cell = str | dict[str, str]


def cell(kind: str, text: Any, detail: Any = "") -> dict[str, str]:
    return {"kind": kind, "text": str(text), "detail": str(detail)}


def table(
    header: list[str],
    rows: list[list[Cell]],
    right: Collection[int] = (),
    main: Collection[int] = (),
) -> dict[str, Any]:
    return {"header": header, "rows": rows, "right": sorted(right), "main": sorted(main)}


def image(png: Png, alt: str) -> dict[str, Any]:
    return {"src": png.uri, "width": png.width, "alt": alt}


def treatment(compound: Any, concentration: Any) -> Cell:
    if pd.isna(compound):
        return "–"
    return cell("treatment", compound, f"{float(concentration):g}")


def batch(label: Any) -> Cell:
    """A batch label for a table; multi-week labels are shortened, the full one in a tooltip."""
    if pd.isna(label):
        return "–"
    return cell("batch", batch_label(label), label)


def treatment_of(row: pd.Series, columns: Sequence[str]) -> Cell:
    """A treatment named by its columns: compound and concentration (in grey) when those are
    the columns, else their values joined."""
    if list(columns) == [COMPOUND, CONCENTRATION]:
        return treatment(row[columns[0]], row[columns[1]])
    values = [str(row[c]) for c in columns if not pd.isna(row[c])]
    return " ".join(values) or "–"
