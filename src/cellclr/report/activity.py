"""The label-free judgements of the profiles: phenotypic activity (each treatment's wells
retrieving one another against the control wells) and phenotypic consistency (treatments that
share an annotation retrieving one another), from ``eval/activity.parquet`` and
``eval/consistency.parquet``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cellclr.columns import WELL_COUNT
from cellclr.report.data import RunData
from cellclr.report.figures import PAGE_IN, Png, subplots, to_png
from cellclr.report.formatting import mean_ap, plural, retrieved
from cellclr.report.markup import Cell, cell, image, table, treatment_of

MAX_ROWS = 200  # table rows shown; the rest are counted
THRESHOLD = 0.05  # q below which a treatment counts as retrieved, when metrics.json does not say
LABELLED = 6  # retrieved treatments named on the figure (the highest mAP)
RETRIEVED = "#d1495b"


def activity_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """The activity summary of one variant's metrics ({} when none); older runs stored it as
    ``replicate``."""
    return dict(metrics.get("activity") or metrics.get("replicate") or {})


def _number(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None or pd.isna(value) else format(float(value), fmt)


def _why_not(run: RunData, measure: str, file: str, hint: str) -> str:
    """Why a measure has no table: the reason evaluate recorded, or the missing file."""
    if measure in run.skipped:
        return f"not computed: {run.skipped[measure]}"
    path = run.home / "eval" / file
    if not run.metrics:
        return run.notes.get("eval", f"not evaluated: {path} is missing.")
    return f"no {measure} scores: {path} is missing ({hint})."


def _ranked(t: pd.DataFrame, first: list[Cell]) -> list[list[Cell]]:
    """Rows of mAP, p, q and retrieved after each row's own ``first`` cells."""
    return [
        [
            *lead,
            _number(r["mAP"]),
            _number(r["p_value"]),
            _number(r["q_value"]),
            cell("ok", "✓") if bool(r["retrieved"]) else "",
        ]
        for lead, (_, r) in zip(first, t.iterrows(), strict=True)
    ]


def volcano_figure(t: pd.DataFrame, threshold: float, labels: list[str]) -> Png:
    """mAP against -log10(q), the q = threshold line dashed; retrieved treatments in colour,
    the ``LABELLED`` best of them named."""
    q = t["q_value"].to_numpy(float)
    floor = q[q > 0].min() if (q > 0).any() else 1e-6
    y = -np.log10(np.clip(q, floor, 1.0))
    x = t["mAP"].to_numpy(float)
    hit = t["retrieved"].to_numpy(bool)
    fig, (ax,) = subplots(PAGE_IN * 0.6, 4.6)
    ax.scatter(x[~hit], y[~hit], s=22, c="#b0b7c0", label="not retrieved", zorder=2)
    ax.scatter(
        x[hit],
        y[hit],
        s=26,
        c=RETRIEVED,
        ec="white",
        lw=0.4,
        zorder=3,
        label=f"retrieved (q < {threshold:g})",
    )
    ax.axhline(-np.log10(threshold), color="#616e7c", ls="--", lw=1)
    for i in np.flatnonzero(hit)[np.argsort(-x[hit], kind="stable")][:LABELLED]:
        left = x[i] > 0.8  # names of points near the right edge go to their left
        ax.annotate(
            labels[i],
            (x[i], y[i]),
            xytext=(-5 if left else 5, 3),
            fontsize=7.5,
            textcoords="offset points",
            ha="right" if left else "left",
            color="#1f2933",
        )
    ax.set(
        xlabel="mAP (retrieving the treatment's own wells against controls)",
        ylabel="-log10(q)",
        title="Phenotypic activity",
    )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    return to_png(fig)


def activity(run: RunData) -> dict[str, Any]:
    """The headline variant's treatments by activity mAP, with the summary and the figure."""
    t = run.activity
    if t is None or t.empty:
        hint = "older evaluations record only the mean, shown in Results"
        return {"note": _why_not(run, "activity", "activity.parquet", hint)}
    summary = activity_of(run.metrics)
    threshold = float(summary.get("threshold", THRESHOLD))
    t = t.sort_values("mAP", ascending=False, kind="stable").reset_index(drop=True)
    columns = [c for c in run.treatment if c in t] or [
        c for c in t if c.startswith("Metadata_") and c != WELL_COUNT
    ]
    names = [treatment_of(r, columns) for _, r in t.iterrows()]
    labels = [f"{n['text']} {n['detail']}" if isinstance(n, dict) else n for n in names]
    shown = t.head(MAX_ROWS)
    wells = shown[WELL_COUNT].astype(str) if WELL_COUNT in shown else ["–"] * len(shown)
    rows = _ranked(shown, [[n, w] for n, w in zip(names, wells, strict=False)])
    header = ["Treatment", "Wells", "mAP", "p", "q", "Retrieved"]
    replicates = {"other_plates": "on other plates", "any_well": "in any other well"}
    return {
        "summary": {
            "retrieved": retrieved({**summary, "treatments": summary.get("treatments", len(t))}),
            "map": mean_ap(summary) if summary else _number(t["mAP"].mean(), ".3f"),
            "threshold": f"{threshold:g}",
            "null": str(summary.get("null_size", "?")),
            "replicates": replicates.get(str(summary.get("replicates")), "in other wells"),
        },
        "count": len(t),
        "shown": len(shown),
        "table": table(header, rows, right={1, 2, 3, 4}),
        "figure": image(volcano_figure(t, threshold, labels), "activity mAP against -log10(q)"),
    }


def consistency(run: RunData) -> dict[str, Any]:
    """Per annotation column: its values by consistency mAP, with the column's summary."""
    t = run.consistency
    reasons = [
        f"{measure.split(':', 1)[1]}: not computed: {why}"
        for measure, why in run.skipped.items()
        if measure.startswith("consistency:")
    ]
    if t is None or t.empty:
        hint = "evaluate.consistency_by names the annotation columns to score"
        why = _why_not(run, "consistency", "consistency.parquet", hint)
        return {"note": why, "skipped": reasons}
    scores = run.metrics.get("consistency") or {}
    columns = []
    for column, part in t.groupby("Annotation", sort=True):
        part = part.sort_values("mAP", ascending=False, kind="stable").head(MAX_ROWS)
        pairs = zip(part["Value"], part["Treatments"], strict=True)
        lead: list[list[Cell]] = [[str(v), str(n)] for v, n in pairs]
        s = scores.get(column, {})
        columns.append(
            {
                "name": str(column),
                "groups": plural(s.get("groups", part["Value"].nunique()), "value"),
                "map": mean_ap(s) if s else _number(part["mAP"].mean(), ".3f"),
                "retrieved": retrieved({**s, "treatments": s.get("groups")}) if s else "–",
                "table": table(
                    ["Value", "Treatments", "mAP", "p", "q", "Retrieved"],
                    _ranked(part, lead),
                    right={1, 2, 3, 4},
                ),
            }
        )
    return {"columns": columns, "skipped": reasons}
