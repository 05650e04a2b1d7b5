"""Retrieval measures that need no MoA labels, with copairs (Kalinin et al. 2025), as JUMP
judges profiles:

- **phenotypic activity** (``activity``): for each treatment, the mean average precision with
  which each of its wells retrieves the treatment's other wells (its replicates) among the
  control wells, by cosine similarity; a permutation p-value per treatment, corrected for
  multiple testing (Benjamini-Hochberg: the q-value); the *fraction retrieved* is the share of
  treatments with q below the false discovery rate. Replicates count on other plates only
  (``replicates="other_plates"``, the default: a well is not retrieved by sharing its plate's
  artefacts) or on any well (``"any_well"``, for a one-plate screen).
- **phenotypic consistency** (``consistency``): for each value of an annotation (a target, a
  gene, an MoA), how well its treatments retrieve the other treatments of that value (of other
  compounds) among the treatments of other values; p- and q-values per value likewise.

The replicate mAP logged during training (``train.select_every``) is the activity mAP.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, PLATE, TREATMENT, WELL_COUNT
from cellclr.errors import CellclrError
from cellclr.metadata import feature_columns, unit_rows

KEY, CONTROL = "Metadata_TreatmentKey", "Metadata_IsControl"  # copairs' working columns
REPLICATES = {"other_plates": [PLATE], "any_well": []}


class NotScored(CellclrError, ValueError):
    """A measure that cannot be computed on these profiles: the message says why."""


@dataclass
class Scores:
    """A retrieval measure: ``summary`` (mean mAP, fraction retrieved, counts) and ``table``
    (one row per scored group: its mAP, p-value, q-value, retrieved)."""

    summary: dict
    table: pd.DataFrame


@contextmanager
def quiet_zero_rows() -> Iterator[None]:
    """copairs divides by row norms in worker threads: a zero row (a control well centred on
    itself, say) warns and scores NaN, which is then left out."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        yield


def treatment_keys(table: pd.DataFrame, columns: list[str] = TREATMENT) -> pd.Series:
    """One text key per row for its treatment: the values of ``columns`` joined by ``@``
    (numbers as ``{:g}``: ``taxol@0.3``)."""
    parts = [
        table[c].map("{:g}".format) if pd.api.types.is_float_dtype(table[c]) else table[c]
        for c in columns
    ]
    key = parts[0].astype(str)
    for part in parts[1:]:
        key = key + "@" + part.astype(str)
    return key.reset_index(drop=True)


def _average_precision(meta: pd.DataFrame, x: np.ndarray, **pairs: list[str]) -> pd.DataFrame:
    """copairs' average precision of each row, on rows scaled to unit length first (the same
    cosines; copairs' own norms would overflow above ~1e154)."""
    from copairs.map import average_precision

    with quiet_zero_rows():  # a zero row (no signal) gives NaN, left out by the callers
        return average_precision(meta, unit_rows(x), progress_bar=False, **pairs)


def _map_scores(
    ap: pd.DataFrame, by: list[str], null_size: int, fdr: float, seed: int
) -> pd.DataFrame:
    from copairs.map import mean_average_precision

    scores = mean_average_precision(
        ap, by, null_size=null_size, threshold=fdr, seed=seed, progress_bar=False
    )
    return scores.rename(
        columns={
            "mean_average_precision": "mAP",
            "corrected_p_value": "q_value",
            "below_corrected_p": "retrieved",
        }
    )


def activity(
    wells: pd.DataFrame,
    control: str = "DMSO",
    *,
    treatment: list[str] = TREATMENT,
    replicates: str = "other_plates",
    null_size: int = 10000,
    fdr: float = 0.05,
    seed: int = 0,
) -> Scores:
    """Phenotypic activity of the treatments of well profiles (see the module docstring): the
    wells' ``treatment`` columns name treatments, ``Metadata_Compound == control`` marks the
    control wells. Raises ``NotScored`` saying why when it cannot be computed."""
    from copairs.matching import UnpairedException

    missing = [c for c in [*treatment, COMPOUND, PLATE] if c not in wells]
    if missing:
        raise NotScored(f"the wells have no {', '.join(missing)}")
    wells = wells.reset_index(drop=True)
    is_control = (wells[COMPOUND].astype(str) == control).to_numpy()
    if not is_control.any():
        raise NotScored(f"no control wells ({COMPOUND} == {control!r}; screen.control)")
    if is_control.all():
        raise NotScored(f"every well is a control ({control})")
    meta = pd.DataFrame(
        {
            KEY: treatment_keys(wells, treatment),
            PLATE: wells[PLATE].astype(str),
            CONTROL: np.where(is_control, "control", "treated"),
        }
    )
    pos_diffby = REPLICATES[replicates]
    try:
        ap = _average_precision(
            meta,
            wells[feature_columns(wells)].to_numpy(np.float64),
            pos_sameby=[KEY],
            pos_diffby=pos_diffby,
            neg_sameby=[],
            neg_diffby=[KEY, CONTROL],
        )
    except UnpairedException:
        ap = meta.iloc[:0].assign(average_precision=[])
    ap = ap[(ap[CONTROL] == "treated") & ap["average_precision"].notna()]
    treated = meta.loc[~is_control, KEY]
    if ap.empty:
        if pos_diffby:
            raise NotScored(
                "no treatment has a replicate well on another plate (evaluate.replicates = "
                "'any_well' counts the wells of one plate)"
            )
        raise NotScored("no treatment has two wells")
    scores = _map_scores(ap, [KEY], null_size, fdr, seed)
    names = wells.loc[~is_control, treatment].assign(**{KEY: treated.to_numpy()})
    counts = treated.value_counts().rename(WELL_COUNT)
    table = (
        names.drop_duplicates(KEY)
        .merge(counts, left_on=KEY, right_index=True)
        .merge(scores[[KEY, "mAP", "p_value", "q_value", "retrieved"]], on=KEY)
        .drop(columns=[KEY])
        .sort_values(treatment)
        .reset_index(drop=True)
    )
    summary = {
        "map": float(table["mAP"].mean()),
        "retrieved": float(table["retrieved"].mean()),
        "n_retrieved": int(table["retrieved"].sum()),
        "treatments": len(table),
        "unscored": int(treated.nunique()) - len(table),
        "controls": int(is_control.sum()),
        "fdr": fdr,
        "null_size": null_size,
        "replicates": replicates,
    }
    return Scores(summary, table)


def consistency(
    treatments: pd.DataFrame,
    column: str,
    *,
    null_size: int = 10000,
    fdr: float = 0.05,
    seed: int = 0,
) -> Scores:
    """Phenotypic consistency of treatment profiles by the annotation ``column``: for each of
    its values, the mAP with which its treatments retrieve the value's treatments of other
    compounds among the treatments of other values (and other compounds). Rows without the
    annotation are left out; pass the treatments to score (no controls). Raises
    ``NotScored`` saying why when it cannot be computed."""
    from copairs.matching import UnpairedException

    if column not in treatments:
        raise NotScored(f"the treatments have no {column}")
    rows = treatments[treatments[column].notna()].reset_index(drop=True)
    compound = [COMPOUND] if COMPOUND in rows else []
    meta = rows[[column, *compound]].astype(str)
    try:
        ap = _average_precision(
            meta,
            rows[feature_columns(rows)].to_numpy(np.float64),
            pos_sameby=[column],
            pos_diffby=compound,
            neg_sameby=[],
            neg_diffby=[column, *compound],
        )
    except UnpairedException:
        ap = meta.iloc[:0].assign(average_precision=[])
    ap = ap[ap["average_precision"].notna()]
    if ap.empty:
        other = " of another compound" if compound else ""
        raise NotScored(f"no value of {column} is shared by two treatments{other}")
    scores = _map_scores(ap, [column], null_size, fdr, seed)
    sizes = meta[column].value_counts().rename("Treatments")
    table = (
        scores[[column, "mAP", "p_value", "q_value", "retrieved"]]
        .merge(sizes, left_on=column, right_index=True)
        .rename(columns={column: "Value"})
        .assign(Annotation=column)
    )
    table = table[["Annotation", "Value", "Treatments", "mAP", "p_value", "q_value", "retrieved"]]
    summary = {
        "map": float(table["mAP"].mean()),
        "retrieved": float(table["retrieved"].mean()),
        "n_retrieved": int(table["retrieved"].sum()),
        "groups": len(table),
        "treatments": int(table["Treatments"].sum()),
        "fdr": fdr,
        "null_size": null_size,
    }
    return Scores(summary, table.sort_values("Value").reset_index(drop=True))


def replicate_map(
    wells: pd.DataFrame,
    control: str = "DMSO",
    seed: int = 0,
    null_size: int = 1000,
    treatment: list[str] = TREATMENT,
) -> dict[str, float | int]:
    """The activity summary (``map``, ``retrieved``, ``treatments``, ...) of well profiles,
    replicates on other plates; NaN scores when it cannot be computed: the label-free measure
    used to choose hyperparameters and checkpoints."""
    try:
        return activity(wells, control, treatment=treatment, null_size=null_size, seed=seed).summary
    except NotScored:
        return {"map": float("nan"), "retrieved": float("nan"), "treatments": 0}


def batch_retrieval(wells: pd.DataFrame, control: str = "DMSO") -> dict:
    """How much batch a representation carries, from the control wells alone (lower is
    better): each control well ranks the other control wells by cosine similarity; those of
    its own batch are the positives. ``map``: the mean average precision; ``chance``: what a
    ranking that knows nothing of batches scores, the mean over wells of the share of
    positives among the wells ranked. Raises ``NotScored`` saying why when it cannot be
    computed (no controls, one batch)."""
    from copairs.matching import UnpairedException

    missing = [c for c in (COMPOUND, BATCH) if c not in wells]
    if missing:
        raise NotScored(f"the wells have no {', '.join(missing)}")
    controls = wells[wells[COMPOUND].astype(str) == control].reset_index(drop=True)
    if controls.empty:
        raise NotScored(f"no control wells ({COMPOUND} == {control!r}; screen.control)")
    if controls[BATCH].nunique() < 2:
        raise NotScored("the control wells come from one batch: nothing to tell apart")
    meta = pd.DataFrame({BATCH: controls[BATCH].astype(str), "well": np.arange(len(controls))})
    try:
        ap = _average_precision(
            meta,
            controls[feature_columns(controls)].to_numpy(np.float64),
            pos_sameby=[BATCH],
            pos_diffby=["well"],
            neg_sameby=[],
            neg_diffby=[BATCH],
        )
    except UnpairedException:
        ap = meta.iloc[:0].assign(average_precision=[])
    ap = ap[ap["average_precision"].notna()]
    if ap.empty:
        raise NotScored("no batch has two control wells")
    chance = (ap["n_pos_pairs"] / ap["n_total_pairs"]).mean()
    return {"map": float(ap["average_precision"].mean()), "chance": float(chance), "wells": len(ap)}


def same_batch_neighbours(treatments: pd.DataFrame, control: str = "DMSO") -> dict:
    """How much batch a representation carries, from the treatments (lower is better): the
    share of treatments whose nearest treatment of another compound (cosine, as NSC finds it)
    shares a batch with it (their comma-joined batch labels have a week in common).
    ``chance``: the mean over treatments of the share of such candidates that share a batch.
    The control is neither a query nor a neighbour."""
    missing = [c for c in (COMPOUND, BATCH) if c not in treatments]
    if missing:
        raise NotScored(f"the treatments have no {', '.join(missing)}")
    rows = treatments[treatments[COMPOUND].astype(str) != control].reset_index(drop=True)
    compound = pd.factorize(rows[COMPOUND].astype(str))[0]
    labels = rows[BATCH].astype(str).str.get_dummies(sep=",").to_numpy(np.float32)
    unit = unit_rows(rows[feature_columns(rows)].to_numpy(np.float64))
    hits, chance = [], []
    for start in range(0, len(rows), 2048):  # memory: a block of queries at a time
        block = slice(start, start + 2048)
        allowed = compound[block, None] != compound[None, :]
        shares = (labels[block] @ labels.T) > 0
        similarity = np.where(allowed, unit[block] @ unit.T, -np.inf)
        queries = allowed.any(axis=1)
        nearest = np.argmax(similarity, axis=1)
        hits.append(shares[np.arange(len(nearest)), nearest][queries])
        chance.append((shares & allowed).sum(axis=1)[queries] / allowed.sum(axis=1)[queries])
    hits, chance = np.concatenate(hits), np.concatenate(chance)
    if not len(hits):
        raise NotScored("the treatments are of one compound: no neighbour of another one")
    return {"rate": float(hits.mean()), "chance": float(chance.mean()), "treatments": len(hits)}
