from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.profiling.feature_tables import profile_table
from cellclr.profiling.predict import PredictError, predict_moa
from cellclr.store.import_crops import import_crops
from tests.helpers import (
    FEATURES,
    error_of,
    make_crop_files,
    sets,
    tiny_config,
    wells_table,
    write_csv,
)


def profiles(rows):
    meta = pd.DataFrame(
        [r[:3] for r in rows],
        columns=["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"],
    )
    return pd.concat([meta, pd.DataFrame([r[3] for r in rows], columns=["f0", "f1"])], axis=1)


def test_hand_made_prediction():
    a = np.deg2rad
    reference = profiles(
        [
            ("s1", 1.0, "stabilizer", [np.cos(a(0)), np.sin(a(0))]),
            ("s2", 1.0, "stabilizer", [np.cos(a(10)), np.sin(a(10))]),
            ("d1", 1.0, "destabilizer", [np.cos(a(90)), np.sin(a(90))]),
            ("DMSO", 0.0, "DMSO", [np.cos(a(5)), np.sin(a(5))]),  # controls never vote
        ]
    )
    query = profiles(
        [
            ("new", 3.0, None, [np.cos(a(20)), np.sin(a(20))]),
            (
                "s1",
                3.0,
                "stabilizer",
                [np.cos(a(80)), np.sin(a(80))],
            ),  # its own compound is skipped
        ]
    )
    p = predict_moa(reference, query, top=2).set_index("Metadata_Compound")
    assert p.loc["new", "Predicted_MoA"] == "stabilizer"
    assert p.loc["new", "Neighbor1_Compound"] == "s2"
    assert p.loc["new", "Neighbor1_Distance"] == pytest.approx(1 - np.cos(a(10)))
    assert p.loc["new", "Neighbor2_Compound"] == "s1"
    # confidence: best stabilizer similarity (cos 10) minus best destabilizer one (cos 70)
    assert p.loc["new", "Confidence"] == pytest.approx(np.cos(a(10)) - np.cos(a(70)))
    assert p.loc["new", "Second_MoA"] == "destabilizer"
    assert p.loc["s1", "Predicted_MoA"] == "destabilizer"  # s1 itself is not a candidate
    assert p.loc["s1", "Neighbor1_Compound"] == "d1"


def test_mismatched_features():
    reference = profiles([("s1", 1.0, "m", [1, 0])])
    with pytest.raises(PredictError, match=r"do not match .* 1 missing \['f1'\], 0 extra"):
        predict_moa(reference, reference.drop(columns="f1"))


def test_a_query_without_treatments_is_predicted_well_by_well():
    a = np.deg2rad
    reference = profiles(
        [
            ("s1", 1.0, "stabilizer", [np.cos(a(0)), np.sin(a(0))]),
            ("d1", 1.0, "destabilizer", [np.cos(a(90)), np.sin(a(90))]),
        ]
    )
    query = pd.DataFrame(
        {
            "Metadata_Plate": ["P1", "P1"],
            "Metadata_Well": ["A01", "A02"],
            "f0": [np.cos(a(80)), np.cos(a(15))],
            "f1": [np.sin(a(80)), np.sin(a(15))],
        }
    )
    p = predict_moa(reference, query).set_index("Metadata_Well")
    assert p.loc["A01", "Predicted_MoA"] == "destabilizer"
    assert p.loc["A02", "Predicted_MoA"] == "stabilizer"
    assert p.loc["A02", "Neighbor1_Distance"] == pytest.approx(1 - np.cos(a(15)))
    assert "Metadata_Compound" not in p


# ---- issue 18 item 5: query crops of another size than the model learnt from -----------------


def test_query_crops_of_another_size_are_refused(tmp_path, store, capsys):
    def cli(*args):
        return main([str(a) for a in [*args, *sets("train.epochs=1")]])

    run = tmp_path / "run"
    assert cli("run", "--crops", store, "--out", run) == 0  # learnt from 20 px crops
    images, cells = make_crop_files(tmp_path / "big", size=48)
    big = import_crops(images, cells, tmp_path / "big_store", ["DNA", "Tubulin", "Actin"])
    capsys.readouterr()
    query = ["--reference", run / "profiles", "--query-crops", big, "--model", run / "model"]
    assert cli("predict", *query, "--out", tmp_path / "pred") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"cellclr: error: {big}: crops of 48x48 px, but the model {run / 'model'} learnt from "
        "20x20 px crops: both are resized to 16 px, so cells would be seen 2.4x smaller than in "
        "training; crop them with --box 20, or pass --any-crop-size if their pixels are that "
        "much smaller (another magnification)"
    ]
    assert not (tmp_path / "pred").exists() and not (tmp_path / "pred.partial").exists()
    assert cli("embed", "--model", run / "model", "--crops", big, "--out", tmp_path / "e") == 2
    assert "crops of 48x48 px" in capsys.readouterr().err
    # asked for: the crops are resized as before
    assert cli("predict", *query, "--out", tmp_path / "pred", "--any-crop-size") == 0
    assert len(pd.read_parquet(tmp_path / "pred" / "predictions.parquet")) == 6


def test_prediction_does_not_depend_on_the_scale():
    table = wells_table()
    treatments = table.groupby(["Metadata_Compound", "Metadata_Concentration"], as_index=False)
    reference = treatments.agg({"Metadata_MoA": "first", **dict.fromkeys(FEATURES, "median")})
    query = reference[reference["Metadata_MoA"] != "DMSO"]
    query = query.assign(Metadata_Compound=query["Metadata_Compound"] + "-new")
    big = reference.assign(**{f: reference[f] * 1e200 for f in FEATURES})
    plain = predict_moa(reference, query)
    scaled = predict_moa(big, query.assign(**{f: query[f] * 1e200 for f in FEATURES}))
    pd.testing.assert_frame_equal(scaled, plain)
    assert (plain["Predicted_MoA"] == plain["Metadata_MoA"]).all()


def test_predict_a_query_of_controls_only_writes_nothing(runs, capsys):
    table = wells_table()
    path = write_csv(table[table["Metadata_Compound"] == "DMSO"], runs / "dmso.csv")
    out = runs / "out"
    error = error_of(
        capsys, ["predict", "--reference", runs / "R", "--query-features", path, "--out", out]
    )
    assert f"{path}: holds only DMSO control wells (6 rows): nothing to predict" in error
    assert not out.exists() and not (runs / "out.partial").exists()


def test_predict_names_the_features_that_do_not_match(runs, capsys, monkeypatch):
    monkeypatch.chdir(runs)
    other = wells_table().rename(columns={"a": "emb_0000", "b": "emb_0001"})
    profile_table(write_csv(other, runs / "other.csv"), runs / "O", tiny_config())
    error = error_of(capsys, ["predict", "--reference", "R", "--query", "O", "--out", "out"])
    assert "O/wells.parquet: features do not match the reference's: 2 missing ['a', 'b'], " in error
    assert "2 extra ['emb_0000', 'emb_0001']" in error


def test_predict_from_a_reference_without_moa(runs, capsys, monkeypatch):
    monkeypatch.chdir(runs)
    profile_table(
        write_csv(wells_table().drop(columns="Metadata_MoA"), runs / "u.csv"), "U", tiny_config()
    )
    error = error_of(capsys, ["predict", "--reference", "U", "--query", "Q", "--out", "out"])
    assert "U/wells.parquet: no treatment other than DMSO has a Metadata_MoA" in error


def test_predict_from_crops(tmp_path, store, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--reference",
                str(run / "profiles"),
                "--query-crops",
                str(store),
                "--model",
                str(run / "model"),
                "--out",
                str(out),
                "--top",
                "2",
            ]
        )
        == 0
    )
    p = pd.read_parquet(out / "predictions.parquet")
    assert len(p) == 6  # the annotated treatments; DMSO is not a query
    assert {"Predicted_MoA", "Confidence", "Neighbor2_Distance"} <= set(p.columns)
    assert (p["Neighbor1_Compound"] != p["Metadata_Compound"]).all()
    # the same query as profiles gives the same predictions
    assert (
        main(
            [
                "predict",
                "--reference",
                str(run / "profiles"),
                "--query",
                str(run / "profiles"),
                "--out",
                str(tmp_path / "p2"),
            ]
        )
        == 0
    )
    again = pd.read_parquet(tmp_path / "p2" / "predictions.parquet")
    pd.testing.assert_series_equal(again["Predicted_MoA"], p["Predicted_MoA"])

    # with TVN, reference and query are normalised together: crops and profiles agree again
    for name, query in (
        ("t1", ["--query-crops", str(store), "--model", str(run / "model")]),
        ("t2", ["--query", str(run / "profiles")]),
    ):
        assert (
            main(
                [
                    "predict",
                    "--reference",
                    str(run / "profiles"),
                    *query,
                    "--out",
                    str(tmp_path / name),
                    "--set",
                    "profile.postprocess='tvn'",
                ]
            )
            == 0
        )
    t1 = pd.read_parquet(tmp_path / "t1" / "predictions.parquet")
    t2 = pd.read_parquet(tmp_path / "t2" / "predictions.parquet")
    pd.testing.assert_frame_equal(t1, t2, check_exact=False, rtol=1e-5)
    assert (t1["Neighbor1_Compound"] != t1["Metadata_Compound"]).all()
