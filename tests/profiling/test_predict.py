import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.profiling.predict import PredictError, predict_moa
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files
from tests.test_cli import sets


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
