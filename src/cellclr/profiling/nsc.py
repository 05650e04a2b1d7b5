"""NSC, NSCB and drop of treatment profiles, as ``shared/docs/moa-evaluation.md`` defines them,
with bootstrap intervals, k-NN voting, per-MoA accuracy and mAP of MoA retrieval.

NSC: each annotated treatment's nearest neighbour (cosine distance) among the treatments of
other compounds; correct when the MoAs agree. NSCB: the same, the neighbour also needing a
different batch label (the comma-joined set of the treatment's weeks), after dropping the MoAs
whose treatments all lie in one batch. Comparing label strings, as the reference code does, lets
a multi-week treatment match one from one of its weeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, CONCENTRATION, MOA
from cellclr.config import EvaluateConfig
from cellclr.errors import CellclrError
from cellclr.metadata import feature_columns, unit_rows
from cellclr.profiling.metrics import (
    bootstrap_interval,
    copairs_available,
    knn_predictions,
    mean_average_precision,
    per_moa,
)
from cellclr.profiling.results import Evaluation

REQUIRED = [COMPOUND, CONCENTRATION, MOA, BATCH]


class EvaluationError(CellclrError, ValueError):
    """Profiles that cannot be evaluated."""


@dataclass
class Task:
    """One neighbour task (NSC or NSCB): the query treatments, their features, and which
    treatment may be whose neighbour."""

    table: pd.DataFrame
    x: np.ndarray
    allowed: np.ndarray

    def distances(self) -> np.ndarray:
        unit = unit_rows(self.x)
        return 1.0 - unit @ unit.T


def single_batch_moas(treatments: pd.DataFrame) -> list[str]:
    """MoAs whose treatments all come from one batch: no NSCB neighbour can share their MoA."""
    batches = treatments[BATCH].astype(str).str.split(",")
    per = batches.groupby(treatments[MOA]).agg(lambda s: set().union(*s))
    return sorted(m for m, weeks in per.items() if len(weeks) == 1)


def nearest_neighbours(distance: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of the nearest allowed row (-1 if none) and its distance. Ties go to
    the lower index."""
    dist = np.where(allowed, distance, np.inf)
    if dist.size == 0:  # no query, or no candidate at all (one batch only, for NSCB)
        return np.full(len(dist), -1), np.full(len(dist), np.nan)
    idx = np.argmin(dist, axis=1)
    best = dist[np.arange(len(dist)), idx]
    idx = np.where(np.isfinite(best), idx, -1)
    return idx, np.where(idx >= 0, best, np.nan)


def _neighbour_table(task: Task, distance: np.ndarray) -> pd.DataFrame:
    t = task.table
    idx, dist = nearest_neighbours(distance, task.allowed)
    table = t[REQUIRED].reset_index(drop=True).copy()
    found = idx >= 0
    for column in REQUIRED:
        values = t[column].to_numpy()[np.maximum(idx, 0)]
        table[column.replace("Metadata_", "Neighbor_")] = np.where(found, values, None)
    table["Distance"] = dist
    moa = table[MOA].to_numpy()
    table["Correct"] = found & (table["Neighbor_MoA"].to_numpy() == moa)
    return table


def _score(correct: np.ndarray) -> dict:
    n = len(correct)
    hits = int(np.sum(correct))
    return {"correct": hits, "total": n, "accuracy": hits / n if n else float("nan")}


def _tasks(treatments: pd.DataFrame, control: str, source: str) -> tuple[Task, Task, dict]:
    no_moa = MOA not in treatments or treatments[MOA].isna().all()
    if no_moa:
        raise EvaluationError(
            f"{source}: no MoA annotation (Metadata_MoA; --moa joins a table of compound, "
            "concentration, moa): NSC, NSCB and the MoA mAP need it"
        )
    missing = [c for c in REQUIRED if c not in treatments]
    if missing:
        raise EvaluationError(f"{source}: lacks columns {missing}")
    features = feature_columns(treatments)
    if not features:
        raise EvaluationError(f"{source}: no feature columns")
    x_all = treatments[features].to_numpy(np.float64)
    if not np.isfinite(x_all).all():
        raise EvaluationError(f"{source}: NaN or infinite feature values")
    is_control = treatments[COMPOUND].astype(str) == control
    unannotated = treatments[MOA].isna() & ~is_control
    keep = (~is_control & ~unannotated).to_numpy()
    t = treatments[keep].reset_index(drop=True)
    if t[COMPOUND].nunique() < 2:
        raise EvaluationError(
            f"{source}: NSC needs annotated treatments of at least two compounds, found "
            f"{t['Metadata_Compound'].nunique()} in {len(t)} treatments (left out: "
            f"{int(is_control.sum())} {control} control and {int(unannotated.sum())} "
            "unannotated treatments)"
        )
    x = x_all[keep]
    compound = t[COMPOUND].astype(str).to_numpy()
    other_compound = compound[:, None] != compound[None, :]
    dropped = single_batch_moas(t)
    kept = ~t[MOA].isin(dropped).to_numpy()
    label = t[BATCH].astype(str).to_numpy()[kept]
    nscb_allowed = other_compound[np.ix_(kept, kept)] & (label[:, None] != label[None, :])
    info = {
        "nscb_dropped_moas": dropped,
        **(
            {"nscb_note": "every MoA lies in a single batch: NSCB has no query"}
            if not kept.any()
            else {}
        ),
        "n_treatments": len(t),
        "n_compounds": int(t[COMPOUND].nunique()),
        "n_moas": int(t[MOA].nunique()),
        "excluded": {"control": int(is_control.sum()), "unannotated": int(unannotated.sum())},
    }
    nsc = Task(t, x, other_compound)
    nscb = Task(t[kept].reset_index(drop=True), x[kept], nscb_allowed)
    return nsc, nscb, info


def _task_metrics(
    task: Task, table: pd.DataFrame, distance: np.ndarray, e: EvaluateConfig, batch: bool
) -> dict:
    correct = table["Correct"].to_numpy()
    out = _score(correct)
    out["ci95"] = list(bootstrap_interval(correct, e.bootstrap, e.seed))
    moa = task.table[MOA].to_numpy()
    out["knn"] = {
        str(k): _score(knn_predictions(distance, task.allowed, moa, k) == moa) for k in e.knn
    }
    out["per_moa"] = per_moa(table)
    out["without_neighbour"] = int(table["Neighbor_MoA"].isna().sum())
    if e.map and copairs_available():
        out["map"] = mean_average_precision(task.table, task.x, batch=batch)
    return out


def evaluate_treatments(
    treatments: pd.DataFrame,
    control: str = "DMSO",
    e: EvaluateConfig | None = None,
    source: str = "treatment profiles",
) -> Evaluation:
    """NSC, NSCB and drop of treatment profiles (one row per compound and concentration), with
    the extras of ``e`` (intervals, k-NN, per-MoA, mAP; none when ``e`` is None). ``source``
    names the input in errors."""
    e = e or EvaluateConfig(bootstrap=0, knn=[], map=False)
    nsc_task, nscb_task, info = _tasks(treatments, control, source)
    results = {}
    for name, task in (("nsc", nsc_task), ("nscb", nscb_task)):
        distance = task.distances()
        table = _neighbour_table(task, distance)
        results[name] = (table, _task_metrics(task, table, distance, e, batch=name == "nscb"))
    (nsc, m_nsc), (nscb, m_nscb) = results["nsc"], results["nscb"]
    metrics = {
        "nsc": m_nsc,
        "nscb": m_nscb,
        "drop_pct": round(100 * (m_nsc["accuracy"] - m_nscb["accuracy"]), 3),
        **info,
        "distance": "cosine",
        "batch_rule": "NSCB compares batch labels (comma-joined sorted weeks) as strings, "
        "as the reference code does",
    }
    if e.map and not copairs_available():
        metrics["map_note"] = "mAP needs copairs: pip install 'cellclr[eval]'"
    return Evaluation(metrics, nsc, nscb)
