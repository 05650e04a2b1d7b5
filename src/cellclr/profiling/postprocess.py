"""Post-processing of WELL profiles before the treatment median, selectable by name.

Every function takes and returns a DataFrame in pycytominer's convention: the ``Metadata_*``
columns pass through unchanged, every other column is a feature, the row order (and index) is
kept. Each returns human-readable notes on the fallbacks it used, for the caller to log.

- ``"none"``: the wells unchanged.
- ``"dmso"``: per-plate standardisation to the control wells (``standardize_to_controls``).
- ``"tvn"``: typical variation normalisation with per-batch CORAL (``tvn``), as
  ``shared/docs/moa-evaluation.md`` defines it.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, PLATE, WELL
from cellclr.errors import CellclrError
from cellclr.metadata import feature_columns

log = logging.getLogger(__name__)

POSTPROCESSING = ("none", "dmso", "tvn")
# Fitted on the control wells: after them, the controls no longer say how much batch is left.
FITTED_ON_CONTROLS = ("dmso", "tvn")
# A standard deviation this small relative to the feature's mean is rounding, i.e. zero.
ZERO_STD = 1e-12


class PostprocessError(CellclrError, ValueError):
    """Wells that cannot be post-processed as asked."""


def _shorten(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _exponent(peak: np.ndarray | float) -> np.ndarray:
    """The exponent of the power of two just above ``peak`` (0 for 0): dividing by it
    (``np.ldexp(x, -exponent)``) is exact and brings the values below 1, so that squares and
    sums of squares cannot overflow."""
    return np.frexp(peak)[1]


def clean_features(
    df: pd.DataFrame, *, constant: bool = True, source: str = "well profiles"
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Drop the feature columns holding NaN or +-inf (``"nonfinite"``) and, with ``constant``,
    those constant across all rows (``"constant"``); return the rest and the dropped columns
    by reason. ``source`` names the table in errors."""
    features = feature_columns(df)
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise PostprocessError(f"{source}: non-numeric feature columns: {_shorten(non_numeric)}")
    values = df[features].to_numpy(np.float64)
    nonfinite = ~np.isfinite(values).all(axis=0)
    dropped = {"nonfinite": [c for c, bad in zip(features, nonfinite, strict=True) if bad]}
    if constant:
        flat = ~nonfinite & (values == values[:1]).all(axis=0)
        dropped["constant"] = [c for c, bad in zip(features, flat, strict=True) if bad]
    removed = {c for columns in dropped.values() for c in columns}
    if len(removed) == len(features):
        raise PostprocessError(f"{source}: {_nothing_left(df, values, dropped)}")
    return df.drop(columns=[c for c in features if c in removed]), dropped


def _nothing_left(df: pd.DataFrame, values: np.ndarray, dropped: dict[str, list[str]]) -> str:
    """Why ``clean_features`` left no column, naming the rows without any finite feature."""
    why = (
        f"no feature column is left: of {values.shape[1]}, {len(dropped['nonfinite'])} hold "
        f"NaN/inf and {len(dropped.get('constant', []))} are constant"
    )
    empty = np.flatnonzero(~np.isfinite(values).any(axis=1))
    if len(empty):
        names = _shorten([_row_name(df, i) for i in empty])
        why += f"; {len(empty)} rows have no finite feature at all (empty wells?): {names}"
    return why


def _row_name(df: pd.DataFrame, i: int) -> str:
    """Row ``i`` (by position) by its plate and well when the table has them."""
    keys = [c for c in (PLATE, WELL) if c in df]
    return " ".join(str(df[c].iloc[i]) for c in keys) if keys else f"row {i}"


def log_dropped(stage: str, dropped: dict[str, list[str]]) -> None:
    """One line per reason for the feature columns ``clean_features`` dropped."""
    for reason, columns in dropped.items():
        if columns:
            log.warning(
                f"{stage}: dropped {len(columns)} {reason} feature columns: {_shorten(columns)}"
            )


def _checked(wells: pd.DataFrame, control: str, needed: list[str]) -> tuple[list[str], np.ndarray]:
    """The feature columns and the control mask; errors for what the methods cannot work with."""
    missing = [c for c in [COMPOUND, *needed] if c not in wells]
    if missing:
        raise PostprocessError(f"well profiles lack columns {missing}")
    features = feature_columns(wells)
    if not features:
        raise PostprocessError("well profiles have no feature columns")
    if not np.isfinite(wells[features].to_numpy(np.float64)).all():
        raise PostprocessError("well profiles hold NaN or infinite features: clean_features first")
    is_control = (wells[COMPOUND].astype(str) == control).to_numpy()
    if not is_control.any():
        raise PostprocessError(f"no control wells: no row has {COMPOUND} == {control!r}")
    return features, is_control


def _replace_features(
    wells: pd.DataFrame, features: list[str], values: np.ndarray, names: list[str] | None = None
) -> pd.DataFrame:
    """The wells with ``values`` as the features: in place when ``names`` is None, else the
    metadata columns followed by the new ``names``."""
    new = pd.DataFrame(values, columns=names or features)
    out = pd.concat([wells.drop(columns=features).reset_index(drop=True), new], axis=1)
    out.index = wells.index
    return out if names else out[list(wells.columns)]


def standardize_to_controls(
    wells: pd.DataFrame, control: str = "DMSO", min_wells: int = 3
) -> tuple[pd.DataFrame, list[str]]:
    """Per plate and feature: ``(x - m_p) / s_p``, ``m_p`` the mean and ``s_p`` the standard
    deviation (ddof=1) of the plate's control wells (pycytominer's ``normalize(method=
    "standardize", samples="Metadata_Compound == 'DMSO'")`` per plate, except that its
    StandardScaler uses ddof=0).

    Small controls: a plate without control wells is centred on the mean of its batch's
    control wells (an error names the plates whose batch has none). A plate with fewer than
    ``min_wells`` control wells takes the pooled within-plate standard deviation of its batch's
    control wells, ``sqrt(sum_p sum_i (x_pi - m_p)^2 / sum_p (n_p - 1))`` over the batch's plates
    (a one-well plate adds nothing), or of all plates when the batch pools no degree of freedom
    or there is no ``Metadata_Batch``, or, when no plate has two control wells, the standard
    deviation of all control wells. A standard deviation of 0
    (<= 1e-12 |m_p|, i.e. rounding) leaves the feature centred but not scaled on that plate.
    The notes say which plates used which fallback.
    """
    if min_wells < 2:
        raise PostprocessError(f"min_wells must be >= 2 (a standard deviation), not {min_wells}")
    has_batch = BATCH in wells
    features, is_control = _checked(wells, control, [PLATE])
    x = wells[features].to_numpy(np.float64)
    exponent = _exponent(np.abs(x).max(axis=0))  # (x - m) / s does not change; no overflow
    x = np.ldexp(x, -exponent)
    plate = wells[PLATE].to_numpy()
    controls = pd.DataFrame(x[is_control], columns=features)
    controls.insert(0, PLATE, plate[is_control])
    by_plate = controls.groupby(PLATE, sort=False, dropna=False)
    mean, std, n = by_plate[features].mean(), by_plate[features].std(ddof=1), by_plate.size()

    if has_batch:
        batches = wells.groupby(PLATE, sort=False, dropna=False)[BATCH]
        mixed = [str(p) for p, m in batches.nunique(dropna=False).items() if m > 1]
        if mixed:
            raise PostprocessError(f"plates whose wells have several {BATCH}: {_shorten(mixed)}")
        batch_of = batches.first()
    else:
        batch_of = pd.Series("all plates", index=pd.unique(plate))
    plate_batch = batch_of.loc[n.index]

    # Pooled within-plate sums of squares and degrees of freedom, per batch and over all plates.
    residual_ss = (
        ((controls[features] - mean.loc[controls[PLATE]].to_numpy()) ** 2)
        .groupby(controls[PLATE], sort=False, dropna=False)
        .sum()
    )
    dof = n - 1
    batch_ss = residual_ss.groupby(plate_batch.to_numpy(), dropna=False).sum()
    batch_dof = dof.groupby(plate_batch.to_numpy(), dropna=False).sum()
    all_ss, all_dof = residual_ss.sum(), int(dof.sum())

    notes: list[str] = []
    no_control = [p for p in pd.unique(plate) if p not in n.index]
    if no_control:
        # centre on the control wells of the plate's batch (all its plates pooled)
        control_batch = batch_of.loc[controls[PLATE]].to_numpy()
        batch_mean = controls[features].groupby(control_batch).mean()
        orphans = [str(p) for p in no_control if batch_of[p] not in batch_mean.index]
        if orphans:
            raise PostprocessError(
                f"plates without {COMPOUND} == {control!r} wells, in batches without any, so "
                f"without a mean to centre on: {_shorten(orphans)}"
            )
        for p in no_control:
            mean.loc[p] = batch_mean.loc[batch_of[p]].to_numpy()
            n.loc[p] = 0
        notes.append(
            f"dmso: plates without {control} wells are centred on their batch's {control} "
            f"wells: {_shorten([str(p) for p in no_control])}"
        )
        std = std.reindex(mean.index)

    small = n.index[n < min_wells]
    pooled_from: dict[str, list[str]] = {}
    for p in small:
        b = batch_of[p]
        if has_batch and b in batch_dof.index and batch_dof[b] > 0:
            std.loc[p] = np.sqrt(batch_ss.loc[b] / batch_dof[b]).to_numpy()
            source = f"the plates of batch {b}"
        elif all_dof > 0:
            std.loc[p] = np.sqrt(all_ss / all_dof).to_numpy()
            source = "all plates"
        elif len(controls) >= 2:  # no plate has two: the spread between plates is all there is
            std.loc[p] = controls[features].std(ddof=1).to_numpy()
            source = f"all {control} wells (no plate has two)"
        else:
            raise PostprocessError(
                f"fewer than two {control} wells: no standard deviation can be estimated"
            )
        pooled_from.setdefault(source, []).append(f"{p} ({n[p]})")

    notes += [
        f"dmso: plates with < {min_wells} {control} wells use the pooled std of {source}: "
        f"{_shorten(plates)}"
        for source, plates in pooled_from.items()
    ]
    m, s = mean.to_numpy(), std.to_numpy()
    zero = s <= ZERO_STD * np.abs(m)
    for p, row in zip(mean.index, zero, strict=True):
        if row.any():
            notes.append(
                f"dmso: plate {p}: {control} std 0, centred but not scaled: "
                f"{_shorten([f for f, z in zip(features, row, strict=True) if z])}"
            )
    row_of = mean.index.get_indexer(plate)
    centred = x - m[row_of]
    out = np.where(
        zero[row_of], np.ldexp(centred, exponent), centred / np.where(zero, 1.0, s)[row_of]
    )
    return _replace_features(wells, features, out), notes


def _sym_power(m: np.ndarray, power: float) -> np.ndarray:
    """``m ** power`` for a symmetric positive (semi)definite ``m``, by eigendecomposition."""
    e, v = np.linalg.eigh(m)
    return (v * np.clip(e, 0.0, None) ** power) @ v.T


def _coral(
    xw: np.ndarray, is_control: np.ndarray, batch: np.ndarray, lam: float
) -> tuple[np.ndarray, list[str]]:
    """CORAL of whitened wells per batch (see ``tvn``), and the batches with < 2 controls."""
    k = xw.shape[1]

    def cov(rows: np.ndarray) -> np.ndarray:
        return np.cov(xw[rows], rowvar=False, ddof=1).reshape(k, k)

    c_t = cov(is_control)
    target = _sym_power(c_t + lam * np.eye(k), 0.5)
    out = np.empty_like(xw)
    undefined = []
    for b in pd.unique(batch):
        in_batch = pd.isna(batch) if pd.isna(b) else batch == b
        batch_control = in_batch & is_control
        if batch_control.sum() < 2:
            undefined.append(f"{b} ({int(batch_control.sum())})")
            c_s = c_t
        else:
            c_s = cov(batch_control)
        out[in_batch] = xw[in_batch] @ _sym_power(c_s + np.eye(k), -0.5) @ target
    return out, undefined


def tvn(
    wells: pd.DataFrame, control: str = "DMSO", lam: float = 1.0
) -> tuple[pd.DataFrame, list[str]]:
    """Typical variation normalisation (Ando et al. 2017) with per-batch CORAL.

    With ``D`` the control wells, ``mu = mean(D)``, ``C = cov(D)`` (ddof=1) ``= V diag(e) V^T``
    (``eigh``, negative rounding eigenvalues clipped to 0):
    ``X_w = (X - mu) V diag(1 / sqrt(e + lam))`` (PCA whitening: all components kept, the
    features rotated into the eigenbasis, so the output columns are ``tvn_1 .. tvn_k`` by
    decreasing DMSO variance, not the input features). Then per batch ``s`` (``Metadata_Batch``):
    ``X_w <- X_w (C_s + I)^(-1/2) (C_t + lam I)^(1/2)``, ``C_s`` the covariance (ddof=1) of the
    whitened control wells of batch ``s`` and ``C_t`` that of all whitened control wells; the
    matrix roots by ``eigh``. A batch with fewer than 2 control wells has no ``C_s``: it uses
    ``C_s = C_t`` (the identity when lam == 1), and a note names it.

    CORAL does not re-centre: the control mean stays 0 only where the batches' whitened control
    means agree. ``lam`` must be >= 0, and > 0 when ``C`` is singular (an eigenvalue <=
    k * eps * max(e)), which it is whenever there are no more control wells than features.
    """
    features, is_control = _checked(wells, control, [BATCH])
    n_control, k = int(is_control.sum()), len(features)
    if n_control < 2:
        raise PostprocessError(f"TVN needs >= 2 {control} wells for a covariance, not {n_control}")
    if lam < 0:
        raise PostprocessError(f"TVN's lambda must be >= 0, not {lam}")
    x = wells[features].to_numpy(np.float64)
    # In units of a power of two above the largest feature value (when that is > 1) the
    # covariance cannot overflow; lambda, added to its eigenvalues, scales with their square.
    peak = float(np.abs(x).max())
    exponent = max(int(_exponent(peak)), 0)
    x, lam_x = np.ldexp(x, -exponent), float(np.ldexp(lam, -2 * exponent))
    mu = x[is_control].mean(axis=0)
    e, v = np.linalg.eigh(np.cov(x[is_control] - mu, rowvar=False, ddof=1).reshape(k, k))
    e, v = np.clip(e[::-1], 0.0, None), v[:, ::-1]  # decreasing variance: tvn_1 the largest
    if lam_x == 0 and e.min() <= k * np.finfo(np.float64).eps * e.max():
        why = (
            "use lambda > 0"
            if lam == 0
            else f"lambda = {lam} vanishes beside feature values up to {peak:.3g}: scale them down"
        )
        raise PostprocessError(
            f"TVN would invert a zero eigenvalue: the {control} covariance of {n_control} wells "
            f"and {k} features is singular; {why}"
        )
    xw = (x - mu) @ (v / np.sqrt(e + lam_x))
    try:  # only a singular covariance with a vanishing lambda can blow xw up this far
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out, undefined = _coral(xw, is_control, wells[BATCH].to_numpy(), lam)
        if not np.isfinite(out).all():
            raise np.linalg.LinAlgError("non-finite TVN output")
    except np.linalg.LinAlgError:
        raise PostprocessError(
            f"TVN overflowed: feature values up to {peak:.3g} are too large for lambda = {lam} "
            f"with a singular {control} covariance: scale the features down"
        ) from None
    notes = []
    if undefined:
        notes.append(
            f"tvn: batches with < 2 {control} wells have no covariance, C_s = C_t used"
            f"{'' if lam == 1 else f' (not the identity with lambda = {lam})'}: "
            f"{_shorten(undefined)}"
        )
    return _replace_features(wells, features, out, [f"tvn_{i + 1}" for i in range(k)]), notes


def postprocess(
    wells: pd.DataFrame, method: str, control: str = "DMSO", lam: float = 1.0
) -> tuple[pd.DataFrame, list[str]]:
    """The wells post-processed by ``method`` (one of ``POSTPROCESSING``) and the notes on the
    fallbacks used. ``"none"`` returns a copy of the wells; ``lam`` is TVN's lambda."""
    if method == "none":
        return wells.copy(), []
    if method == "dmso":
        return standardize_to_controls(wells, control)
    if method == "tvn":
        return tvn(wells, control, lam)
    raise PostprocessError(f"unknown post-processing {method!r}: one of {POSTPROCESSING}")
