"""``cellclr profile``: cell features -> well profiles (mean) -> treatment profiles (median).

Functions on DataFrames in pycytominer's convention: ``Metadata_*`` columns describe, every
other column is a feature. Wells are always profiled; treatments where the columns that name
them (``screen.treatment``: compound and concentration by default) are known, from the cells
or from a plate map joined to the wells (``profile.platemap``, ``--platemap``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from cellclr.columns import (
    BATCH,
    CELL_COUNT,
    COMPOUND,
    CONCENTRATION,
    MOA,
    TREATMENT,
    WELL_COUNT,
    WELL_KEYS,
)
from cellclr.config import Config, ConfigLike, as_config
from cellclr.embeddings import EMBEDDINGS, iter_embeddings
from cellclr.errors import CellclrError
from cellclr.fingerprint import file_digest, fingerprint
from cellclr.metadata import (
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
    write_parquet,
)
from cellclr.profiling.checks import (
    WELL_CONSTANT,
    ProfileError,
    check_features,
    check_metadata,
    constant_within,
    has_treatments,
    no_treatments,
    refuse_varying,
    required_columns,
    typed_keys,
)
from cellclr.profiling.postprocess import clean_features, log_dropped, postprocess
from cellclr.profiling.streaming import GroupSums, RowProblems
from cellclr.stages import Stage

log = logging.getLogger(__name__)

WELLS, TREATMENTS = "wells.parquet", "treatments.parquet"


def well_profiles(
    cells: pd.DataFrame, source: str = "cell features", treatment: list[str] = TREATMENT
) -> pd.DataFrame:
    """Mean of each well's cells. Keeps the ``Metadata_`` columns that are constant per well,
    adds ``Metadata_Cells``; treatment metadata must be constant within a well. A feature
    column with NaN or infinite values in any cell is NaN in every well (for
    ``clean_features`` to drop and report), never the mean of the other cells."""
    cells = check_metadata(cells, source, treatment=treatment)
    features = check_features(cells, source, allow_nan=True)
    finite = [c for c in features if np.isfinite(cells[c].to_numpy(float)).all()]
    grouped = cells.groupby(WELL_KEYS, sort=True, dropna=False)
    meta = metadata_columns(cells)
    constant = [
        c for c in meta if c not in WELL_KEYS and (grouped[c].nunique(dropna=False) <= 1).all()
    ]
    wells = grouped[constant].first() if constant else grouped.size().to_frame()[[]]
    wells[CELL_COUNT] = grouped.size()
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
    blocks: Iterable[pd.DataFrame],
    source: str = "cell features",
    treatment: list[str] = TREATMENT,
) -> pd.DataFrame:
    """``well_profiles`` of cells that arrive in blocks of rows (an embeddings file, a row
    group at a time): the same wells, columns, checks and errors, and the same means (summed
    in float64), but memory holds one block and the wells, never all cells. A problem in the
    metadata is raised after the last block, its rows counted across them all."""
    blocks = (block for block in blocks if len(block))
    first = next(blocks, None)
    if first is None:
        raise ProfileError(f"{source}: holds no rows")
    required = required_columns(first, "wells", treatment)
    require_filled(first.iloc[:0], required, source)  # missing columns
    numeric = [c for c in feature_columns(first) if pd.api.types.is_numeric_dtype(first[c])]
    described = [c for c in metadata_columns(first) if c not in WELL_KEYS]
    sums = GroupSums(WELL_KEYS, described, numeric)
    numbers = [c for c in [CONCENTRATION] if c in first]
    problems = RowProblems(required, numbers)
    for block in chain([first], blocks):
        problems.add(block)
        if not problems.found:  # then counted to the end, to name them as require_filled does
            sums.add(typed_keys(block, required, source))
    problems.check(source)
    return _streamed_wells(sums, first.iloc[:0], source, treatment)


def _streamed_wells(
    sums: GroupSums, template: pd.DataFrame, source: str, treatment: list[str]
) -> pd.DataFrame:
    """The well profiles of ``stream_well_profiles`` from its sums, after the checks of
    ``well_profiles`` that need every cell (``template``: the cells' columns, no rows)."""
    keys = pd.MultiIndex.from_frame(sums.firsts[WELL_KEYS])
    varies = pd.DataFrame(sums.varies, index=keys, columns=sums.described)
    for column in [c for c in dict.fromkeys([*WELL_CONSTANT, *treatment]) if c in varies]:
        refuse_varying(varies[column], column, "wells", source)
    if has_treatments(template, treatment):
        moa = [c for c in [MOA] if c in template]
        constant_within(sums.firsts, treatment, moa, "treatments", source)
    check_features(template, source, allow_nan=True)
    constant = [c for c in sums.described if not varies[c].any()]
    wells = sums.firsts[WELL_KEYS + constant].copy()
    wells[CELL_COUNT] = sums.counts
    means = _typed(sums.means(), template[sums.features])
    wells = pd.concat([wells, means], axis=1)
    return wells.sort_values(WELL_KEYS).reset_index(drop=True)


def embedded_well_profiles(folder: str | Path, treatment: list[str] = TREATMENT) -> pd.DataFrame:
    """The well profiles of an ``embed`` output folder, read a row group at a time."""
    source = str(Path(folder) / EMBEDDINGS)
    return stream_well_profiles(iter_embeddings(folder), source, treatment)


def treatment_profiles(wells: pd.DataFrame, treatment: list[str] = TREATMENT) -> pd.DataFrame:
    """Median of each treatment's wells (``treatment``: the columns that name a treatment,
    compound and concentration by default). ``Metadata_Batch`` becomes the comma-joined
    sorted set of the wells' batches (the NSCB batch label). The features must be finite
    (``clean_features``)."""
    features = check_features(wells, "well profiles")
    if not has_treatments(wells, treatment):
        raise ProfileError(no_treatments(wells, treatment, "the well profiles"))
    moa = [c for c in [MOA] if c in wells]
    constant_within(wells, treatment, moa, "treatments", "well profiles")
    grouped = wells.groupby(treatment, sort=True, dropna=False)
    out = grouped.size().to_frame(WELL_COUNT)
    if COMPOUND in wells and COMPOUND not in treatment:
        constant_within(wells, treatment, [COMPOUND], "treatments", "well profiles")
        out.insert(0, COMPOUND, grouped[COMPOUND].first())
    if MOA in wells:
        out.insert(0, MOA, grouped[MOA].first())
    if BATCH in wells:
        out.insert(
            1,
            BATCH,
            grouped[BATCH].agg(lambda b: ",".join(sorted(set(map(str, b))))),
        )
    if CELL_COUNT in wells:
        out[CELL_COUNT] = grouped[CELL_COUNT].sum()
    out = out.join(grouped[features].median())
    return out.reset_index()


def profile_treatment(folder: str | Path, default: list[str] = TREATMENT) -> list[str]:
    """The treatment columns a ``profile`` output was made with (its ``stage.json``)."""
    try:
        return list(read_manifest(folder).get("treatment") or default)
    except CellclrError:
        return list(default)


def join_moa(table: pd.DataFrame, moa: pd.DataFrame, path: str | Path, source: str) -> pd.DataFrame:
    """``table`` with ``Metadata_MoA`` from ``moa`` (``read_moa`` of ``path``: compound,
    concentration, moa; None where it has none); replacing a ``Metadata_MoA`` is said."""
    labels = moa_of(moa, table)
    if MOA in table:
        log.warning(f"{source}: its Metadata_MoA column is replaced by the MoAs of {path}")
    return table.assign(Metadata_MoA=labels)


def read_profiles(folder: str | Path, level: str = "treatments") -> pd.DataFrame:
    """The ``treatments`` (default) or ``wells`` profiles of a ``profile`` output folder. A
    folder whose wells name no treatments has no treatment profiles: an error that says so."""
    if level not in ("treatments", "wells"):
        raise ProfileError(f"level must be 'treatments' or 'wells', not {level!r}")
    name = TREATMENTS if level == "treatments" else WELLS
    folder = Path(folder)
    if level == "treatments" and (folder / WELLS).is_file() and not (folder / name).is_file():
        why = _manifest(folder).get("skipped", {}).get("treatments", "")
        raise ProfileError(f"{folder} holds well profiles only: no treatment profiles ({why})")
    table = read_output_table(folder, name, "profile")
    return check_metadata(table, str(folder / name), level, profile_treatment(folder))


def _manifest(folder: Path) -> dict:
    try:
        return read_manifest(folder)
    except CellclrError:
        return {}


def profile(
    embeddings_dir: str | Path,
    out: str | Path,
    cfg: ConfigLike = None,
    *,
    moa: str | Path | None = None,
    overwrite: bool = False,
    platemap: str | Path | None = None,
) -> Path:
    """Write ``wells.parquet`` (and ``treatments.parquet`` where treatments are known) from an
    ``embed`` output, read a row group at a time (memory holds one and the wells, not the
    cells). ``platemap`` (else ``profile.platemap``): a plate map joined to the wells;
    ``moa``: a table of compound, concentration, moa whose MoAs replace the embeddings'."""
    cfg = as_config(cfg)
    if platemap is not None:
        cfg = cfg.model_copy(deep=True)
        cfg.profile.platemap = str(platemap)
    check_new_output(out, overwrite, [embeddings_dir, cfg.profile.platemap, moa])
    embeddings_dir = Path(embeddings_dir)
    moa_table = read_moa(Path(moa)) if moa is not None else None
    stage = Stage("profile", profile_fingerprint(embeddings_dir, cfg, moa), cfg)
    wells = embedded_well_profiles(embeddings_dir, cfg.screen.treatment)
    write_profiles(
        wells,
        Path(out),
        stage,
        overwrite,
        moa=None if moa_table is None else (moa_table, moa),
        embeddings=str(embeddings_dir),
    )
    return Path(out)


def join_wells_platemap(wells: pd.DataFrame, path: str | Path, cfg: Config) -> pd.DataFrame:
    """The wells with the treatments of the plate map at ``path`` (its columns replace the
    wells' of the same name), checked as well profiles are."""
    from cellclr.tables.platemap import join_platemap

    joined = join_platemap(wells, path, what="wells of the profiles")
    meta = metadata_columns(joined)
    ordered = joined[[*meta, *(c for c in joined.columns if c not in meta)]]
    return check_metadata(ordered, f"plate map {path}", treatment=cfg.screen.treatment)


def write_profiles(
    wells: pd.DataFrame,
    out: Path,
    stage: Stage,
    overwrite: bool,
    moa: tuple[pd.DataFrame, str | Path] | None = None,
    **source: str,
) -> None:
    """``wells.parquet`` (the raw well means, without feature columns holding NaN) and, where
    the wells name treatments (after joining ``profile.platemap``), ``treatments.parquet``
    (the median of the wells after ``profile.postprocess``). ``moa``: a MoA table (and its
    path) whose MoAs replace the wells' own. ``source``: the input, recorded in the manifest;
    its path names the wells in errors. ``stage``: the profile stage (its config)."""
    cfg = stage.cfg
    origin = next(iter(source.values()), "well profiles")
    if cfg.profile.platemap:
        wells = join_wells_platemap(wells, cfg.profile.platemap, cfg)
    if moa is not None:
        wells = join_moa(wells, moa[0], moa[1], origin)
    wells, dropped = clean_features(wells, constant=False, source=origin)
    log_dropped("profile", dropped)
    treatment = cfg.screen.treatment
    treatments, notes, skipped = None, [], {}
    if has_treatments(wells, treatment):
        processed, notes = postprocess(
            wells, cfg.profile.postprocess, cfg.screen.control, cfg.postprocess.tvn_lambda
        )
        for note in notes:
            log.warning(f"profile ({cfg.profile.postprocess}): {note}")
        treatments = treatment_profiles(processed, treatment)
    else:
        skipped["treatments"] = no_treatments(wells, treatment, "the wells")
        log.warning(f"profile: wells only: {skipped['treatments']}")
    with stage.output(out, overwrite=overwrite) as work:
        write_parquet(wells, work / WELLS)
        if treatments is not None:
            write_parquet(treatments, work / TREATMENTS)
        stage.manifest.update(
            n_wells=len(wells),
            n_treatments=None if treatments is None else len(treatments),
            treatment=treatment,
            skipped=skipped,
            postprocess_notes=notes,
            dropped_features=dropped,
            **source,
        )


def profile_fingerprint(embeddings_dir: Path, cfg: Config, moa: str | Path | None = None) -> str:
    inputs = [
        read_manifest(embeddings_dir)["fingerprint"],
        file_digest(cfg.profile.platemap),
        *([file_digest(moa)] if moa is not None else []),
    ]
    return fingerprint("profile", inputs, cfg, ("profile", "screen", "postprocess"))
