"""Phenotypic activity and consistency (cellclr.profiling.retrieval): against average
precision worked out by hand, and against copairs called directly with the field's settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellclr.profiling.retrieval import (
    NotScored,
    activity,
    batch_retrieval,
    consistency,
    replicate_map,
    same_batch_neighbours,
)

copairs_map = pytest.importorskip("copairs.map")


def wells(features: dict[tuple[str, str, str], list[float]]) -> pd.DataFrame:
    """Well profiles from {(plate, well, compound): features}; concentration 1 (DMSO 0)."""
    rows = [
        {
            "Metadata_Plate": plate,
            "Metadata_Well": well,
            "Metadata_Compound": compound,
            "Metadata_Concentration": 0.0 if compound == "DMSO" else 1.0,
            **{f"f{i}": v for i, v in enumerate(x)},
        }
        for (plate, well, compound), x in features.items()
    ]
    return pd.DataFrame(rows)


def test_activity_by_hand():
    # a's two wells are each other's nearest neighbours (AP 1 for both); b's replicate ranks
    # second for each of its wells, behind one control (AP 1/2); DMSO wells are the controls.
    table = wells(
        {
            ("P1", "A01", "DMSO"): [0.0, 1.0, 0.0],
            ("P2", "A01", "DMSO"): [0.0, 0.0, 1.0],
            ("P1", "B01", "a"): [1.0, 0.0, 0.0],
            ("P2", "B01", "a"): [1.0, 0.05, 0.0],
            ("P1", "C01", "b"): [0.6, 0.8, 0.0],  # cosine 0.8 to a control, 0.36 to b's other
            ("P2", "C01", "b"): [0.6, 0.0, 0.8],
        }
    )
    scores = activity(table, null_size=100, seed=0)
    by = scores.table.set_index("Metadata_Compound")
    assert by.loc["a", "mAP"] == pytest.approx(1.0)
    assert by.loc["b", "mAP"] == pytest.approx(0.5)
    assert list(by["Metadata_Wells"]) == [2, 2]
    assert scores.summary["treatments"] == 2 and scores.summary["controls"] == 2
    assert scores.summary["map"] == pytest.approx(0.75)


def random_screen(seed: int = 0) -> pd.DataFrame:
    """Three plates; DMSO (4 wells a plate) and 6 compounds at 2 doses, one well a plate; the
    first compounds carry a signal, the last none."""
    rng = np.random.default_rng(seed)
    features = {}
    for p in range(3):
        for w in range(4):
            features[(f"P{p}", f"A{w:02d}", "DMSO")] = rng.normal(0, 1, 8)
        for c in range(6):
            signal = np.zeros(8)
            signal[c] = 3.0 if c < 4 else 0.0
            for d, dose in enumerate((1.0, 3.0)):
                key = (f"P{p}", f"B{2 * c + d:02d}", f"cpd{c}")
                features[key] = signal * dose / 2 + rng.normal(0, 1, 8)
    table = wells(features)
    doses = np.where(table["Metadata_Well"].str[1:].astype(int) % 2 == 1, 3.0, 1.0)
    treated = table["Metadata_Compound"] != "DMSO"
    table.loc[treated, "Metadata_Concentration"] = doses[treated.to_numpy()]
    return table


@pytest.mark.parametrize("replicates", ["other_plates", "any_well"])
def test_activity_equals_copairs_called_directly(replicates):
    table = random_screen()
    ours = activity(table, replicates=replicates, null_size=2000, fdr=0.05, seed=3)
    # copairs, as JUMP's activity notebooks call it
    meta = pd.DataFrame(
        {
            "treatment": table["Metadata_Compound"]
            + "@"
            + table["Metadata_Concentration"].map("{:g}".format),
            "plate": table["Metadata_Plate"],
            "control": table["Metadata_Compound"] == "DMSO",
        }
    )
    x = table[[c for c in table if c.startswith("f")]].to_numpy()
    ap = copairs_map.average_precision(
        meta,
        x,
        pos_sameby=["treatment"],
        pos_diffby=["plate"] if replicates == "other_plates" else [],
        neg_sameby=[],
        neg_diffby=["treatment", "control"],
        progress_bar=False,
    )
    ap = ap[~ap["control"]]
    ref = copairs_map.mean_average_precision(
        ap, ["treatment"], null_size=2000, threshold=0.05, seed=3, progress_bar=False
    ).set_index("treatment")
    got = ours.table.assign(
        treatment=ours.table["Metadata_Compound"]
        + "@"
        + ours.table["Metadata_Concentration"].map("{:g}".format)
    ).set_index("treatment")
    assert sorted(got.index) == sorted(ref.index) and len(got) == 12
    np.testing.assert_allclose(got["mAP"], ref.loc[got.index, "mean_average_precision"])
    np.testing.assert_allclose(got["p_value"], ref.loc[got.index, "p_value"])
    np.testing.assert_allclose(got["q_value"], ref.loc[got.index, "corrected_p_value"])
    assert ours.summary["retrieved"] == pytest.approx(ref["below_corrected_p"].mean())
    assert ours.summary["n_retrieved"] == int(ref["below_corrected_p"].sum())
    # the compounds with a signal are retrieved at the higher dose, those without are not
    retrieved = set(got.index[got["retrieved"]])
    assert {"cpd0@3", "cpd1@3", "cpd2@3", "cpd3@3"} <= retrieved
    assert not retrieved & {"cpd4@1", "cpd4@3", "cpd5@1", "cpd5@3"}
    assert replicate_map(table, seed=3, null_size=2000)["map"] == pytest.approx(
        activity(table, null_size=2000, seed=3).summary["map"]
    )


def test_activity_says_why_it_cannot_be_scored():
    table = random_screen()
    with pytest.raises(NotScored, match="no control wells"):
        activity(table, control="PBS")
    one_plate = table[table["Metadata_Plate"] == "P0"]
    with pytest.raises(NotScored, match="no treatment has a replicate well on another plate"):
        activity(one_plate)
    with pytest.raises(NotScored, match="no treatment has two wells"):
        activity(one_plate, replicates="any_well")
    with pytest.raises(NotScored, match="no Metadata_Concentration"):
        activity(table.drop(columns="Metadata_Concentration"))
    assert np.isnan(replicate_map(one_plate)["map"])


def test_one_plate_screens_count_replicates_on_the_same_plate():
    table = random_screen()
    table = pd.concat([table, table.assign(Metadata_Well=table["Metadata_Well"] + "x")])
    one_plate = table[table["Metadata_Plate"] == "P0"]
    scores = activity(one_plate, replicates="any_well", null_size=500)
    assert scores.summary["treatments"] == 12 and scores.summary["replicates"] == "any_well"


def annotated_treatments(seed: int = 0) -> pd.DataFrame:
    """Treatment profiles of 8 compounds at 2 doses; targets T1 (3 compounds, a shared
    signal), T2 (3 compounds, another), T3 (1 compound), and one unannotated."""
    rng = np.random.default_rng(seed)
    targets = {"c0": "T1", "c1": "T1", "c2": "T1", "c3": "T2", "c4": "T2", "c5": "T2"}
    targets |= {"c6": "T3", "c7": None}
    rows = []
    for compound, target in targets.items():
        for dose in (1.0, 3.0):
            x = rng.normal(0, 1, 6)
            if target in ("T1", "T2"):
                x[int(target[1])] += 4.0
            rows.append(
                {
                    "Metadata_Compound": compound,
                    "Metadata_Concentration": dose,
                    "Metadata_Target": target,
                    **{f"f{i}": v for i, v in enumerate(x)},
                }
            )
    return pd.DataFrame(rows)


def test_consistency_equals_copairs_called_directly():
    table = annotated_treatments()
    ours = consistency(table, "Metadata_Target", null_size=2000, seed=1)
    rows = table[table["Metadata_Target"].notna()].reset_index(drop=True)
    meta = rows[["Metadata_Target", "Metadata_Compound"]]
    x = rows[[c for c in rows if c.startswith("f")]].to_numpy()
    ap = copairs_map.average_precision(
        meta,
        x,
        pos_sameby=["Metadata_Target"],
        pos_diffby=["Metadata_Compound"],
        neg_sameby=[],
        neg_diffby=["Metadata_Target", "Metadata_Compound"],
        progress_bar=False,
    )
    ref = copairs_map.mean_average_precision(
        ap.dropna(subset=["average_precision"]),
        ["Metadata_Target"],
        null_size=2000,
        threshold=0.05,
        seed=1,
        progress_bar=False,
    ).set_index("Metadata_Target")
    got = ours.table.set_index("Value")
    assert sorted(got.index) == ["T1", "T2"]  # T3 has one compound, the last no target
    np.testing.assert_allclose(got["mAP"], ref.loc[got.index, "mean_average_precision"])
    np.testing.assert_allclose(got["q_value"], ref.loc[got.index, "corrected_p_value"])
    assert list(got["Treatments"]) == [6, 6]
    assert ours.summary["groups"] == 2 and got["retrieved"].all()
    assert ours.summary["map"] == pytest.approx(got["mAP"].mean())


def test_consistency_says_why_it_cannot_be_scored():
    table = annotated_treatments()
    with pytest.raises(NotScored, match="have no Metadata_Gene"):
        consistency(table, "Metadata_Gene")
    single = table[table["Metadata_Target"].isin(["T3"]) | table["Metadata_Target"].isna()]
    with pytest.raises(NotScored, match="no value of Metadata_Target is shared"):
        consistency(single, "Metadata_Target")


def batched_controls(seed: int = 0) -> pd.DataFrame:
    """Control wells of 3 batches x 2 plates x 3 wells, each batch shifted along its own axis,
    and two treatments."""
    rng = np.random.default_rng(seed)
    features = {}
    for b in range(3):
        for p in range(2):
            for w in range(3):
                x = rng.normal(0, 1, 5)
                x[b] += 1.5
                features[(f"B{b}_{p}", f"A{w:02d}", "DMSO")] = x
    table = wells(features)
    table["Metadata_Batch"] = table["Metadata_Plate"].str.split("_").str[0]
    return table


def test_batch_retrieval_equals_copairs_called_directly():
    table = batched_controls()
    ours = batch_retrieval(table)
    meta = table[["Metadata_Batch"]].assign(row=np.arange(len(table)))
    ap = copairs_map.average_precision(
        meta,
        table[[c for c in table if c.startswith("f")]].to_numpy(),
        pos_sameby=["Metadata_Batch"],
        pos_diffby=["row"],
        neg_sameby=[],
        neg_diffby=["Metadata_Batch"],
        progress_bar=False,
    )
    assert ours["map"] == pytest.approx(ap["average_precision"].mean())
    assert ours["wells"] == 18
    assert ours["chance"] == pytest.approx(5 / 17)  # 5 of a well's 17 others share its batch
    assert ours["map"] > ours["chance"]  # the batches are shifted apart
    with pytest.raises(NotScored, match="one batch"):
        batch_retrieval(table[table["Metadata_Batch"] == "B0"])


def test_same_batch_neighbours_by_direct_count():
    # four compounds; a's nearest other compound is c (same week), b's is d (another week), c's
    # is a (same week), d's is b (another week): 2 of 4 share. The DMSO row is never one.
    x = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.9, 0.1], "d": [0.1, 0.9], "DMSO": [1, 0.01]}
    week = {"a": "W1", "b": "W1,W2", "c": "W1", "d": "W3", "DMSO": "W1"}
    table = pd.DataFrame(
        {
            "Metadata_Compound": list(x),
            "Metadata_Batch": [week[c] for c in x],
            "f0": [v[0] for v in x.values()],
            "f1": [v[1] for v in x.values()],
        }
    )
    got = same_batch_neighbours(table)
    assert got["rate"] == pytest.approx(2 / 4) and got["treatments"] == 4
    # candidates sharing a week: a {b, c} of 3, b {a, c} of 3, c {a, b} of 3, d {} of 3
    assert got["chance"] == pytest.approx((2 + 2 + 2 + 0) / 12)
