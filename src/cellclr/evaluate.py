"""``cellclr evaluate``: NSC, NSCB and drop, as ``shared/docs/moa-evaluation.md`` defines them.

NSC: each annotated treatment's nearest neighbour (cosine distance) among the treatments of
other compounds; correct when the MoAs agree. NSCB: the same, the neighbour also needing a
different batch label (the comma-joined set of the treatment's weeks), after dropping the MoAs
whose treatments all lie in one batch. Comparing label strings, as the reference code does, lets
a multi-week treatment match one from one of its weeks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.config import Config, save_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.outputs import read_manifest, staged_dir, write_json, write_manifest, write_parquet
from cellclr.profiles import TREATMENTS, feature_columns

REQUIRED = ["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", "Metadata_Batch"]


class EvaluationError(CellclrError, ValueError):
    """Profiles that cannot be evaluated."""


@dataclass
class Evaluation:
    metrics: dict
    nsc: pd.DataFrame
    nscb: pd.DataFrame


def single_batch_moas(treatments: pd.DataFrame) -> list[str]:
    """MoAs whose treatments all come from one batch: no NSCB neighbour can share their MoA."""
    batches = treatments["Metadata_Batch"].astype(str).str.split(",")
    per_moa = batches.groupby(treatments["Metadata_MoA"]).agg(lambda s: set().union(*s))
    return sorted(m for m, weeks in per_moa.items() if len(weeks) == 1)


def nearest_neighbours(x: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of the allowed row nearest by cosine distance (-1 if none) and that
    distance. Ties go to the lower index."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - unit @ unit.T
    dist = np.where(allowed, dist, np.inf)
    idx = np.argmin(dist, axis=1)
    best = dist[np.arange(len(x)), idx]
    idx = np.where(np.isfinite(best), idx, -1)
    return idx, np.where(idx >= 0, best, np.nan)


def _neighbour_table(t: pd.DataFrame, x: np.ndarray, allowed: np.ndarray) -> pd.DataFrame:
    idx, dist = nearest_neighbours(x, allowed)
    table = t[REQUIRED].reset_index(drop=True).copy()
    found = idx >= 0
    for column in REQUIRED:
        values = t[column].to_numpy()[np.maximum(idx, 0)]
        table[column.replace("Metadata_", "Neighbor_")] = np.where(found, values, None)
    table["Distance"] = dist
    table["Correct"] = found & (
        table["Neighbor_MoA"].to_numpy() == table["Metadata_MoA"].to_numpy()
    )
    return table


def _score(table: pd.DataFrame) -> dict:
    correct, total = int(table["Correct"].sum()), len(table)
    return {
        "correct": correct,
        "total": total,
        "accuracy": correct / total if total else float("nan"),
    }


def evaluate_treatments(treatments: pd.DataFrame, control: str = "DMSO") -> Evaluation:
    """NSC, NSCB and drop of treatment profiles (one row per compound and concentration)."""
    missing = [c for c in REQUIRED if c not in treatments]
    if missing:
        raise EvaluationError(f"treatment profiles lack columns {missing}")
    features = feature_columns(treatments)
    if not features:
        raise EvaluationError("treatment profiles have no feature columns")
    x_all = treatments[features].to_numpy(np.float64)
    if not np.isfinite(x_all).all():
        raise EvaluationError("treatment profiles hold NaN or infinite feature values")
    is_control = treatments["Metadata_Compound"].astype(str) == control
    unannotated = treatments["Metadata_MoA"].isna() & ~is_control
    keep = ~is_control & ~unannotated
    t = treatments[keep].reset_index(drop=True)
    if t["Metadata_Compound"].nunique() < 2:
        raise EvaluationError("NSC needs annotated treatments of at least two compounds")
    x = x_all[keep.to_numpy()]
    compound = t["Metadata_Compound"].astype(str).to_numpy()
    other_compound = compound[:, None] != compound[None, :]
    nsc = _neighbour_table(t, x, other_compound)

    dropped = single_batch_moas(t)
    kept = ~t["Metadata_MoA"].isin(dropped).to_numpy()
    tb = t[kept].reset_index(drop=True)
    label = tb["Metadata_Batch"].astype(str).to_numpy()
    allowed = other_compound[np.ix_(kept, kept)] & (label[:, None] != label[None, :])
    nscb = _neighbour_table(tb, x[kept], allowed)

    s_nsc, s_nscb = _score(nsc), _score(nscb)
    metrics = {
        "nsc": s_nsc,
        "nscb": s_nscb,
        "drop_pct": round(100 * (s_nsc["accuracy"] - s_nscb["accuracy"]), 3),
        "nscb_dropped_moas": dropped,
        "n_treatments": len(t),
        "n_compounds": int(t["Metadata_Compound"].nunique()),
        "n_moas": int(t["Metadata_MoA"].nunique()),
        "excluded": {"control": int(is_control.sum()), "unannotated": int(unannotated.sum())},
        "without_neighbour": {
            "nsc": int(nsc["Neighbor_MoA"].isna().sum()),
            "nscb": int(nscb["Neighbor_MoA"].isna().sum()),
        },
        "distance": "cosine",
        "batch_rule": "NSCB compares batch labels (comma-joined sorted weeks) as strings, "
        "as the reference code does",
    }
    return Evaluation(metrics, nsc, nscb)


def evaluate_fingerprint(profiles_dir: Path, cfg: Config) -> str:
    return fingerprint("evaluate", [read_manifest(profiles_dir)["fingerprint"]], cfg, ("evaluate",))


def evaluate(
    profiles_dir: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Evaluation:
    """Write ``metrics.json``, ``nsc.parquet`` and ``nscb.parquet`` for a ``profile`` output."""
    t_start = time.perf_counter()
    profiles_dir = Path(profiles_dir)
    fp = evaluate_fingerprint(profiles_dir, cfg)
    treatments = pd.read_parquet(profiles_dir / TREATMENTS)
    result = evaluate_treatments(treatments, cfg.evaluate.control)
    with staged_dir(out, overwrite=overwrite) as work:
        write_json(result.metrics, work / "metrics.json")
        write_parquet(result.nsc, work / "nsc.parquet")
        write_parquet(result.nscb, work / "nscb.parquet")
        save_config(cfg, work / "config.toml")
        write_manifest(
            work,
            "evaluate",
            fp,
            seconds=round(time.perf_counter() - t_start, 1),
            profiles=str(profiles_dir),
        )
    return result


def summary_line(metrics: dict) -> str:
    a, b = metrics["nsc"], metrics["nscb"]
    return (
        f"NSC {a['correct']}/{a['total']} ({100 * a['accuracy']:.1f}%)  "
        f"NSCB {b['correct']}/{b['total']} ({100 * b['accuracy']:.1f}%)  "
        f"drop {metrics['drop_pct']:.1f} pts"
    )
