"""What an evaluation gives: the ``Evaluation`` (metrics and tables), one row per
post-processing variant for the results table, and the summary lines the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cellclr.profiling.postprocess import POSTPROCESSING

NSC_TASKS = ("nsc", "nscb")


@dataclass
class Evaluation:
    """``metrics`` (what ``metrics.json`` holds), and the tables: ``nsc``/``nscb`` (each query
    treatment and its nearest neighbour; empty when NSC was not computed), ``activity`` (per
    treatment) and ``consistency`` (per annotation value), None when not computed."""

    metrics: dict
    nsc: pd.DataFrame = field(default_factory=pd.DataFrame)
    nscb: pd.DataFrame = field(default_factory=pd.DataFrame)
    activity: pd.DataFrame | None = None
    consistency: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return "Evaluation(" + "; ".join(summary_lines(self.metrics)) + ")"


def variants(metrics: dict) -> dict[str, dict]:
    """The scores of each post-processing variant, the headline first, then in the order of
    ``POSTPROCESSING`` (``metrics.json`` stores them with sorted keys)."""
    headline = metrics.get("variant", "none")
    found = metrics.get("variants") or {headline: metrics}
    order = sorted(found, key=lambda v: (v != headline, POSTPROCESSING.index(v)))
    return {v: found[v] for v in order}


def activity_of(m: dict) -> dict:
    """A variant's activity summary ({} when not computed; older runs stored it as
    ``replicate``)."""
    return m.get("activity") or m.get("replicate") or {}


def results_table(metrics: dict, representation: str = "cellclr") -> pd.DataFrame:
    """One row per variant: NSC/NSCB counts, percentages, intervals, drop, mAP and k-NN
    accuracy (NaN where NSC was not computed), and the label-free phenotypic activity (mean
    mAP, fraction of treatments retrieved, treatments scored)."""
    rows = []
    for variant, m in variants(metrics).items():
        row: dict = {"representation": representation, "variant": variant}
        for task in NSC_TASKS:
            s = m.get(task) or {}
            row[f"{task}_correct"], row[f"{task}_total"] = s.get("correct"), s.get("total")
            row[f"{task}_pct"] = 100 * _number(s.get("accuracy"))
            low, high = s.get("ci95") or [None, None]
            row[f"{task}_ci_low"], row[f"{task}_ci_high"] = 100 * _number(low), 100 * _number(high)
            row[f"{task}_map"] = _number(s.get("map"))
            for k, knn in s.get("knn", {}).items():
                row[f"{task}_knn{k}_pct"] = 100 * _number(knn["accuracy"])
        row["drop_pct"] = _number(m.get("drop_pct"))
        row["supervision"] = (metrics.get("training") or {}).get("supervision", "none")
        active = activity_of(m)
        row["activity_map"] = _number(active.get("map"))
        row["activity_retrieved"] = _number(active.get("retrieved"))
        row["activity_treatments"] = active.get("treatments", 0)
        retrieval = m.get("batch_retrieval_map") or {}
        row["batch_retrieval_map"] = _number(retrieval.get("map"))
        row["batch_retrieval_chance"] = _number(retrieval.get("chance"))
        neighbours = m.get("same_batch_neighbours") or {}
        row["same_batch_neighbours"] = _number(neighbours.get("rate"))
        row["same_batch_chance"] = _number(neighbours.get("chance"))
        rows.append(row)
    table = pd.DataFrame(rows)
    for task in NSC_TASKS:
        for column in (f"{task}_correct", f"{task}_total"):
            table[column] = table[column].astype("Int64")
    return table


def _number(value: float | None) -> float:
    """A score from metrics.json, where NaN is stored as null."""
    return float("nan") if value is None else float(value)


def _pct(s: dict) -> str:
    text = f"{s['correct']}/{s['total']} ({100 * _number(s['accuracy']):.1f}%"
    if s.get("ci95") and not np.isnan(_number(s["ci95"][0])):
        text += f", 95% CI {100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f}"
    return text + ")"


def summary_line(metrics: dict) -> str:
    """NSC, NSCB and drop, and the phenotypic activity, of one variant (what was computed)."""
    parts = []
    if "nsc" in metrics:
        drop = _number(metrics["drop_pct"])
        parts.append(
            f"NSC {_pct(metrics['nsc'])}  NSCB {_pct(metrics['nscb'])}  drop {drop:.1f} pts"
        )
    active = activity_of(metrics)
    if active.get("treatments"):
        n, total = active.get("n_retrieved"), active["treatments"]
        retrieved = f"{n}/{total}" if n is not None else f"{total} treatments"
        parts.append(
            f"activity {retrieved} retrieved ({100 * _number(active['retrieved']):.1f}%), "
            f"mAP {_number(active['map']):.3f}"
        )
    for column, c in (metrics.get("consistency") or {}).items():
        parts.append(f"consistency by {column} mAP {_number(c['map']):.3f}")
    retrieval, neighbours = metrics.get("batch_retrieval_map"), metrics.get("same_batch_neighbours")
    if retrieval or neighbours:
        batch = []
        if retrieval:
            batch.append(f"controls' mAP {retrieval['map']:.3f} (chance {retrieval['chance']:.3f})")
        if neighbours:
            rate, chance = neighbours["rate"], neighbours["chance"]
            batch.append(f"same-batch neighbours {rate:.2f} (chance {chance:.2f})")
        parts.append("batch: " + ", ".join(batch))
    return "  ".join(parts) or "nothing scored"


def summary_lines(metrics: dict) -> list[str]:
    """One line per variant (the headline variant first), then what was skipped and why."""
    lines = [f"{v:5s} {summary_line(m)}" for v, m in variants(metrics).items()]
    lines += [
        f"{v:5s} not computed: {why}" for v, why in metrics.get("skipped_variants", {}).items()
    ]
    lines += [f"skipped {what}: {why}" for what, why in (metrics.get("skipped") or {}).items()]
    return lines
