"""``cellclr evaluate``: NSC, NSCB and drop, as ``shared/docs/moa-evaluation.md`` defines them,
for every post-processing variant of the well profiles, with bootstrap intervals, k-NN voting,
per-MoA accuracy and (with copairs) mAP.

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
from tqdm import tqdm

from cellclr.config import Config, EvaluateConfig, save_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import file_digest, fingerprint
from cellclr.metadata import feature_columns, read_moa, unit_rows
from cellclr.outputs import (
    check_new_output,
    read_manifest,
    staged_dir,
    write_json,
    write_manifest,
    write_parquet,
)
from cellclr.profiling.metrics import (
    bootstrap_interval,
    copairs_available,
    knn_predictions,
    mean_average_precision,
    per_moa,
)
from cellclr.profiling.postprocess import (
    POSTPROCESSING,
    PostprocessError,
    clean_features,
    log_dropped,
    postprocess,
)
from cellclr.profiling.profiles import WELLS, join_moa, read_profiles, treatment_profiles
from cellclr.retrieval import replicate_map

REQUIRED = ["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", "Metadata_Batch"]


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


@dataclass
class Evaluation:
    metrics: dict
    nsc: pd.DataFrame
    nscb: pd.DataFrame


def single_batch_moas(treatments: pd.DataFrame) -> list[str]:
    """MoAs whose treatments all come from one batch: no NSCB neighbour can share their MoA."""
    batches = treatments["Metadata_Batch"].astype(str).str.split(",")
    per = batches.groupby(treatments["Metadata_MoA"]).agg(lambda s: set().union(*s))
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
    moa = table["Metadata_MoA"].to_numpy()
    table["Correct"] = found & (table["Neighbor_MoA"].to_numpy() == moa)
    return table


def _score(correct: np.ndarray) -> dict:
    n = len(correct)
    hits = int(np.sum(correct))
    return {"correct": hits, "total": n, "accuracy": hits / n if n else float("nan")}


def _tasks(treatments: pd.DataFrame, control: str, source: str) -> tuple[Task, Task, dict]:
    missing = [c for c in REQUIRED if c not in treatments]
    if missing:
        raise EvaluationError(f"{source}: lacks columns {missing}")
    features = feature_columns(treatments)
    if not features:
        raise EvaluationError(f"{source}: no feature columns")
    x_all = treatments[features].to_numpy(np.float64)
    if not np.isfinite(x_all).all():
        raise EvaluationError(f"{source}: NaN or infinite feature values")
    is_control = treatments["Metadata_Compound"].astype(str) == control
    unannotated = treatments["Metadata_MoA"].isna() & ~is_control
    keep = (~is_control & ~unannotated).to_numpy()
    t = treatments[keep].reset_index(drop=True)
    if t["Metadata_Compound"].nunique() < 2:
        raise EvaluationError(
            f"{source}: NSC needs annotated treatments of at least two compounds, found "
            f"{t['Metadata_Compound'].nunique()} in {len(t)} treatments (left out: "
            f"{int(is_control.sum())} {control} control and {int(unannotated.sum())} "
            "unannotated treatments)"
        )
    x = x_all[keep]
    compound = t["Metadata_Compound"].astype(str).to_numpy()
    other_compound = compound[:, None] != compound[None, :]
    dropped = single_batch_moas(t)
    kept = ~t["Metadata_MoA"].isin(dropped).to_numpy()
    label = t["Metadata_Batch"].astype(str).to_numpy()[kept]
    nscb_allowed = other_compound[np.ix_(kept, kept)] & (label[:, None] != label[None, :])
    info = {
        "nscb_dropped_moas": dropped,
        **(
            {"nscb_note": "every MoA lies in a single batch: NSCB has no query"}
            if not kept.any()
            else {}
        ),
        "n_treatments": len(t),
        "n_compounds": int(t["Metadata_Compound"].nunique()),
        "n_moas": int(t["Metadata_MoA"].nunique()),
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
    moa = task.table["Metadata_MoA"].to_numpy()
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
    e = e or EvaluateConfig(control=control, bootstrap=0, knn=[], map=False)
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


def evaluate_wells(
    wells: pd.DataFrame, e: EvaluateConfig, source: str = "well profiles"
) -> dict[str, Evaluation | str]:
    """Every post-processing variant of ``e.variants``: well profiles -> variant -> treatment
    profiles -> evaluation. Constant or NaN feature columns are dropped first (and reported).
    The first variant must succeed; another that cannot be computed (no control wells in a
    batch, say) gives the reason instead, which is logged and kept in ``metrics.json``."""
    wells, dropped = clean_features(wells, source=source)
    log_dropped("evaluate", dropped)
    results: dict[str, Evaluation | str] = {}
    for i, variant in enumerate(e.variants):
        try:
            processed, notes = postprocess(wells, variant, e.control, e.tvn_lambda)
        except PostprocessError as error:
            if i == 0:
                raise
            results[variant] = str(error)
            tqdm.write(f"evaluate: variant {variant} not computed: {error}")
            continue
        for note in notes:
            tqdm.write(f"evaluate ({variant}): {note}")
        result = evaluate_treatments(treatment_profiles(processed), e.control, e, source)
        result.metrics.update(notes=notes, dropped_features=dropped)
        if e.map and copairs_available():
            result.metrics["replicate"] = replicate_map(processed, e.control, e.seed)
        results[variant] = result
    return results


def combine(results: dict[str, Evaluation | str]) -> Evaluation:
    """One Evaluation for all variants: the first variant's scores at the top level (the
    headline), every variant under ``variants`` (skipped ones under ``skipped_variants``),
    the neighbour tables with a Variant column."""
    done = {v: r for v, r in results.items() if isinstance(r, Evaluation)}
    first = next(iter(done))
    metrics = {**done[first].metrics, "variant": first}
    keys = ("nsc", "nscb", "drop_pct", "notes", "replicate")
    metrics["variants"] = {
        v: {k: r.metrics[k] for k in keys if k in r.metrics} for v, r in done.items()
    }
    metrics["skipped_variants"] = {v: r for v, r in results.items() if isinstance(r, str)}
    tables = {
        name: pd.concat(
            [getattr(r, name).assign(Variant=v) for v, r in done.items()], ignore_index=True
        )
        for name in ("nsc", "nscb")
    }
    return Evaluation(metrics, tables["nsc"], tables["nscb"])


def variants(metrics: dict) -> dict[str, dict]:
    """The scores of each post-processing variant, the headline first, then in the order of
    ``POSTPROCESSING`` (``metrics.json`` stores them with sorted keys)."""
    headline = metrics.get("variant", "none")
    found = metrics.get("variants") or {headline: metrics}
    order = sorted(found, key=lambda v: (v != headline, POSTPROCESSING.index(v)))
    return {v: found[v] for v in order}


def results_table(metrics: dict, representation: str = "cellclr") -> pd.DataFrame:
    """One row per variant: counts, percentages, intervals, drop, mAP, k-NN accuracy, and the
    label-free replicate mAP (with the fraction of treatments retrieved)."""
    rows = []
    for variant, m in variants(metrics).items():
        row = {"representation": representation, "variant": variant}
        for task in ("nsc", "nscb"):
            s = m[task]
            row[f"{task}_correct"], row[f"{task}_total"] = s["correct"], s["total"]
            row[f"{task}_pct"] = 100 * _number(s["accuracy"])
            low, high = s.get("ci95") or [None, None]
            row[f"{task}_ci_low"], row[f"{task}_ci_high"] = 100 * _number(low), 100 * _number(high)
            row[f"{task}_map"] = _number(s.get("map"))
            for k, knn in s.get("knn", {}).items():
                row[f"{task}_knn{k}_pct"] = 100 * _number(knn["accuracy"])
        row["drop_pct"] = _number(m["drop_pct"])
        replicate = m.get("replicate") or {}
        row["supervision"] = (metrics.get("training") or {}).get("supervision", "none")
        row["replicate_map"] = _number(replicate.get("map"))
        row["replicate_retrieved"] = _number(replicate.get("retrieved"))
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_fingerprint(profiles_dir: Path, cfg: Config, moa: str | Path | None = None) -> str:
    inputs = [read_manifest(profiles_dir)["fingerprint"], *([file_digest(moa)] if moa else [])]
    return fingerprint("evaluate", inputs, cfg, ("evaluate",))


def write_evaluation(
    result: Evaluation,
    out: Path,
    cfg: Config,
    fp: str,
    seconds: float,
    overwrite: bool,
    **source: str,
) -> None:
    with staged_dir(out, overwrite=overwrite) as work:
        write_json(result.metrics, work / "metrics.json")
        write_parquet(result.nsc, work / "nsc.parquet")
        write_parquet(result.nscb, work / "nscb.parquet")
        write_parquet(results_table(result.metrics), work / "results.parquet")
        save_config(cfg, work / "config.toml")
        write_manifest(work, "evaluate", fp, seconds=round(seconds, 1), **source)


def evaluate(
    profiles_dir: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
) -> Evaluation:
    """Evaluate the well profiles of a ``profile`` output (every variant); write
    ``metrics.json``, ``results.parquet``, ``nsc.parquet`` and ``nscb.parquet``. ``moa``: a
    table of compound, concentration, moa whose MoAs replace the profiles' own."""
    t_start = time.perf_counter()
    check_new_output(out, overwrite, [profiles_dir, moa])
    profiles_dir = Path(profiles_dir)
    moa_table = read_moa(Path(moa)) if moa is not None else None
    fp = evaluate_fingerprint(profiles_dir, cfg, moa)
    wells = read_profiles(profiles_dir, "wells")
    if moa_table is not None:
        wells = join_moa(wells, moa_table, moa, str(profiles_dir / WELLS))
    result = combine(evaluate_wells(wells, cfg.evaluate, str(profiles_dir / WELLS)))
    training = training_of(profiles_dir)
    if training:
        result.metrics["training"] = training
    write_evaluation(
        result,
        Path(out),
        cfg,
        fp,
        time.perf_counter() - t_start,
        overwrite,
        profiles=str(profiles_dir),
    )
    return result


def training_of(profiles_dir: Path) -> dict | None:
    """How the model behind these profiles was trained (method, and ``supervision``: ``none``
    or the labels a weakly supervised method used), followed through the stage manifests
    (profiles -> embeddings -> model); None when the chain is not ours (a feature table)."""
    try:
        embeddings = read_manifest(profiles_dir).get("embeddings")
        model = embeddings and read_manifest(embeddings).get("model")
        manifest = model and read_manifest(model)
    except (CellclrError, OSError):
        return None
    if not manifest or "supervision" not in manifest:
        return None
    return {"method": manifest.get("method"), "supervision": manifest["supervision"]}


def _number(value: float | None) -> float:
    """A score from metrics.json, where NaN is stored as null."""
    return float("nan") if value is None else float(value)


def _pct(s: dict) -> str:
    text = f"{s['correct']}/{s['total']} ({100 * _number(s['accuracy']):.1f}%"
    if s.get("ci95") and not np.isnan(_number(s["ci95"][0])):
        text += f", 95% CI {100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f}"
    return text + ")"


def summary_line(metrics: dict) -> str:
    drop = _number(metrics["drop_pct"])
    return f"NSC {_pct(metrics['nsc'])}  NSCB {_pct(metrics['nscb'])}  drop {drop:.1f} pts"


def summary_lines(metrics: dict) -> list[str]:
    """One line per variant (the headline variant first)."""
    lines = [f"{v:5s} {summary_line(m)}" for v, m in variants(metrics).items()]
    lines += [
        f"{v:5s} not computed: {why}" for v, why in metrics.get("skipped_variants", {}).items()
    ]
    return lines
