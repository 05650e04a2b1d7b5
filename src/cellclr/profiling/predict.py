"""``cellclr predict``: the likely MoA of new treatments, from reference treatments with known
MoAs (nearest neighbours by cosine distance in profile space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import COMPOUND, CONCENTRATION, MOA, WELL_KEYS
from cellclr.config import ConfigLike, as_config
from cellclr.errors import CellclrError
from cellclr.learning.embed import embed
from cellclr.metadata import feature_columns, unit_rows
from cellclr.outputs import check_new_output, write_parquet
from cellclr.profiling.feature_tables import read_feature_table
from cellclr.profiling.postprocess import clean_features, log_dropped, postprocess
from cellclr.profiling.profiles import (
    WELLS,
    embedded_well_profiles,
    has_treatments,
    read_profiles,
    treatment_profiles,
)
from cellclr.stages import Stage

KEYS = [COMPOUND, CONCENTRATION]


class PredictError(CellclrError, ValueError):
    """Profiles that cannot be compared."""


def predict_moa(
    reference: pd.DataFrame, query: pd.DataFrame, control: str = "DMSO", top: int = 5
) -> pd.DataFrame:
    """For each query treatment: the predicted MoA (that of its nearest reference treatment),
    a confidence (the margin in cosine similarity between the best and the second-best MoA,
    each MoA scored by its nearest treatment; the best similarity itself when the reference has
    one MoA), and its ``top`` nearest reference treatments with their distances.

    Reference treatments of the query's own compound are left out (a new compound has none;
    for a known one this asks the NSC question), as are controls and those without a MoA. A
    query without treatments (no ``Metadata_Compound``: a screen before its plate map is
    joined) is predicted well by well."""
    features = check_same_features(reference, query, "query profiles")
    ref = annotated(reference, control, "the reference profiles")
    q = not_controls(query, control, "query profiles")
    similarity = (
        unit_rows(q[features].to_numpy(np.float64))
        @ unit_rows(ref[features].to_numpy(np.float64)).T
    )
    if COMPOUND in q:
        same = (
            q[COMPOUND].astype(str).to_numpy()[:, None]
            == ref[COMPOUND].astype(str).to_numpy()[None, :]
        )
        similarity = np.where(same, -np.inf, similarity)
    keys = [k for k in KEYS if k in q] or [k for k in WELL_KEYS if k in q]
    moas = ref[MOA].astype(str).to_numpy()
    rows = []
    for i in range(len(q)):
        order = np.argsort(-similarity[i], kind="stable")
        order = order[np.isfinite(similarity[i, order])]
        if len(order) == 0:
            name = " ".join(str(q.loc[i, k]) for k in keys)
            raise PredictError(f"no reference treatment of another compound for {name}")
        best_per_moa = pd.Series(similarity[i, order], index=moas[order]).groupby(level=0).max()
        best_per_moa = best_per_moa.sort_values(ascending=False)
        second = best_per_moa.iloc[1] if len(best_per_moa) > 1 else 0.0
        row = {k: q.loc[i, k] for k in keys}
        row["Predicted_MoA"] = moas[order[0]]
        row["Confidence"] = float(best_per_moa.iloc[0] - second)
        row["Second_MoA"] = best_per_moa.index[1] if len(best_per_moa) > 1 else None
        for rank, j in enumerate(order[:top], start=1):
            row[f"Neighbor{rank}_Compound"] = ref.loc[j, COMPOUND]
            row[f"Neighbor{rank}_Concentration"] = ref.loc[j, CONCENTRATION]
            row[f"Neighbor{rank}_MoA"] = moas[j]
            row[f"Neighbor{rank}_Distance"] = float(1.0 - similarity[i, j])
        if MOA in q and pd.notna(q.loc[i, MOA]):
            row[MOA] = q.loc[i, MOA]  # known answer, for checking
        rows.append(row)
    return pd.DataFrame(rows)


def check_same_features(reference: pd.DataFrame, query: pd.DataFrame, source: str) -> list[str]:
    """The reference's feature columns, which the query must have exactly (no more, no less)."""
    features, theirs = feature_columns(reference), feature_columns(query)
    if not features:
        raise PredictError("the reference profiles have no feature columns")
    missing = [c for c in features if c not in set(theirs)]
    extra = [c for c in theirs if c not in set(features)]
    if missing or extra:
        raise PredictError(
            f"{source}: features do not match the reference's: {len(missing)} missing "
            f"{missing[:3]}, {len(extra)} extra {extra[:3]}: were both made by the same model "
            "and settings?"
        )
    return features


def annotated(table: pd.DataFrame, control: str, source: str) -> pd.DataFrame:
    """The rows with a MoA that are not ``control``; none is an error (nothing to predict from)."""
    known = table[MOA].notna() if MOA in table else False
    rows = table[known & (table[COMPOUND].astype(str) != control)]
    if rows.empty:
        raise PredictError(f"{source}: no treatment other than {control} has a Metadata_MoA")
    return rows.reset_index(drop=True)


def not_controls(table: pd.DataFrame, control: str, source: str) -> pd.DataFrame:
    """The rows that are not ``control`` (all, without compounds); none is an error (there is
    nothing to predict)."""
    if COMPOUND not in table:
        return table.reset_index(drop=True)
    treated = table[table[COMPOUND].astype(str) != control].reset_index(drop=True)
    if treated.empty:
        raise PredictError(
            f"{source}: holds only {control} control wells ({len(table)} rows): nothing to predict"
        )
    return treated


SOURCE = "Metadata_PredictSource"


def joint_treatments(
    reference_wells: pd.DataFrame, query_wells: pd.DataFrame, method: str, control: str, lam: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """Treatment profiles of reference and query after one post-processing of their raw wells
    together: TVN or DMSO standardisation fitted on both, so both share one feature basis.
    Feature columns with NaN or infinite values in either are dropped from both (returned).
    A query whose wells name no treatment keeps its wells as they are (post-processed)."""
    both = pd.concat(
        [reference_wells.assign(**{SOURCE: "reference"}), query_wells.assign(**{SOURCE: "query"})],
        ignore_index=True,
    )
    both, dropped = clean_features(both, constant=False, source="reference and query wells")
    log_dropped("predict", dropped)
    both, _ = postprocess(both, method, control, lam)
    reference = treatment_profiles(both[both[SOURCE] == "reference"].drop(columns=SOURCE))
    query = both[both[SOURCE] == "query"].drop(columns=SOURCE)
    if has_treatments(query_wells):
        query = treatment_profiles(query)
    else:
        query = query.dropna(axis=1, how="all").reset_index(drop=True)  # the reference's meta
    return reference, query, dropped


def predict(
    reference: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    query_profiles: str | Path | None = None,
    query_table: str | Path | None = None,
    query_crops: str | Path | None = None,
    model: str | Path | None = None,
    top: int = 5,
    overwrite: bool = False,
    any_crop_size: bool = False,
) -> pd.DataFrame:
    """Predict the MoA of the query treatments against ``reference`` (a ``profile`` folder)
    into ``out/predictions.parquet``. The query is a ``profile`` folder, a feature table of
    another tool, or a crop store embedded with ``model`` (then profiled into ``out``; crops of
    another size than the model's are refused unless ``any_crop_size``). Both start from raw
    well profiles, post-processed together (``profile.postprocess``)."""
    cfg = as_config(cfg)
    stage = Stage("predict", "", cfg)
    given = [q for q in (query_profiles, query_table, query_crops) if q is not None]
    if len(given) != 1:
        raise PredictError("give exactly one query: profiles, a feature table, or crops + model")
    if query_crops is not None and model is None:
        raise PredictError("a query given as crops needs the --model that made the reference")
    inputs = [reference, query_profiles, query_table, query_crops, model]
    check_new_output(out, overwrite, inputs)
    control = cfg.screen.control
    reference_wells = read_profiles(reference, "wells")
    annotated(reference_wells, control, f"{reference}/{WELLS}")
    wells = None
    if query_profiles is not None:
        wells = read_profiles(query_profiles, "wells")
        check_query(reference_wells, wells, control, f"{query_profiles}/{WELLS}")
    elif query_table is not None:
        wells = read_feature_table(query_table)
        check_query(reference_wells, wells, control, str(query_table))
    with stage.output(out, overwrite=overwrite) as work:
        if wells is None:
            embeddings = embed(
                model, query_crops, work / "embeddings", cfg, any_crop_size=any_crop_size
            )
            wells = embedded_well_profiles(embeddings)
            check_query(reference_wells, wells, control, str(query_crops))
        ref, query, dropped = joint_treatments(
            reference_wells,
            wells,
            cfg.profile.postprocess,
            control,
            cfg.postprocess.tvn_lambda,
        )
        predictions = predict_moa(ref, query, control, top)
        write_parquet(predictions, work / "predictions.parquet")
        stage.manifest.update(
            reference=str(reference), n_queries=len(predictions), dropped_features=dropped
        )
    return predictions


def check_query(reference: pd.DataFrame, query: pd.DataFrame, control: str, source: str) -> None:
    """Before any work: the query's well profiles must have the reference's features and some
    treatment other than the control."""
    check_same_features(reference, query, source)
    not_controls(query, control, source)
