"""The plate layout: for each plate, heat maps in the plate's own layout of the cells per well
and of each well's cosine distance to the plate's control wells (what screeners look at first:
edge effects, empty or failed wells, dispensing errors and strong treatments show at a glance).

Wells are named by row letters and column numbers (``B03``, ``AF48``); the plate format (96,
384 or 1536 wells) is the smallest that holds every row and column seen.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from cellclr.columns import CELL_COUNT, PLATE, WELL
from cellclr.metadata import feature_columns, unit_rows
from cellclr.report.data import RunData
from cellclr.report.figures import PAGE_IN, Png, subplots, to_png
from cellclr.report.formatting import natural_key, plural
from cellclr.report.markup import image

WELL_NAME = re.compile(r"([A-Za-z]+)0*(\d+)")
FORMATS = ((8, 12), (16, 24), (32, 48))  # rows x columns of 96-, 384- and 1536-well plates
MAX_PLATES = 12  # plates drawn; the others are named in a note
EMPTY = "#eef1f4"  # wells without data


def well_position(name: str) -> tuple[int, int]:
    """Zero-based (row, column) of a well name: ``"B03"`` -> (1, 2), ``"AA1"`` -> (26, 0)
    (rows A..Z, then AA, AB, ...); ``ValueError`` for a name that is not one."""
    m = WELL_NAME.fullmatch(str(name).strip())
    if m is None or int(m[2]) < 1:
        raise ValueError(f"{name!r} is not a well name like B03")
    row = 0
    for letter in m[1].upper():
        row = 26 * row + ord(letter) - ord("A") + 1
    return row - 1, int(m[2]) - 1


def row_name(row: int) -> str:
    """The letters of a zero-based row: 0 -> A, 25 -> Z, 26 -> AA."""
    name, n = "", row + 1
    while n:
        n, rest = divmod(n - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def plate_format(rows: int, columns: int) -> tuple[int, int]:
    """The (rows, columns) of the smallest standard plate with at least ``rows`` rows and
    ``columns`` columns (96, 384, 1536 wells); larger layouts keep their own extent."""
    for shape in FORMATS:
        if rows <= shape[0] and columns <= shape[1]:
            return shape
    return rows, columns


def distance_to_reference(x: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cosine distance of each row of ``x`` (wells x features) to the mean of the ``controls``
    rows, or, when there is none, to the median of all rows; and whether controls were used."""
    x = np.asarray(x, dtype=np.float64)
    used = bool(np.any(controls))
    reference = x[controls].mean(axis=0) if used else np.median(x, axis=0)
    return 1.0 - unit_rows(x) @ unit_rows(reference[None])[0], used


def _ticks(ax: Axes, shape: tuple[int, int]) -> None:
    n_rows, n_cols = shape
    row_step, col_step = (1, 1) if n_cols <= 24 else (2, 3)
    rows, cols = range(0, n_rows, row_step), range(0, n_cols, col_step)
    size = 8 if n_cols <= 12 else 6.5
    ax.set_yticks(list(rows), [row_name(r) for r in rows], fontsize=size)
    ax.set_xticks(list(cols), [str(c + 1) for c in cols], fontsize=size)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_color("#c0c7cf")


def _value(value: float, counts: bool) -> str:
    if counts:
        return f"{value:.0f}"
    return f"{value:.2g}" if abs(value) >= 0.001 else "0"


def _heat(ax: Axes, grid: np.ndarray, cmap: str, label: str, title: str, annotate: bool) -> None:
    """A plate's values on a colour scale from 0 (wells without data pale grey); each written
    in its well when the plate is small enough."""
    colours = colormaps[cmap].with_extremes(bad=EMPTY)
    finite = grid[np.isfinite(grid)]
    high = max(float(finite.max()) if finite.size else 0.0, 1e-6)
    shown = ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=0, vmax=high)
    ax.figure.colorbar(shown, ax=ax, shrink=0.85, label=label, pad=0.02)
    if annotate:
        for (r, c), value in np.ndenumerate(grid):
            if np.isfinite(value):
                colour = "white" if value / high > 0.6 else "#1f2933"
                text = _value(value, label == "cells")
                ax.text(c, r, text, ha="center", va="center", fontsize=6.5, color=colour)
    ax.set_title(title, fontsize=10)
    _ticks(ax, grid.shape)


def plate_figure(
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    cells: np.ndarray,
    distance: np.ndarray | None,
    controls: np.ndarray,
    reference: str,
) -> Png:
    """One plate: cells per well (left) and, when given, distance to ``reference`` (right);
    wells without data are pale grey, control wells outlined."""
    panels = 1 if distance is None else 2
    width = PAGE_IN if panels == 2 else PAGE_IN / 2 + 0.4
    panel_w = (PAGE_IN - 1.6) / 2
    fig, axes = subplots(width, panel_w * shape[0] / shape[1] + 0.9, panels)
    annotate = shape[0] * shape[1] <= 96
    grid = np.full(shape, np.nan)
    grid[rows, cols] = cells
    _heat(axes[0], grid, "Blues", "cells", "cells per well", annotate)
    if distance is not None:
        grid = np.full(shape, np.nan)
        grid[rows, cols] = distance
        _heat(axes[1], grid, "OrRd", "cosine distance", f"distance to {reference}", annotate)
        for r, c in zip(rows[controls], cols[controls], strict=True):
            lw = 1.4 if shape[1] <= 24 else 0.8
            outline = Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="#1f2933", lw=lw)
            axes[1].add_patch(outline)
    return to_png(fig)


def _well_counts(run: RunData) -> tuple[pd.DataFrame | None, str]:
    """The well table (plate, well, cells, features when profiled) and where it comes from."""
    wells = run.wells.get(run.name)
    if wells is not None:
        return wells, "profiles"
    if run.store is not None and {PLATE, WELL} <= set(run.store.cells):
        counts = run.store.cells.groupby([PLATE, WELL], observed=True)
        return counts.size().rename(CELL_COUNT).reset_index(), "store"
    return None, ""


def _reference(run: RunData, plate: pd.DataFrame, known: bool) -> tuple[np.ndarray, str]:
    """The control wells of one plate, and what the distance is measured to."""
    column = run.treatment[0]
    if not known:
        return np.zeros(len(plate), bool), "the median well (no treatments known)"
    controls = (plate[column].astype(str) == run.control).to_numpy()
    if not controls.any():
        return controls, f"the median well (no {run.control} well on this plate)"
    return controls, f"the mean of {plural(int(controls.sum()), run.control + ' well')}"


def plate_wells(run: RunData) -> tuple[pd.DataFrame, str, list[str]] | None:
    """Each well of the run with its plate, ``Row`` and ``Column`` (zero-based), ``Cells``,
    ``Control``, ``Distance`` (to its plate's ``Reference``; NaN without profiles); where the
    wells come from (``profiles``, else ``store``) and the well names not like B03 (left out).
    None when there are neither profiles nor a crop store."""
    wells, source = _well_counts(run)
    if wells is None:
        return None
    positions, bad = [], []
    for name in wells[WELL]:
        try:
            positions.append(well_position(name))
        except ValueError:
            positions.append((-1, -1))
            bad.append(str(name))
    where = np.array(positions, dtype=np.int64).reshape(-1, 2)
    cells = wells.get(CELL_COUNT, pd.Series(np.nan, index=wells.index))
    out = pd.DataFrame(
        {
            PLATE: wells[PLATE].astype(str).to_numpy(),
            WELL: wells[WELL].astype(str).to_numpy(),
            "Row": where[:, 0],
            "Column": where[:, 1],
            "Cells": cells.to_numpy(float),
            "Control": False,
            "Distance": np.nan,
            "Reference": "",
        }
    )
    features = feature_columns(wells) if source == "profiles" else []
    x = wells[features].select_dtypes("number").to_numpy(np.float64) if features else None
    known = run.treatment[0] in wells and bool(wells[run.treatment[0]].notna().any())
    for _, idx in out.groupby(PLATE, sort=False).indices.items():
        controls, reference = _reference(run, wells.iloc[idx], known)
        out.loc[idx, "Control"], out.loc[idx, "Reference"] = controls, reference
        if x is not None:
            out.loc[idx, "Distance"] = distance_to_reference(x[idx], controls)[0]
    return out[out["Row"] >= 0].reset_index(drop=True), source, bad


def plate_layout(run: RunData) -> dict[str, Any]:
    """A heat map pair per plate (up to ``MAX_PLATES``), with notes on what is missing."""
    found = plate_wells(run)
    if found is None:
        return {"note": run.notes.get("wells", "no well profiles.") + " No crop store either."}
    wells, source, bad = found
    notes = []
    if source == "store":
        notes.append(
            f"{run.notes.get('wells', 'no well profiles.')} Cells per well are counted in the crop "
            "store; no distance map without profiles."
        )
    if bad:
        shown = ", ".join(sorted(set(bad), key=natural_key)[:10])
        notes.append(f"{plural(len(bad), 'well')} left out, not named like B03: {shown}.")
    if wells.empty:
        return {"note": " ".join(notes)}
    shape = plate_format(int(wells["Row"].max()) + 1, int(wells["Column"].max()) + 1)
    plates = sorted(wells[PLATE].unique(), key=natural_key)
    figures = []
    for plate in plates[:MAX_PLATES]:
        t = wells[wells[PLATE] == plate]
        distance = t["Distance"].to_numpy() if source == "profiles" else None
        reference = str(t["Reference"].iloc[0])
        rows, cols, controls = t["Row"].to_numpy(), t["Column"].to_numpy(), t["Control"].to_numpy()
        png = plate_figure(shape, rows, cols, t["Cells"].to_numpy(), distance, controls, reference)
        counted = (
            f"{int(t['Cells'].sum()):,} cells" if t["Cells"].notna().all() else "no cell counts"
        )
        caption = f"{plural(len(t), 'well')}, {counted}"
        if distance is not None:
            caption += f"; cosine distance of each well's profile to {reference}"
        figures.append({"name": plate, "caption": caption, "figure": image(png, plate)})
    if len(plates) > MAX_PLATES:
        rest = plates[MAX_PLATES:]
        notes.append(
            f"{plural(len(rest), 'more plate')} not shown: {', '.join(rest[:20])}"
            + (" ..." if len(rest) > 20 else ".")
        )
    return {"format": shape[0] * shape[1], "plates": figures, "source": source, "notes": notes}
