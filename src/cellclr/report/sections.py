"""The data of each part of the report page: plain dicts and lists of strings and numbers
(table rows, notes, figures as data URIs, built with ``markup``) for ``templates/report.html``
to lay out; ``None`` for a section that makes no sense for the run (MoA sections without NSC).
The plate layout is in ``plates``, the activity and consistency sections in ``activity``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from cellclr.columns import COMPOUND, CONCENTRATION, MOA, PLATE, WELL
from cellclr.profiling.evaluate import variants
from cellclr.report import channels, figures
from cellclr.report.activity import activity_of
from cellclr.report.data import RunData, read_json, stage_times
from cellclr.report.formatting import (
    batch_measure,
    ci,
    drop,
    duration,
    mean_ap,
    natural_key,
    plural,
    retrieved,
    score,
)
from cellclr.report.markup import Cell
from cellclr.report.markup import batch as _batch
from cellclr.report.markup import cell as _cell
from cellclr.report.markup import image as _image
from cellclr.report.markup import table as _table
from cellclr.report.markup import treatment as _treatment
from cellclr.store import StoreError

BASELINE_NOTES = {
    "random": "the same encoder with random weights",
    "classic": "CellProfiler-like features",
    "cellprofiler": "CellProfiler's measurements (cp_measure)",
}
METHOD_NAMES = {"simclr": "SimCLR", "supcon": "SupCon", "dino": "DINO"}
MEASURES = {
    "nsc": "NSC, NSCB and MoA mAP",
    "activity": "phenotypic activity",
    "consistency": "phenotypic consistency",
    "treatments": "treatment profiles",
}
MAX_CELL_GROUPS = 8  # rows of example cells without MoA: compounds, or wells

# an array of scalars as tomli_w writes it: one indented item a line (strings never span lines)
_TOML_ARRAY = re.compile(r"\[\n((?: {4}[^\n\[\]{}]*,\n)+)\]")


def _toml(config: dict[str, Any]) -> str:
    """The config as TOML, arrays of scalars on one line (``knn = [3, 5]``)."""
    return _TOML_ARRAY.sub(
        lambda m: "[" + ", ".join(item.strip()[:-1] for item in m[1].splitlines()) + "]",
        tomli_w.dumps(config),
    ).strip()


def about(name: str, metrics: dict[str, Any]) -> str:
    """What a representation is: a baseline's description, or the method that trained it and
    whether labels were used (weakly supervised)."""
    if name in BASELINE_NOTES:
        return BASELINE_NOTES[name]
    training = metrics.get("training") or {}
    method = METHOD_NAMES.get(str(training.get("method")), "SimCLR")
    supervision = str(training.get("supervision", "none"))
    if supervision.startswith("weak"):
        return f"{method}, weakly supervised ({supervision.removeprefix('weak: ')})"
    return f"{method} embeddings, no labels"


def _skipped(runs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """One line per measure or variant that a representation's evaluation skipped."""
    lines = []
    for name, _, m in runs:
        for measure, why in (m.get("skipped") or {}).items():
            if measure.startswith("consistency:"):
                what = f"consistency by {measure.split(':', 1)[1]}"
            else:
                what = MEASURES.get(measure, measure)
            lines.append(f"{name}: {what} not computed: {why}")
        for v, why in (m.get("skipped_variants") or {}).items():
            lines.append(f"{name}: post-processing {v} not computed: {why}")
    return lines


def results(run: RunData) -> dict[str, Any]:
    """NSC, NSCB, mAP and activity of each post-processing variant, for this run (each method,
    in a comparison) and its baselines; "–" for what was not computed."""
    this = f"{run.name} (this run)" if run.name == "cellclr" else run.name
    runs = [(this, about(run.name, run.metrics), run.metrics)] if run.metrics else []
    runs += [(name, about(name, m), m) for name, m in run.baselines.items() if m]
    rows: list[list[Cell]] = []
    for name, text, m in runs:
        for i, (variant, v) in enumerate(variants(m).items()):
            label: list[Cell] = [name, _cell("muted", text)] if i == 0 else ["", ""]
            nsc, nscb = v.get("nsc"), v.get("nscb")
            scores = [score(nsc), ci(nsc)] if nsc else ["–", "–"]
            scores += [score(nscb), ci(nscb)] if nscb else ["–", "–"]
            scores += [drop(v) if nsc else "–", mean_ap(nsc or {}), mean_ap(nscb or {})]
            act = activity_of(v)
            batch = [
                batch_measure(v.get("batch_retrieval_map")),
                batch_measure(v.get("same_batch_neighbours"), "rate", percent=True),
            ]
            rows.append([*label, variant, *scores, mean_ap(act), retrieved(act), *batch])
    header = ["Profiles", "", "Post-processing", "NSC", "95% CI", "NSCB", "95% CI", "Drop"]
    header += ["mAP", "mAP (batch)", "Activity mAP", "Retrieved"]
    header += ["Controls: same-batch mAP (chance)", "Same-batch neighbours (chance)"]
    notes = [run.notes[key] for key in ("eval", "results") if key in run.notes]
    return {
        "table": _table(header, rows, right=range(3, 14), main={0}) if rows else None,
        "skipped": _skipped(runs),
        "note": " ".join(notes) or None,
    }


def training(run: RunData) -> dict[str, Any]:
    """The training curves and a sentence summing them up (for each method of a comparison)."""
    if run.train_log is None:
        return {"note": run.notes["training"]}
    stage = read_json((run.folders or [run.path])[0] / "model" / "stage.json")
    logs = [(run.name, run.train_log), *run.train_logs.items()]
    return {"device": str(stage.get("device", "?")), "runs": [_curves(n, log) for n, log in logs]}


# the label-free measure a training's best epoch is named by, first found first
SELECTED_BY = {"label_free_score": "label-free score", "replicate_map": "replicate mAP"}


def _curves(name: str, log: pd.DataFrame) -> dict[str, Any]:
    selection = ""
    measure = next((m for m in SELECTED_BY if m in log and log[m].notna().any()), None)
    if measure is not None:
        picked = log.dropna(subset=[measure])
        best = picked.loc[picked[measure].idxmax()]
        selection = (
            f"; {SELECTED_BY[measure]} {best[measure]:.3f} at its best (epoch {int(best['epoch'])})"
        )
    return {
        "name": name,
        "epochs": plural(len(log), "epoch"),
        "final_loss": f"{log['loss'].iloc[-1]:.4g}",
        "images_per_s": f"{log['images_per_s'].median():.0f}",
        "minutes": f"{log['seconds'].sum() / 60:.1f}",
        "selection": selection,
        "figure": _image(
            figures.training_figure(log), f"{name}: training loss, learning rate and throughput"
        ),
    }


def _per_moa(run: RunData) -> dict[str, Any]:
    assert run.nsc is not None and run.nscb is not None
    dropped = set(run.metrics.get("nscb_dropped_moas") or [])
    nsc = run.nsc.groupby(MOA)["Correct"].agg(["sum", "count"])
    nscb = run.nscb.groupby(MOA)["Correct"].agg(["sum", "count"])
    rows: list[list[Cell]] = []
    for moa, (ok, n) in sorted(nsc.iterrows(), key=lambda kv: natural_key(kv[0])):
        nscb_cell: Cell = "–"
        if moa in nscb.index:
            b = nscb.loc[moa]
            nscb_cell = score({"correct": int(b["sum"]), "total": int(b["count"])})
        elif moa in dropped:
            nscb_cell = _cell("muted", "left out (one batch)")
        rows.append([str(moa), str(n), score({"correct": int(ok), "total": int(n)}), nscb_cell])
    return _table(["MoA", "Treatments", "NSC", "NSCB"], rows, right={1, 2, 3})


def _neighbour_table(table: pd.DataFrame) -> dict[str, Any]:
    t = table.assign(
        _moa=table[MOA].astype(str).str.lower(),
        _compound=table[COMPOUND].astype(str).str.lower(),
    ).sort_values(["_moa", "_compound", CONCENTRATION])
    rows: list[list[Cell]] = []
    for r in t.itertuples(index=False):
        rows.append(
            [
                _treatment(r.Metadata_Compound, r.Metadata_Concentration),
                str(r.Metadata_MoA),
                _batch(r.Metadata_Batch),
                _treatment(r.Neighbor_Compound, r.Neighbor_Concentration),
                "–" if pd.isna(r.Neighbor_MoA) else str(r.Neighbor_MoA),
                _batch(r.Neighbor_Batch),
                "–" if pd.isna(r.Distance) else f"{r.Distance:.3g}",
                _cell("ok", "✓") if r.Correct else _cell("bad", "✗"),
            ]
        )
    header = ["Treatment", "MoA", "Batch", "Nearest neighbour", "Its MoA", "Its batch", "Distance"]
    return _table([*header, ""], rows, right={6})


def neighbours(run: RunData) -> dict[str, Any] | None:
    """Per-MoA scores, and every treatment with its nearest neighbour (NSC and NSCB); left out
    when NSC was not evaluated."""
    if "neighbours" in run.notes:
        return {"note": run.notes["neighbours"]}
    if not run.has_nsc:
        return None
    assert run.nsc is not None and run.nscb is not None
    return {
        "per_moa": _per_moa(run),
        "tables": [
            {
                "name": name,
                "score": score({"correct": int(table["Correct"].sum()), "total": len(table)}),
                "table": _neighbour_table(table),
            }
            for name, table in (("NSC", run.nsc), ("NSCB", run.nscb))
        ],
    }


def confusion(run: RunData) -> dict[str, Any] | None:
    if "neighbours" in run.notes:
        return {"note": run.notes["neighbours"]}
    if not run.has_nsc:
        return None
    assert run.nsc is not None and run.nscb is not None
    titles = (f"NSC: {score(run.metrics['nsc'])}", f"NSCB: {score(run.metrics['nscb'])}")
    png = figures.confusion_figure(run.nsc, run.nscb, titles)
    return {"figure": _image(png, "MoA confusion matrices for NSC and NSCB")}


def _about(run: RunData, name: str) -> str:
    return "this run" if name == "cellclr" else about(name, run.baselines.get(name, {}))


def _has_moa(t: pd.DataFrame | None) -> bool:
    return t is not None and MOA in t and bool(t[MOA].notna().any())


def profile_map(run: RunData) -> dict[str, Any]:
    """A PCA map of the treatment (and well) profiles of the run and of each baseline by MoA;
    without MoA, of the well profiles by plate and compound."""
    if _has_moa(run.profiles.get(run.name)):
        maps = [
            {
                "name": name,
                "about": _about(run, name),
                "figure": _image(
                    figures.map_figure(t, run.wells.get(name), name, run.control),
                    f"PCA map of {name} treatment profiles",
                ),
            }
            for name, t in run.profiles.items()
        ]
        return {"kind": "moa", "control": run.control, "note": run.notes.get("map"), "maps": maps}
    treatment = run.treatment[0]
    maps = [
        {
            "name": name,
            "about": _about(run, name),
            "figure": _image(
                figures.well_map_figure(w, name, run.control, treatment),
                f"PCA map of {name} well profiles",
            ),
        }
        for name, w in run.wells.items()
    ]
    known = run.name in run.wells and treatment in run.wells[run.name]
    return {
        "title": "Well profile map",
        "kind": "wells",
        "control": run.control,
        "treatment": treatment[9:].lower() if known else "",
        "note": None if maps else run.notes.get("wells", "no well profiles."),
        "maps": maps,
    }


def _cell_groups(run: RunData) -> tuple[str, dict[str, np.ndarray]]:
    """What the example cells are grouped by (MoA; else compound, the control first, then the
    commonest; else random wells) and the cells picked per group."""
    assert run.store is not None
    cells = run.store.cells
    if _has_moa(cells) and COMPOUND in cells:
        return "MoA", figures.sample_cells(cells, run.control)
    column = run.treatment[0]
    if column in cells and cells[column].notna().any():
        labels = cells[column].astype(str).where(cells[column].notna())
        counts = labels.value_counts()
        order = sorted(counts.index, key=lambda c: (c != run.control, -counts[c], natural_key(c)))
        return column[9:].lower(), figures.sample_groups(labels, order[:MAX_CELL_GROUPS])
    labels = cells[PLATE].astype(str) + " " + cells[WELL].astype(str)
    wells = labels.unique()
    rng = np.random.default_rng(figures.CELL_SEED)
    chosen = rng.choice(wells, min(MAX_CELL_GROUPS, len(wells)), replace=False)
    return "well", figures.sample_groups(labels, sorted(chosen, key=natural_key))


def _cells_intro(grouping: str, groups: list[str], control: str) -> str:
    n = figures.CELLS_PER_MOA
    if grouping == "MoA":
        return f"{n} random cells per MoA"
    if grouping == "well":
        return f"{n} random cells from each of {len(groups)} random wells (no treatments known)"
    first = f"{control} first, then " if control in groups else ""
    others = len(groups) - bool(first)
    return f"{n} random cells per {grouping}: {first}the {others} with the most cells"


def example_cells(run: RunData) -> dict[str, Any]:
    """A mosaic of random cells per MoA (else per compound, else per well), or a note on why
    there is none."""
    store = run.store
    if store is None:
        return {"note": run.notes["cells"]}
    if not len(store.cells):
        return {"note": f"the crop store {store.path} holds no cells."}
    wanted = run.config.get("report", {}).get("channels") or []
    shown = channels.select(store.channels, wanted, store.path)  # errors before reading
    grouping, picked = _cell_groups(run)
    try:
        crops = store.read(np.concatenate(list(picked.values())))[:, shown.indices]
    except (StoreError, OSError) as e:
        return {"note": f"the crops could not be read ({e})."}
    labels = [f"{m} (control)" if m == run.control else m for m in picked]
    png = figures.cells_figure(crops, [len(i) for i in picked.values()], labels, shown.colours)
    legend = figures.legend_figure(crops, shown.names, shown.colours)
    return {
        "intro": _cells_intro(grouping, list(picked), run.control),
        "grouping": grouping,
        "seed": figures.CELL_SEED,
        "store": str(store.path),
        "channels": [
            {"name": name, "colour": colour, "rgb": ",".join(str(round(255 * v)) for v in rgb)}
            for name, colour, rgb in zip(
                shown.names, shown.colour_names, shown.colours, strict=True
            )
        ],
        "hidden": ", ".join(shown.hidden),
        "chosen": bool(wanted),
        "low": f"{figures.STRETCH_PCT[0]:g}",
        "high": f"{figures.STRETCH_PCT[1]:g}",
        "legend": _image(legend, "legend: one cell, each channel alone in its colour"),
        "figure": _image(png, f"example cells per {grouping}"),
    }


def config(run: RunData) -> dict[str, Any]:
    """Stage timings of the run and its baselines, and the resolved config as TOML."""
    times = stage_times(run)
    timings = None
    if times:
        rows: list[list[Cell]] = [
            [t.stage, _cell("code", t.folder), duration(t.seconds)] for t in times
        ]
        total = sum(t.seconds for t in times)
        rows.append([_cell("bold", "total"), "", _cell("bold", duration(total))])
        timings = _table(["Stage", "Folder", "Time"], rows, right={2})
    return {
        "timings": timings,
        "toml": _toml(run.config) if run.config else None,
    }
