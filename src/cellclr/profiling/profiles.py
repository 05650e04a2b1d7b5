"""``cellclr profile``: cell features -> well profiles (mean) -> treatment profiles (median).

Functions on DataFrames in pycytominer's convention: ``Metadata_*`` columns describe, every
other column is a feature.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cellclr.config import Config, save_config
from cellclr.embeddings import EMBEDDINGS
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.metadata import feature_columns, metadata_columns
from cellclr.outputs import (
    check_new_output,
    read_manifest,
    staged_dir,
    write_manifest,
    write_parquet,
)
from cellclr.profiling.postprocess import postprocess

WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]
TREATMENT_KEYS = ["Metadata_Compound", "Metadata_Concentration"]
WELL_CONSTANT = ["Metadata_Compound", "Metadata_Concentration", "Metadata_Batch", "Metadata_MoA"]
WELLS, TREATMENTS = "wells.parquet", "treatments.parquet"


class ProfileError(CellclrError, ValueError):
    """Features or metadata that cannot be aggregated as asked."""


def check_features(df: pd.DataFrame, source: str) -> list[str]:
    features = feature_columns(df)
    if not features:
        raise ProfileError(f"{source}: no feature columns (every column starts with Metadata_)")
    values = df[features]
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise ProfileError(f"{source}: non-numeric feature columns {non_numeric[:5]}")
    nan_cols = values.columns[values.isna().any()].tolist()
    if nan_cols:
        raise ProfileError(f"{source}: NaN in feature columns {nan_cols[:5]}")
    return features


def _constant_within(df: pd.DataFrame, keys: list[str], columns: list[str], what: str) -> None:
    for column in columns:
        counts = df.groupby(keys, sort=False, dropna=False)[column].nunique(dropna=False)
        bad = counts[counts > 1]
        if len(bad):
            raise ProfileError(f"{column} differs within {len(bad)} {what}, e.g. {bad.index[0]}")


def well_profiles(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean of each well's cells. Keeps the ``Metadata_`` columns that are constant per well,
    adds ``Metadata_Cells``; treatment metadata must be constant within a well."""
    missing = [c for c in WELL_KEYS + TREATMENT_KEYS if c not in cells]
    if missing:
        raise ProfileError(f"missing columns {missing}")
    features = check_features(cells, "cell features")
    _constant_within(cells, WELL_KEYS, [c for c in WELL_CONSTANT if c in cells], "wells")
    grouped = cells.groupby(WELL_KEYS, sort=True, dropna=False)
    meta = metadata_columns(cells)
    constant = [
        c for c in meta if c not in WELL_KEYS and (grouped[c].nunique(dropna=False) <= 1).all()
    ]
    wells = grouped[constant].first() if constant else grouped.size().to_frame()[[]]
    wells["Metadata_Cells"] = grouped.size()
    wells = wells.join(grouped[features].mean())
    return wells.reset_index()


def treatment_profiles(wells: pd.DataFrame) -> pd.DataFrame:
    """Median of each treatment's (compound, concentration) wells. ``Metadata_Batch`` becomes
    the comma-joined sorted set of the wells' batches (the NSCB batch label)."""
    features = check_features(wells, "well profiles")
    _constant_within(
        wells, TREATMENT_KEYS, [c for c in ["Metadata_MoA"] if c in wells], "treatments"
    )
    grouped = wells.groupby(TREATMENT_KEYS, sort=True, dropna=False)
    out = grouped.size().to_frame("Metadata_Wells")
    if "Metadata_MoA" in wells:
        out.insert(0, "Metadata_MoA", grouped["Metadata_MoA"].first())
    if "Metadata_Batch" in wells:
        out.insert(
            1,
            "Metadata_Batch",
            grouped["Metadata_Batch"].agg(lambda b: ",".join(sorted(set(map(str, b))))),
        )
    if "Metadata_Cells" in wells:
        out["Metadata_Cells"] = grouped["Metadata_Cells"].sum()
    out = out.join(grouped[features].median())
    return out.reset_index()


def read_profiles(folder: str | Path, level: str = "treatments") -> pd.DataFrame:
    """The ``treatments`` (default) or ``wells`` profiles of a ``profile`` output folder."""
    if level not in ("treatments", "wells"):
        raise ProfileError(f"level must be 'treatments' or 'wells', not {level!r}")
    return pd.read_parquet(Path(folder) / (TREATMENTS if level == "treatments" else WELLS))


def profile(
    embeddings_dir: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write ``wells.parquet`` and ``treatments.parquet`` from an ``embed`` output."""
    t_start = time.perf_counter()
    check_new_output(out, overwrite, [embeddings_dir])
    embeddings_dir = Path(embeddings_dir)
    fp = profile_fingerprint(embeddings_dir, cfg)
    wells = well_profiles(pd.read_parquet(embeddings_dir / EMBEDDINGS))
    write_profiles(
        wells,
        Path(out),
        cfg,
        fp,
        time.perf_counter() - t_start,
        overwrite,
        embeddings=str(embeddings_dir),
    )
    return Path(out)


def write_profiles(
    wells: pd.DataFrame,
    out: Path,
    cfg: Config,
    fp: str,
    seconds: float,
    overwrite: bool,
    **source: str,
) -> None:
    """``wells.parquet`` (the raw well means) and ``treatments.parquet`` (the median of the
    wells after ``profile.postprocess``)."""
    t_start = time.perf_counter()
    processed, notes = postprocess(
        wells, cfg.profile.postprocess, cfg.evaluate.control, cfg.evaluate.tvn_lambda
    )
    for note in notes:
        tqdm.write(f"profile ({cfg.profile.postprocess}): {note}")
    treatments = treatment_profiles(processed)
    with staged_dir(out, overwrite=overwrite) as work:
        write_parquet(wells, work / WELLS)
        write_parquet(treatments, work / TREATMENTS)
        save_config(cfg, work / "config.toml")
        write_manifest(
            work,
            "profile",
            fp,
            seconds=round(seconds + time.perf_counter() - t_start, 1),
            n_wells=len(wells),
            n_treatments=len(treatments),
            postprocess_notes=notes,
            **source,
        )


def profile_fingerprint(embeddings_dir: Path, cfg: Config) -> str:
    inputs = [
        read_manifest(embeddings_dir)["fingerprint"],
        cfg.evaluate.control,
        str(cfg.evaluate.tvn_lambda),
    ]
    return fingerprint("profile", inputs, cfg, ("profile",))
