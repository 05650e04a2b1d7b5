"""Beyond the paper (cellclr.profiling.metrics): bootstrap intervals, k-NN votes, MoA mAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    from cellclr.profiling.metrics import bootstrap_interval

    correct = np.array([1, 0, 1, 1, 0, 1, 1, 0, 0, 1] * 5, dtype=bool)
    low, high = bootstrap_interval(correct, n=2000, seed=3)
    assert low < correct.mean() < high and low >= 0 and high <= 1
    assert (low, high) == bootstrap_interval(correct, n=2000, seed=3)
    # the spread of a proportion: about 1.96 * sqrt(p (1 - p) / n) on each side
    half = 1.96 * np.sqrt(0.6 * 0.4 / 50)
    assert abs((high - low) / 2 - half) < 0.03


def test_knn_voting():
    from cellclr.profiling.metrics import knn_predictions

    # query 0 has neighbours at distances 1, 2, 3 with labels b, a, a: 1-NN says b, 3-NN says a
    d = np.array([[0, 1, 2, 3], [1, 0, 1, 1], [2, 1, 0, 1], [3, 1, 1, 0]], dtype=float)
    labels = np.array(["a", "b", "a", "a"], dtype=object)
    allowed = ~np.eye(4, dtype=bool)
    assert knn_predictions(d, allowed, labels, 1)[0] == "b"
    assert knn_predictions(d, allowed, labels, 3)[0] == "a"
    # a 1-1 tie goes to the label of the nearer neighbour
    assert knn_predictions(d, allowed, labels, 2)[0] == "b"
    assert knn_predictions(d, np.zeros((4, 4), bool), labels, 3)[0] is None


def direct_average_precision(x, moa, compound, batch, use_batch):
    """AP per query written out: rank the candidates by cosine similarity, precision at each
    positive."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    aps = []
    for i in range(len(x)):
        cand = [
            j
            for j in range(len(x))
            if j != i and compound[j] != compound[i] and (not use_batch or batch[j] != batch[i])
        ]
        pos = [j for j in cand if moa[j] == moa[i]]
        neg = [j for j in cand if moa[j] != moa[i]]
        if not pos or not neg:
            continue
        ranked = sorted(pos + neg, key=lambda j: -sim[i, j])
        hits, precisions = 0, []
        for rank, j in enumerate(ranked, start=1):
            if moa[j] == moa[i]:
                hits += 1
                precisions.append(hits / rank)
        aps.append(np.mean(precisions))
    return float(np.mean(aps))


@pytest.mark.parametrize("use_batch", [False, True])
def test_map_matches_a_direct_computation(use_batch):
    pytest.importorskip("copairs")
    from cellclr.profiling.metrics import mean_average_precision

    rng = np.random.default_rng(1)
    n = 24
    moa = np.array([f"M{i % 3}" for i in range(n)])
    compound = np.array([f"c{i % 3}-{i // 6}" for i in range(n)])  # one MoA per compound
    batch = np.array([f"Week{i % 4}" for i in range(n)])
    x = rng.normal(size=(n, 5)) + (np.arange(n) % 3)[:, None]
    t = pd.DataFrame({"Metadata_Compound": compound, "Metadata_MoA": moa, "Metadata_Batch": batch})
    got = mean_average_precision(t, x, batch=use_batch)
    assert got == pytest.approx(
        direct_average_precision(x, moa, compound, batch, use_batch), rel=1e-6
    )
