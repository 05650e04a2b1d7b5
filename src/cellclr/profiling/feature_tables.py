"""Feature tables of other tools (CellProfiler, pycytominer): per-cell or per-well tables with
``Metadata_*`` columns, read as well profiles so that they are profiled and evaluated exactly
like our own embeddings."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cellclr.columns import BATCH, PLATE, TREATMENT, WELL_KEYS
from cellclr.config import Config
from cellclr.fingerprint import file_digest, fingerprint
from cellclr.metadata import batch_from_plate, feature_columns, read_moa, read_table
from cellclr.outputs import check_new_output
from cellclr.profiling.evaluate import (
    Evaluation,
    combine,
    evaluate_wells,
    write_evaluation,
)
from cellclr.profiling.profiles import (
    ProfileError,
    check_features,
    check_metadata,
    join_moa,
    well_profiles,
    write_profiles,
)
from cellclr.stages import Stage

# CellProfiler bookkeeping columns: numbers, but not phenotypes
BOOKKEEPING = re.compile(
    r"^(ImageNumber|ObjectNumber|TableNumber)$|Number_Object_Number$|Location_"
)


def read_feature_table(
    path: str | Path, moa: str | Path | None = None, treatment: list[str] = TREATMENT
) -> pd.DataFrame:
    """Well profiles from a per-cell or per-well feature table of another tool (CellProfiler,
    pycytominer): ``Metadata_*`` columns plus numeric features. Per-cell tables (a well on
    several rows) are averaged per well. CellProfiler's bookkeeping columns (ImageNumber,
    ObjectNumber, ``*Location_*``) are not features and are dropped. ``moa``: a CSV of
    compound, concentration, moa to join when the table has no ``Metadata_MoA``."""
    path = Path(path)
    table = check_metadata(read_table(path, "feature table"), str(path), treatment=treatment)
    bookkeeping = [c for c in feature_columns(table) if BOOKKEEPING.search(c)]
    table = table.drop(columns=bookkeeping).copy()  # one block: cheap columns to add
    text = [c for c in feature_columns(table) if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise ProfileError(
            f"{path}: non-numeric columns {text[:5]} are neither features nor Metadata_ columns"
            " (rename them Metadata_... or drop them)"
        )
    if BATCH not in table:
        table[BATCH] = table[PLATE].map(batch_from_plate)
    if moa is not None:
        table = join_moa(table, read_moa(Path(moa)), moa, str(path))
    if table.duplicated(WELL_KEYS).any():
        return well_profiles(table, str(path), treatment)
    check_features(table, str(path), allow_nan=True)
    return table


def file_fingerprint(
    stage: str, paths: list[Path | None], cfg: Config, sections: tuple[str, ...]
) -> str:
    """A stage's fingerprint when its inputs are files of another tool: their contents (and the
    control and TVN lambda that post-processing uses)."""
    digests = [file_digest(p) for p in paths if p]
    return fingerprint(stage, digests, cfg, (*sections, "screen", "postprocess"))


def profile_table(
    features: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """``profile`` for a feature table of another tool: ``wells.parquet`` and
    ``treatments.parquet`` in ``out``."""
    check_new_output(out, overwrite, [features, moa])
    stage = Stage("profile", "", cfg)
    wells = read_feature_table(features, moa, cfg.screen.treatment)
    inputs = [Path(features), moa and Path(moa), cfg.profile.platemap]
    stage.fingerprint = file_fingerprint("profile", inputs, cfg, ("profile",))
    write_profiles(wells, Path(out), stage, overwrite, features=str(features))
    return Path(out)


def evaluate_table(
    features: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
) -> Evaluation:
    """``evaluate`` for a feature table of another tool: every post-processing variant of its
    well profiles, written to ``out`` as ``evaluate`` writes them."""
    check_new_output(out, overwrite, [features, moa])
    stage = Stage("evaluate", "", cfg)
    treatment = cfg.screen.treatment
    wells = read_feature_table(features, moa, treatment)
    inputs = [Path(features), moa and Path(moa)]
    stage.fingerprint = file_fingerprint("evaluate", inputs, cfg, ("evaluate",))
    results = evaluate_wells(
        wells,
        cfg.evaluate,
        str(features),
        treatment,
        cfg.screen.control,
        cfg.postprocess.tvn_lambda,
    )
    result = combine(results)
    write_evaluation(result, Path(out), stage, overwrite, features=str(features))
    return result
