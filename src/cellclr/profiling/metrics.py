"""Evaluation beyond the paper's NSC/NSCB: bootstrap intervals, k-NN voting, per-MoA accuracy,
and mean average precision of MoA retrieval (with copairs, when installed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellclr.columns import BATCH, COMPOUND, MOA
from cellclr.metadata import unit_rows
from cellclr.profiling.retrieval import quiet_zero_rows


def bootstrap_interval(
    correct: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the accuracy when the query treatments are resampled with
    replacement ``n`` times (seeded)."""
    correct = np.asarray(correct, dtype=float)
    if len(correct) == 0 or n <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), size=(n, len(correct)))
    means = correct[draws].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def knn_predictions(
    distance: np.ndarray, allowed: np.ndarray, labels: np.ndarray, k: int
) -> np.ndarray:
    """Per row, the majority label of its ``k`` nearest allowed rows; a tie goes to the tied
    label with the nearest member. Rows with no allowed neighbour get None."""
    dist = np.where(allowed, distance, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    predictions = np.empty(len(dist), dtype=object)
    for i, neighbours in enumerate(order):
        neighbours = neighbours[np.isfinite(dist[i, neighbours])]
        if len(neighbours) == 0:
            predictions[i] = None
            continue
        votes = pd.Series(labels[neighbours]).value_counts(sort=False)
        best = votes[votes == votes.max()].index
        predictions[i] = next(lab for lab in labels[neighbours] if lab in best)
    return predictions


def per_moa(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Correct and total queries per MoA of a neighbour table."""
    grouped = table.groupby(MOA)["Correct"]
    return {str(m): {"correct": int(g.sum()), "total": int(g.size)} for m, g in grouped}


def copairs_available() -> bool:
    try:
        import copairs  # noqa: F401
    except ImportError:
        return False
    return True


def mean_average_precision(treatments: pd.DataFrame, x: np.ndarray, batch: bool) -> float:
    """mAP of MoA retrieval over treatment profiles (cosine), with copairs: for each query,
    positives share its MoA but not its compound (nor, with ``batch``, its batch label);
    negatives have another MoA and compound (and, with ``batch``, another batch label): the
    candidates of NSC (NSCB). Queries without a positive are left out."""
    from copairs.map import average_precision
    from copairs.matching import UnpairedException

    meta = treatments[[COMPOUND, MOA, BATCH]].astype(str)
    meta = meta.reset_index(drop=True)
    x = unit_rows(x)  # the same cosines; copairs' own norms would overflow above ~1e154
    extra = [BATCH] if batch else []
    try:  # copairs divides by row norms itself: a zero row gives NaN, left out below
        with quiet_zero_rows():
            ap = average_precision(
                meta,
                x,
                pos_sameby=[MOA],
                pos_diffby=[COMPOUND, *extra],
                neg_sameby=[],
                neg_diffby=[COMPOUND, MOA, *extra],
                progress_bar=False,
            )
    except UnpairedException:  # no query has a positive (or a negative): nothing to rank
        return float("nan")
    scores = ap["average_precision"].dropna()
    return float(scores.mean()) if len(scores) else float("nan")
