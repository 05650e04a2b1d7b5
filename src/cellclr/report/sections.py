"""The data of each part of the report page: plain dicts and lists of strings and numbers
(table rows, notes, figures as data URIs) for ``templates/report.html`` to lay out.

A table is ``{"header": [...], "rows": [[cell, ...], ...], "right": [column, ...],
"main": [row, ...]}``: ``right`` columns are right-aligned numbers, ``main`` rows are bold. A
cell is a string, or ``{"kind": ..., "text": ..., "detail": ...}`` for one that the template
marks up: ``treatment`` (the concentration in ``detail``, in grey), ``batch`` (the full label in
``detail`` as a tooltip), ``code``, ``bold``, or a text class: ``muted``, ``ok``, ``bad``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from cellclr.profiling.evaluate import variants
from cellclr.report import channels, figures
from cellclr.report.data import RunData, read_json, stage_times
from cellclr.report.formatting import (
    batch_label,
    ci,
    drop,
    duration,
    mean_ap,
    natural_key,
    plural,
    score,
)
from cellclr.store import StoreError

BASELINE_NOTES = {
    "random": "the same encoder with random weights",
    "classic": "CellProfiler-like features",
    "cellprofiler": "CellProfiler's measurements (cp_measure)",
}
METHOD_NAMES = {"simclr": "SimCLR", "supcon": "SupCon", "dino": "DINO"}

Cell = str | dict[str, str]

# an array of scalars as tomli_w writes it: one indented item a line (strings never span lines)
_TOML_ARRAY = re.compile(r"\[\n((?: {4}[^\n\[\]{}]*,\n)+)\]")


def _cell(kind: str, text: Any, detail: Any = "") -> dict[str, str]:
    return {"kind": kind, "text": str(text), "detail": str(detail)}


def _table(
    header: list[str],
    rows: list[list[Cell]],
    right: Collection[int] = (),
    main: Collection[int] = (),
) -> dict[str, Any]:
    return {"header": header, "rows": rows, "right": sorted(right), "main": sorted(main)}


def _toml(config: dict[str, Any]) -> str:
    """The config as TOML, arrays of scalars on one line (``knn = [3, 5]``)."""
    return _TOML_ARRAY.sub(
        lambda m: "[" + ", ".join(item.strip()[:-1] for item in m[1].splitlines()) + "]",
        tomli_w.dumps(config),
    ).strip()


def _image(png: figures.Png, alt: str) -> dict[str, Any]:
    return {"src": png.uri, "width": png.width, "alt": alt}


def _treatment(compound: Any, concentration: Any) -> Cell:
    if pd.isna(compound):
        return "–"
    return _cell("treatment", compound, f"{float(concentration):g}")


def _batch(label: Any) -> Cell:
    """A batch label for a table; multi-week labels are shortened, the full one in a tooltip."""
    if pd.isna(label):
        return "–"
    return _cell("batch", batch_label(label), label)


def header(run: RunData) -> dict[str, Any]:
    """The title, headline cards and one sentence each on what was evaluated and the model."""
    m = run.metrics
    evaluated = (run.folders or [run.path])[0] / "eval" / "metrics.json"
    finished = datetime.fromtimestamp(evaluated.stat().st_mtime)
    cards = [
        ("NSC", score(m["nsc"]), "nearest treatment of another compound has the same MoA"),
        ("NSCB", score(m["nscb"]), "… and comes from another batch"),
        ("Drop", drop(m), "NSC − NSCB accuracy"),
    ]
    facts: dict[str, Any] = {
        key: str(m.get(key, "?")) for key in ("n_treatments", "n_compounds", "n_moas")
    }
    facts["distance"] = str(m.get("distance", "cosine"))
    facts["dropped"] = ", ".join(m.get("nscb_dropped_moas") or [])
    model, train = run.config.get("model", {}), run.config.get("train", {})
    if model and train:
        facts["model"] = {
            "arch": str(model.get("arch")),
            "stem": str(model.get("stem")),
            "epochs": plural(train.get("epochs"), "epoch"),
            "batch_size": str(train.get("batch_size")),
            "size": str(run.config.get("augment", {}).get("size")),
        }
    return {
        "name": run.path.resolve().name,
        "folder": str(run.path.resolve()),
        "evaluated": f"{finished:%Y-%m-%d %H:%M}",
        "written": f"{datetime.now():%Y-%m-%d %H:%M}",
        "cards": [{"label": k, "value": v, "sub": s} for k, v, s in cards],
        "facts": facts,
    }


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


def results(run: RunData) -> dict[str, Any]:
    """NSC, NSCB, mAP and replicate mAP of each post-processing variant, for this run (each
    method, in a comparison) and its baselines."""
    this = f"{run.name} (this run)" if run.name == "cellclr" else run.name
    runs = [(this, about(run.name, run.metrics), run.metrics)]
    runs += [(name, about(name, m), m) for name, m in run.baselines.items()]
    rows: list[list[Cell]] = []
    for name, text, m in runs:
        for i, (variant, v) in enumerate(variants(m).items()):
            label: list[Cell] = [name, _cell("muted", text)] if i == 0 else ["", ""]
            nsc, nscb = v["nsc"], v["nscb"]
            scores = [score(nsc), ci(nsc), score(nscb), ci(nscb), drop(v)]
            replicate = mean_ap(v.get("replicate") or {})
            rows.append([*label, variant, *scores, mean_ap(nsc), mean_ap(nscb), replicate])
    header = ["Profiles", "", "Post-processing", "NSC", "95% CI", "NSCB", "95% CI", "Drop"]
    header += ["mAP", "mAP (batch)", "Replicate mAP"]
    return {
        "table": _table(header, rows, right=range(3, 11), main={0}),
        "skipped": [
            f"{name}: post-processing {v} not computed: {why}"
            for name, _, m in runs
            for v, why in m.get("skipped_variants", {}).items()
        ],
        "note": run.notes.get("results"),
    }


def training(run: RunData) -> dict[str, Any]:
    """The training curves and a sentence summing them up (for each method of a comparison)."""
    if run.train_log is None:
        return {"note": run.notes["training"]}
    stage = read_json((run.folders or [run.path])[0] / "model" / "stage.json")
    logs = [(run.name, run.train_log), *run.train_logs.items()]
    return {"device": str(stage.get("device", "?")), "runs": [_curves(n, log) for n, log in logs]}


def _curves(name: str, log: pd.DataFrame) -> dict[str, Any]:
    selection = ""
    if "replicate_map" in log and log["replicate_map"].notna().any():
        picked = log.dropna(subset=["replicate_map"])
        best = picked.loc[picked["replicate_map"].idxmax()]
        selection = (
            f"; replicate mAP {best['replicate_map']:.3f} at its best (epoch {best['epoch']})"
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
    dropped = set(run.metrics.get("nscb_dropped_moas") or [])
    nsc = run.nsc.groupby("Metadata_MoA")["Correct"].agg(["sum", "count"])
    nscb = run.nscb.groupby("Metadata_MoA")["Correct"].agg(["sum", "count"])
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
        _moa=table["Metadata_MoA"].astype(str).str.lower(),
        _compound=table["Metadata_Compound"].astype(str).str.lower(),
    ).sort_values(["_moa", "_compound", "Metadata_Concentration"])
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


def neighbours(run: RunData) -> dict[str, Any]:
    """Per-MoA scores, and every treatment with its nearest neighbour (NSC and NSCB)."""
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


def confusion(run: RunData) -> dict[str, Any]:
    titles = (f"NSC: {score(run.metrics['nsc'])}", f"NSCB: {score(run.metrics['nscb'])}")
    png = figures.confusion_figure(run.nsc, run.nscb, titles)
    return {"figure": _image(png, "MoA confusion matrices for NSC and NSCB")}


def profile_map(run: RunData) -> dict[str, Any]:
    """A PCA map of the treatment (and well) profiles of the run and of each baseline."""
    maps = [
        {
            "name": name,
            "about": "this run" if name == "cellclr" else about(name, run.baselines.get(name, {})),
            "figure": _image(
                figures.map_figure(t, run.wells.get(name), name, run.control),
                f"PCA map of {name} treatment profiles",
            ),
        }
        for name, t in run.profiles.items()
    ]
    return {"control": run.control, "note": run.notes.get("map"), "maps": maps}


def example_cells(run: RunData) -> dict[str, Any]:
    """A mosaic of random cells per MoA, or a note on why there is none."""
    store = run.store
    if store is None:
        return {"note": run.notes["cells"]}
    if "Metadata_MoA" not in store.cells:
        return {"note": "the crop store has no Metadata_MoA column, so no example cells are shown."}
    wanted = run.config.get("report", {}).get("channels") or []
    shown = channels.select(store.channels, wanted, store.path)  # errors before reading
    picked = figures.sample_cells(store.cells, run.control)
    try:
        crops = store.read(np.concatenate(list(picked.values())))[:, shown.indices]
    except (StoreError, OSError) as e:
        return {"note": f"the crops could not be read ({e})."}
    labels = [f"{m} (control)" if m == run.control else m for m in picked]
    png = figures.cells_figure(crops, [len(i) for i in picked.values()], labels, shown.colours)
    legend = figures.legend_figure(crops, shown.names, shown.colours)
    return {
        "per_moa": figures.CELLS_PER_MOA,
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
        "figure": _image(png, "example cells per MoA"),
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
