"""``cellclr profile``: cell features -> well profiles (mean) -> treatment profiles (median).

Functions on DataFrames in pycytominer's convention: ``Metadata_*`` columns describe, every
other column is a feature.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from cellclr.config import Config, save_config
from cellclr.embed import EMBEDDINGS
from cellclr.errors import CellclrError
from cellclr.fingerprint import fingerprint
from cellclr.outputs import read_manifest, staged_dir, write_manifest, write_parquet

WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]
TREATMENT_KEYS = ["Metadata_Compound", "Metadata_Concentration"]
WELL_CONSTANT = ["Metadata_Compound", "Metadata_Concentration", "Metadata_Batch", "Metadata_MoA"]
WELLS, TREATMENTS = "wells.parquet", "treatments.parquet"


class ProfileError(CellclrError, ValueError):
    """Features or metadata that cannot be aggregated as asked."""


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_")]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("Metadata_")]


def _check_features(df: pd.DataFrame, source: str) -> list[str]:
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
    features = _check_features(cells, "cell features")
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
    features = _check_features(wells, "well profiles")
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


def profile(
    embeddings_dir: str | Path, out: str | Path, cfg: Config, *, overwrite: bool = False
) -> Path:
    """Write ``wells.parquet`` and ``treatments.parquet`` from an ``embed`` output."""
    t_start = time.perf_counter()
    embeddings_dir = Path(embeddings_dir)
    fp = profile_fingerprint(embeddings_dir, cfg)
    cells = pd.read_parquet(embeddings_dir / EMBEDDINGS)
    with staged_dir(out, overwrite=overwrite) as work:
        wells = well_profiles(cells)
        write_parquet(wells, work / WELLS)
        treatments = treatment_profiles(wells)
        write_parquet(treatments, work / TREATMENTS)
        save_config(cfg, work / "config.toml")
        write_manifest(
            work,
            "profile",
            fp,
            seconds=round(time.perf_counter() - t_start, 1),
            embeddings=str(embeddings_dir),
            n_wells=len(wells),
            n_treatments=len(treatments),
        )
    return Path(out)


def profile_fingerprint(embeddings_dir: Path, cfg: Config) -> str:
    return fingerprint("profile", [read_manifest(embeddings_dir)["fingerprint"]], cfg, ())
