"""``cellclr profile``: cell features -> well profiles (mean) -> treatment profiles (median).

Functions on DataFrames in pycytominer's convention: ``Metadata_*`` columns describe, every
other column is a feature.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cellclr.config import Config, save_config
from cellclr.embeddings import EMBEDDINGS, iter_embeddings
from cellclr.errors import CellclrError
from cellclr.fingerprint import file_digest, fingerprint
from cellclr.metadata import (
    as_concentrations,
    feature_columns,
    metadata_columns,
    moa_of,
    read_moa,
    read_output_table,
    require_filled,
)
from cellclr.outputs import (
    check_new_output,
    read_manifest,
    staged_dir,
    write_manifest,
    write_parquet,
)
from cellclr.profiling.postprocess import clean_features, log_dropped, postprocess
from cellclr.profiling.streaming import GroupSums, RowProblems

WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]
TREATMENT_KEYS = ["Metadata_Compound", "Metadata_Concentration"]
WELL_CONSTANT = ["Metadata_Compound", "Metadata_Concentration", "Metadata_Batch", "Metadata_MoA"]
WELLS, TREATMENTS = "wells.parquet", "treatments.parquet"


class ProfileError(CellclrError, ValueError):
    """Features or metadata that cannot be aggregated as asked."""


def check_features(df: pd.DataFrame, source: str, *, allow_nan: bool = False) -> list[str]:
    """The feature columns: there must be some, all numeric, and (unless ``allow_nan``)
    finite."""
    features = feature_columns(df)
    if not features:
        raise ProfileError(f"{source}: no feature columns (every column starts with Metadata_)")
    values = df[features]
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise ProfileError(f"{source}: non-numeric feature columns {non_numeric[:5]}")
    if not allow_nan:
        nan_cols = [c for c in features if not np.isfinite(values[c].to_numpy(float)).all()]
        if nan_cols:
            raise ProfileError(
                f"{source}: NaN or infinite values in feature columns {nan_cols[:5]} "
                "(drop them first: clean_features)"
            )
    return features


def check_metadata(table: pd.DataFrame, source: str, level: str = "wells") -> pd.DataFrame:
    """The table (of ``level`` "wells" or "treatments", or cells, which are keyed as wells)
    with its keys and ``Metadata_Batch`` (when present) filled, names as text and
    concentrations as numbers, and its treatment metadata constant within wells and its MoA
    within treatments."""
    if table.empty:
        raise ProfileError(f"{source}: holds no rows")
    keys = _required(table, level)
    require_filled(table, keys, source)
    table = _named(table, keys, source)
    if level == "wells":
        constant = [c for c in WELL_CONSTANT if c in table]
        _constant_within(table, WELL_KEYS, constant, "wells", source)
    moa = [c for c in ["Metadata_MoA"] if c in table]
    _constant_within(table, TREATMENT_KEYS, moa, "treatments", source)
    return table


def _required(table: pd.DataFrame, level: str) -> list[str]:
    """The metadata columns that must be filled: the keys (of wells and treatments, or of
    treatments) and ``Metadata_Batch`` when present."""
    own = WELL_KEYS if level == "wells" else []
    return [*own, *TREATMENT_KEYS, *(c for c in ["Metadata_Batch"] if c in table)]


def _named(table: pd.DataFrame, keys: list[str], source: str) -> pd.DataFrame:
    """The table with its ``keys`` as text and its concentrations as numbers (text is an
    error)."""
    table = table.copy(deep=False)  # the features are shared, not copied (copy-on-write)
    for column in keys:
        if column != "Metadata_Concentration":
            table[column] = table[column].astype(str)
    table["Metadata_Concentration"] = as_concentrations(table, "Metadata_Concentration", source)
    return table


def _constant_within(
    df: pd.DataFrame, keys: list[str], columns: list[str], what: str, source: str
) -> None:
    for column in columns:
        counts = df.groupby(keys, sort=False, dropna=False)[column].nunique(dropna=False)
        _refuse_varying(counts > 1, column, what, source)


def _refuse_varying(varies: pd.Series, column: str, what: str, source: str) -> None:
    """An error if ``column`` varies within some groups: ``varies`` flags each group, indexed
    by its keys in order of first appearance."""
    if varies.any():
        example = varies.index[varies.to_numpy()][0]
        raise ProfileError(
            f"{source}: {column} differs within {int(varies.sum())} {what}, e.g. {example}"
        )


def well_profiles(cells: pd.DataFrame, source: str = "cell features") -> pd.DataFrame:
    """Mean of each well's cells. Keeps the ``Metadata_`` columns that are constant per well,
    adds ``Metadata_Cells``; treatment metadata must be constant within a well. A feature
    column with NaN or infinite values in any cell is NaN in every well (for
    ``clean_features`` to drop and report), never the mean of the other cells."""
    cells = check_metadata(cells, source)
    features = check_features(cells, source, allow_nan=True)
    finite = [c for c in features if np.isfinite(cells[c].to_numpy(float)).all()]
    grouped = cells.groupby(WELL_KEYS, sort=True, dropna=False)
    meta = metadata_columns(cells)
    constant = [
        c for c in meta if c not in WELL_KEYS and (grouped[c].nunique(dropna=False) <= 1).all()
    ]
    wells = grouped[constant].first() if constant else grouped.size().to_frame()[[]]
    wells["Metadata_Cells"] = grouped.size()
    means = grouped[finite].mean().reindex(columns=features)  # NaN where a cell had none
    means = _typed(means, cells[features])
    wells = wells.join(means)
    return wells.reset_index()


def _typed(means: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """The well means of ``features`` as pandas types them: float32 for a float32 feature,
    float64 for the rest (in one block per dtype)."""
    dtypes = {c: np.float32 if t == np.float32 else np.float64 for c, t in features.dtypes.items()}
    return means.astype(dtypes).copy()  # the copy joins the columns into blocks


def stream_well_profiles(
    blocks: Iterable[pd.DataFrame], source: str = "cell features"
) -> pd.DataFrame:
    """``well_profiles`` of cells that arrive in blocks of rows (an embeddings file, a row
    group at a time): the same wells, columns, checks and errors, and the same means (summed
    in float64), but memory holds one block and the wells, never all cells. A problem in the
    metadata is raised after the last block, its rows counted across them all."""
    blocks = (block for block in blocks if len(block))
    first = next(blocks, None)
    if first is None:
        raise ProfileError(f"{source}: holds no rows")
    required = _required(first, "wells")
    require_filled(first.iloc[:0], required, source)  # missing columns
    numeric = [c for c in feature_columns(first) if pd.api.types.is_numeric_dtype(first[c])]
    described = [c for c in metadata_columns(first) if c not in WELL_KEYS]
    sums = GroupSums(WELL_KEYS, described, numeric)
    problems = RowProblems(required, ["Metadata_Concentration"])
    for block in chain([first], blocks):
        problems.add(block)
        if not problems.found:  # then counted to the end, to name them as require_filled does
            sums.add(_named(block, required, source))
    problems.check(source)
    return _streamed_wells(sums, first.iloc[:0], source)


def _streamed_wells(sums: GroupSums, template: pd.DataFrame, source: str) -> pd.DataFrame:
    """The well profiles of ``stream_well_profiles`` from its sums, after the checks of
    ``well_profiles`` that need every cell (``template``: the cells' columns, no rows)."""
    keys = pd.MultiIndex.from_frame(sums.firsts[WELL_KEYS])
    varies = pd.DataFrame(sums.varies, index=keys, columns=sums.described)
    for column in [c for c in WELL_CONSTANT if c in varies]:
        _refuse_varying(varies[column], column, "wells", source)
    moa = [c for c in ["Metadata_MoA"] if c in template]
    _constant_within(sums.firsts, TREATMENT_KEYS, moa, "treatments", source)
    check_features(template, source, allow_nan=True)
    constant = [c for c in sums.described if not varies[c].any()]
    wells = sums.firsts[WELL_KEYS + constant].copy()
    wells["Metadata_Cells"] = sums.counts
    means = _typed(sums.means(), template[sums.features])
    wells = pd.concat([wells, means], axis=1)
    return wells.sort_values(WELL_KEYS).reset_index(drop=True)


def embedded_well_profiles(folder: str | Path) -> pd.DataFrame:
    """The well profiles of an ``embed`` output folder, read a row group at a time."""
    return stream_well_profiles(iter_embeddings(folder), str(Path(folder) / EMBEDDINGS))


def treatment_profiles(wells: pd.DataFrame) -> pd.DataFrame:
    """Median of each treatment's (compound, concentration) wells. ``Metadata_Batch`` becomes
    the comma-joined sorted set of the wells' batches (the NSCB batch label). The features must
    be finite (``clean_features``)."""
    features = check_features(wells, "well profiles")
    moa = [c for c in ["Metadata_MoA"] if c in wells]
    _constant_within(wells, TREATMENT_KEYS, moa, "treatments", "well profiles")
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


def join_moa(table: pd.DataFrame, moa: pd.DataFrame, path: str | Path, source: str) -> pd.DataFrame:
    """``table`` with ``Metadata_MoA`` from ``moa`` (``read_moa`` of ``path``: compound,
    concentration, moa; None where it has none); replacing a ``Metadata_MoA`` is said."""
    labels = moa_of(moa, table)
    if "Metadata_MoA" in table:
        tqdm.write(f"{source}: its Metadata_MoA column is replaced by the MoAs of {path}")
    return table.assign(Metadata_MoA=labels)


def read_profiles(folder: str | Path, level: str = "treatments") -> pd.DataFrame:
    """The ``treatments`` (default) or ``wells`` profiles of a ``profile`` output folder."""
    if level not in ("treatments", "wells"):
        raise ProfileError(f"level must be 'treatments' or 'wells', not {level!r}")
    name = TREATMENTS if level == "treatments" else WELLS
    table = read_output_table(folder, name, "profile")
    return check_metadata(table, str(Path(folder) / name), level)


def profile(
    embeddings_dir: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``wells.parquet`` and ``treatments.parquet`` from an ``embed`` output, read a
    row group at a time (memory holds one and the wells, not the cells). ``moa``: a table of
    compound, concentration, moa whose MoAs replace the embeddings' own."""
    t_start = time.perf_counter()
    check_new_output(out, overwrite, [embeddings_dir, moa])
    embeddings_dir = Path(embeddings_dir)
    moa_table = read_moa(Path(moa)) if moa is not None else None
    fp = profile_fingerprint(embeddings_dir, cfg, moa)
    wells = embedded_well_profiles(embeddings_dir)
    if moa_table is not None:
        wells = join_moa(wells, moa_table, moa, str(embeddings_dir / EMBEDDINGS))
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
    """``wells.parquet`` (the raw well means, without feature columns holding NaN) and
    ``treatments.parquet`` (the median of the wells after ``profile.postprocess``). ``source``:
    the input, recorded in the manifest; its path names the wells in errors."""
    t_start = time.perf_counter()
    origin = next(iter(source.values()), "well profiles")
    wells, dropped = clean_features(wells, constant=False, source=origin)
    log_dropped("profile", dropped)
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
            dropped_features=dropped,
            **source,
        )


def profile_fingerprint(embeddings_dir: Path, cfg: Config, moa: str | Path | None = None) -> str:
    inputs = [
        read_manifest(embeddings_dir)["fingerprint"],
        cfg.evaluate.control,
        str(cfg.evaluate.tvn_lambda),
        *([file_digest(moa)] if moa is not None else []),
    ]
    return fingerprint("profile", inputs, cfg, ("profile",))
