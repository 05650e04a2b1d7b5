"""``cellclr evaluate``: every measure the annotations of the profiles allow, for every
post-processing variant of the well profiles.

- Always: the counts (``levels``: cells, wells, plates, treatments, control wells).
- Where treatments and control wells are known: **phenotypic activity** (``retrieval``: each
  treatment's replicate wells retrieved against the controls, mAP, p- and q-values, the
  fraction retrieved).
- For each annotation column of ``evaluate.consistency_by``: **phenotypic consistency**.
- Where MoAs are known: **NSC, NSCB, drop** and MoA mAP (``nsc``).
- Where control wells and batches are known, how much batch the profiles carry, without
  labels: the control wells' same-batch retrieval mAP (``batch_retrieval_map``) and the share
  of treatments whose nearest other-compound treatment shares their batch
  (``same_batch_neighbours``), each beside its chance level; lower is better.

What cannot be computed is skipped, with its reason, in ``metrics.json`` (``skipped``) and in
the summary; only input that cannot be read is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cellclr.columns import CELL_COUNT, PLATE, TREATMENT
from cellclr.config import Config, ConfigLike, EvaluateConfig, as_config
from cellclr.errors import CellclrError
from cellclr.fingerprint import file_digest, fingerprint
from cellclr.metadata import read_moa
from cellclr.outputs import (
    check_new_output,
    read_manifest,
    write_json,
    write_parquet,
)
from cellclr.profiling.nsc import EvaluationError, evaluate_treatments
from cellclr.profiling.postprocess import (
    FITTED_ON_CONTROLS,
    PostprocessError,
    clean_features,
    log_dropped,
    postprocess,
)
from cellclr.profiling.profiles import (
    WELLS,
    has_treatments,
    join_moa,
    no_treatments,
    profile_treatment,
    read_profiles,
    treatment_profiles,
)
from cellclr.profiling.results import Evaluation, results_table, summary_lines, variants
from cellclr.profiling.retrieval import (
    COMPOUND,
    NotScored,
    activity,
    batch_retrieval,
    consistency,
    same_batch_neighbours,
)
from cellclr.stages import Stage

log = logging.getLogger(__name__)

__all__ = [
    "Evaluation",
    "EvaluationError",
    "combine",
    "evaluate",
    "evaluate_treatments",
    "evaluate_wells",
    "results_table",
    "summary_lines",
    "variants",
]
MEASURES = (
    "treatments",
    "activity",
    "consistency",
    "nsc",
    "batch_retrieval_map",
    "same_batch_neighbours",
)
BATCH_MEASURES = {
    "batch_retrieval_map": batch_retrieval,
    "same_batch_neighbours": same_batch_neighbours,
}
TABLES = ("nsc", "nscb", "activity", "consistency")


def levels(wells: pd.DataFrame, control: str, treatment: list[str]) -> dict:
    """How much there is to evaluate: cells, wells, plates, treatments and control wells."""
    known = has_treatments(wells, treatment)
    is_control = wells[COMPOUND].astype(str) == control if COMPOUND in wells else None
    return {
        "cells": int(wells[CELL_COUNT].sum()) if CELL_COUNT in wells else None,
        "wells": len(wells),
        "plates": int(wells[PLATE].nunique()),
        "treatments": int(wells.groupby(treatment).ngroups) if known else None,
        "controls": None if is_control is None else int(is_control.sum()),
    }


def evaluate_variant(
    wells: pd.DataFrame,
    e: EvaluateConfig,
    treatment: list[str],
    source: str,
    control: str = "DMSO",
    fitted_on_controls: bool = False,
) -> Evaluation:
    """Every measure the wells' annotations allow (see the module docstring), on one
    post-processing variant of the well profiles. ``fitted_on_controls``: the variant was
    fitted on the control wells (DMSO, TVN), which then no longer say how much batch the
    representation carries (centred per plate, a plate's one control well is all zeros):
    ``batch_retrieval_map`` is skipped, saying so."""
    skipped: dict[str, str] = {}
    metrics: dict = {"skipped": skipped}
    if not has_treatments(wells, treatment):
        why = no_treatments(wells, treatment, "the wells")
        skipped.update({m: why for m in MEASURES})
        return Evaluation(metrics)
    treatments = treatment_profiles(wells, treatment)
    result = Evaluation(metrics)
    try:
        nsc = evaluate_treatments(treatments, control, e, source)
        metrics.update(nsc.metrics)
        result.nsc, result.nscb = nsc.nsc, nsc.nscb
    except EvaluationError as error:
        skipped["nsc"] = str(error).removeprefix(f"{source}: ")
    try:
        scores = activity(
            wells,
            control,
            treatment=treatment,
            replicates=e.replicates,
            null_size=e.null_size,
            fdr=e.fdr,
            seed=e.seed,
        )
        metrics["activity"], result.activity = scores.summary, scores.table
    except NotScored as error:
        skipped["activity"] = str(error)
    for name, measure in BATCH_MEASURES.items():
        if name == "batch_retrieval_map" and fitted_on_controls:
            skipped[name] = (
                "this variant is fitted on the control wells, which then tell nothing of "
                "batches: see the variant without post-processing"
            )
            continue
        try:
            metrics[name] = measure(wells if name == "batch_retrieval_map" else treatments, control)
        except NotScored as error:
            skipped[name] = str(error)
    _consistency(result, treatments, e, treatment, control)
    return result


def _consistency(
    result: Evaluation,
    treatments: pd.DataFrame,
    e: EvaluateConfig,
    treatment: list[str],
    control: str,
) -> None:
    """Phenotypic consistency by each column of ``e.consistency_by``, on the treatments other
    than the control (only the active ones, ``e.consistency_active``, when activity was
    scored), into ``result``."""
    if not e.consistency_by:
        return
    rows = treatments
    if COMPOUND in rows:
        rows = rows[rows[COMPOUND].astype(str) != control]
    note = "all treatments but the control"
    if e.consistency_active and result.activity is not None:
        active = result.activity.loc[result.activity["retrieved"], treatment]
        rows = rows.merge(active, on=treatment)
        note = f"the phenotypically active treatments (activity q < {e.fdr:g})"
    tables, summaries = [], {}
    for column in e.consistency_by:
        try:
            scores = consistency(rows, column, null_size=e.null_size, fdr=e.fdr, seed=e.seed)
        except NotScored as error:
            result.metrics["skipped"][f"consistency:{column}"] = f"{error} (among {note})"
            continue
        summaries[column] = {**scores.summary, "among": note}
        tables.append(scores.table)
    if summaries:
        result.metrics["consistency"] = summaries
        result.consistency = pd.concat(tables, ignore_index=True)


def evaluate_wells(
    wells: pd.DataFrame,
    e: EvaluateConfig,
    source: str = "well profiles",
    treatment: list[str] = TREATMENT,
    control: str = "DMSO",
    tvn_lambda: float = 1.0,
) -> dict[str, Evaluation | str]:
    """Every post-processing variant of ``e.variants``: well profiles -> variant -> every
    measure the annotations allow. Constant or NaN feature columns are dropped first (and
    reported). The first variant must succeed; another that cannot be computed (no control
    wells in a batch, say) gives the reason instead, which is logged and kept in
    ``metrics.json``."""
    counts = levels(wells, control, treatment)
    if len(wells) < 2:
        why = f"{source} holds one well: there is nothing to compare it with"
        skipped = dict.fromkeys(MEASURES, why)
        if not has_treatments(wells, treatment):
            skipped["treatments"] = no_treatments(wells, treatment, "the wells")
        return {e.variants[0]: Evaluation({"levels": counts, "skipped": skipped})}
    wells, dropped = clean_features(wells, source=source)
    log_dropped("evaluate", dropped)
    results: dict[str, Evaluation | str] = {}
    for i, variant in enumerate(e.variants):
        try:
            processed, notes = postprocess(wells, variant, control, tvn_lambda)
        except PostprocessError as error:
            if i == 0:
                raise
            results[variant] = str(error)
            log.warning(f"evaluate: variant {variant} not computed: {error}")
            continue
        for note in notes:
            log.warning(f"evaluate ({variant}): {note}")
        result = evaluate_variant(
            processed, e, treatment, source, control, variant in FITTED_ON_CONTROLS
        )
        result.metrics.update(notes=notes, dropped_features=dropped, levels=counts)
        results[variant] = result
    return results


def combine(results: dict[str, Evaluation | str]) -> Evaluation:
    """One Evaluation for all variants: the first variant's scores at the top level (the
    headline), every variant under ``variants`` (skipped ones under ``skipped_variants``),
    the tables with a Variant column."""
    done = {v: r for v, r in results.items() if isinstance(r, Evaluation)}
    first = next(iter(done))
    metrics = {**done[first].metrics, "variant": first}
    keys = ("nsc", "nscb", "drop_pct", "notes", "activity", "consistency", "skipped")
    keys += tuple(BATCH_MEASURES)
    metrics["variants"] = {
        v: {k: r.metrics[k] for k in keys if k in r.metrics} for v, r in done.items()
    }
    metrics["skipped_variants"] = {v: r for v, r in results.items() if isinstance(r, str)}
    tables: dict[str, pd.DataFrame | None] = {}
    for name in TABLES:
        parts = [
            getattr(r, name).assign(Variant=v)
            for v, r in done.items()
            if getattr(r, name) is not None and len(getattr(r, name))
        ]
        tables[name] = pd.concat(parts, ignore_index=True) if parts else None
    empty = pd.DataFrame()
    return Evaluation(
        metrics,
        nsc=empty if tables["nsc"] is None else tables["nsc"],
        nscb=empty if tables["nscb"] is None else tables["nscb"],
        activity=tables["activity"],
        consistency=tables["consistency"],
    )


def evaluate_fingerprint(profiles_dir: Path, cfg: Config, moa: str | Path | None = None) -> str:
    inputs = [read_manifest(profiles_dir)["fingerprint"], *([file_digest(moa)] if moa else [])]
    return fingerprint("evaluate", inputs, cfg, ("evaluate", "screen", "postprocess"))


def write_evaluation(
    result: Evaluation,
    out: Path,
    stage: Stage,
    overwrite: bool,
    **source: str,
) -> None:
    """``metrics.json`` and ``results.parquet`` always; ``nsc.parquet``/``nscb.parquet``,
    ``activity.parquet`` and ``consistency.parquet`` where they were computed."""
    stage.manifest.update(source)
    with stage.output(out, overwrite=overwrite) as work:
        write_json(result.metrics, work / "metrics.json")
        if "nsc" in result.metrics:
            write_parquet(result.nsc, work / "nsc.parquet")
            write_parquet(result.nscb, work / "nscb.parquet")
        for name in ("activity", "consistency"):
            table = getattr(result, name)
            if table is not None:
                write_parquet(table, work / f"{name}.parquet")
        write_parquet(results_table(result.metrics), work / "results.parquet")


def evaluate(
    profiles_dir: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
) -> Evaluation:
    """Evaluate the well profiles of a ``profile`` output (every variant, every measure its
    annotations allow); write ``metrics.json``, ``results.parquet`` and the tables of the
    measures computed. ``moa``: a table of compound, concentration, moa whose MoAs replace
    the profiles' own."""
    cfg = as_config(cfg)
    check_new_output(out, overwrite, [profiles_dir, moa])
    profiles_dir = Path(profiles_dir)
    moa_table = read_moa(Path(moa)) if moa is not None else None
    stage = Stage("evaluate", evaluate_fingerprint(profiles_dir, cfg, moa), cfg)
    wells = read_profiles(profiles_dir, "wells")
    if moa_table is not None:
        wells = join_moa(wells, moa_table, moa, str(profiles_dir / WELLS))
    treatment = profile_treatment(profiles_dir, cfg.screen.treatment)
    results = evaluate_wells(
        wells,
        cfg.evaluate,
        str(profiles_dir / WELLS),
        treatment,
        cfg.screen.control,
        cfg.postprocess.tvn_lambda,
    )
    result = combine(results)
    training = training_of(profiles_dir)
    if training:
        result.metrics["training"] = training
    write_evaluation(result, Path(out), stage, overwrite, profiles=str(profiles_dir))
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
