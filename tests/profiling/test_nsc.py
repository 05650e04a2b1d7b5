"""NSC/NSCB (cellclr.profiling.nsc) on hand-built treatment tables whose answers are worked out
by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellclr.profiling.nsc import EvaluationError, evaluate_treatments, single_batch_moas


def table(rows):
    """rows: (compound, concentration, moa, batch label, feature vector)"""
    df = pd.DataFrame(
        [r[:4] for r in rows],
        columns=["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", "Metadata_Batch"],
    )
    feats = np.array([r[4] for r in rows], dtype=float)
    return pd.concat([df, pd.DataFrame(feats, columns=["f0", "f1", "f2"])], axis=1)


def deg(angle):  # unit vectors in a plane: cosine distance follows the angle
    a = np.deg2rad(angle)
    return [np.cos(a), np.sin(a), 0.0]


ROWS = [
    # compound, conc, MoA, batch, features
    ("a", 1.0, "M1", "Week1", deg(0)),
    ("a", 3.0, "M1", "Week1", deg(1)),  # same compound as a/1: never its neighbour
    ("b", 1.0, "M1", "Week2", deg(10)),
    ("c", 1.0, "M2", "Week1", deg(5)),  # nearer to a than b is, but another MoA
    ("d", 1.0, "M2", "Week2", deg(60)),
    ("e", 1.0, "M3", "Week3", deg(90)),  # M3 lies in one week: dropped from NSCB
    ("f", 1.0, "M3", "Week3", deg(95)),
    ("DMSO", 0.0, "DMSO", "Week1", deg(2)),  # control: not a treatment, not a neighbour
]


def test_nsc_and_nscb_by_hand():
    result = evaluate_treatments(table(ROWS))
    nsc = result.nsc.set_index(["Metadata_Compound", "Metadata_Concentration"])
    # a1 -> c (5 deg; a3 excluded, DMSO excluded): wrong. a3 -> c (4 deg): wrong.
    # b -> c (5 deg): wrong. c -> a3 (4 deg): wrong. d -> e (30 deg): wrong.
    # e -> f: right. f -> e: right.
    expected_nsc = {
        ("a", 1.0): "c",
        ("a", 3.0): "c",
        ("b", 1.0): "c",
        ("c", 1.0): "a",
        ("d", 1.0): "e",
        ("e", 1.0): "f",
        ("f", 1.0): "e",
    }
    assert nsc["Neighbor_Compound"].to_dict() == expected_nsc
    nsc_score = {k: result.metrics["nsc"][k] for k in ("correct", "total", "accuracy")}
    assert nsc_score == {"correct": 2, "total": 7, "accuracy": 2 / 7}

    # NSCB drops M3 (single week); neighbours need another compound and another batch label:
    # a1 (Week1) -> b (Week2, 10 deg) right; a3 -> b right; b (Week2) -> c (Week1, 5 deg) wrong;
    # c (Week1) -> b (5 deg) wrong; d (Week2) -> c (Week1, 55 deg; e is dropped) right.
    nscb = result.nscb.set_index(["Metadata_Compound", "Metadata_Concentration"])
    assert nscb["Neighbor_Compound"].to_dict() == {
        ("a", 1.0): "b",
        ("a", 3.0): "b",
        ("b", 1.0): "c",
        ("c", 1.0): "b",
        ("d", 1.0): "c",
    }
    assert nscb["Correct"].tolist() == [True, True, False, False, True]
    assert result.metrics["nscb"]["correct"] == 3 and result.metrics["nscb"]["total"] == 5
    assert result.metrics["nscb_dropped_moas"] == ["M3"]
    assert result.metrics["drop_pct"] == pytest.approx(100 * (2 / 7 - 3 / 5), abs=1e-3)
    assert result.metrics["excluded"] == {"control": 1, "unannotated": 0}


def test_batch_label_rule_compares_strings():
    # A multi-week treatment (label "Week1,Week2") may match a Week1 treatment: the labels
    # differ as strings, as in the reference code.
    rows = [
        ("taxol", 0.3, "MS", "Week1,Week2", deg(0)),
        ("x", 1.0, "MS", "Week1", deg(3)),
        ("y", 1.0, "MD", "Week1", deg(1)),  # nearest to taxol overall, but same label as x
        ("z", 1.0, "MD", "Week2", deg(40)),
    ]
    nscb = evaluate_treatments(table(rows)).nscb.set_index("Metadata_Compound")
    assert nscb.loc["taxol", "Neighbor_Compound"] == "y"  # "Week1" != "Week1,Week2"
    assert nscb.loc["x", "Neighbor_Compound"] == "taxol"  # y shares the label "Week1"
    assert bool(nscb.loc["x", "Correct"])


def test_single_batch_moas_of_bbbc021():
    rows = [
        ("c1", 1.0, "Cholesterol-lowering", "Week6", deg(0)),
        ("c2", 1.0, "Cholesterol-lowering", "Week6", deg(1)),
        ("k1", 1.0, "Kinase inhibitors", "Week5", deg(2)),
        ("k2", 1.0, "Kinase inhibitors", "Week5", deg(3)),
        ("t1", 1.0, "Microtubule stabilizers", "Week1,Week2", deg(4)),
        ("t2", 1.0, "Microtubule stabilizers", "Week1", deg(5)),
    ]
    assert single_batch_moas(table(rows)) == ["Cholesterol-lowering", "Kinase inhibitors"]


def test_unannotated_treatments_are_excluded_and_counted():
    rows = [*ROWS, ("new", 1.0, None, "Week1", deg(0.5))]
    result = evaluate_treatments(table(rows))
    assert result.metrics["excluded"]["unannotated"] == 1
    assert result.metrics["nsc"]["total"] == 7
    assert "new" not in set(result.nsc["Neighbor_Compound"])


def test_bad_tables():
    with pytest.raises(EvaluationError, match="treatment profiles: lacks columns"):
        evaluate_treatments(table(ROWS).drop(columns="Metadata_Batch"))
    nan = table(ROWS)
    nan.loc[2, "f1"] = np.nan
    with pytest.raises(EvaluationError, match="NaN"):
        evaluate_treatments(nan)


def test_one_batch_only_gives_an_empty_nscb_not_a_crash(tmp_path):
    from cellclr.outputs import write_json

    rows = [
        (c, 1.0, m, "Week1", deg(a))
        for c, m, a in [("a", "M1", 0), ("b", "M1", 5), ("c", "M2", 60), ("d", "M2", 65)]
    ]
    result = evaluate_treatments(table(rows))
    assert result.metrics["nsc"]["correct"] == 4
    assert result.metrics["nscb"]["total"] == 0 and "nscb_note" in result.metrics
    write_json(result.metrics, tmp_path / "m.json")  # strict JSON: NaN is written as null
    import json

    assert json.loads((tmp_path / "m.json").read_text())["nscb"]["accuracy"] is None
