"""The evaluate stage (cellclr.profiling.evaluate): every post-processing variant of the wells,
phenotypic activity and consistency beside NSC/NSCB, and the feature tables of other tools."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.profiling.feature_tables import profile_table
from cellclr.profiling.nsc import evaluate_treatments
from tests.helpers import (
    FAST,
    FEATURES,
    copairs_replicate_ap,
    error_of,
    metrics,
    tiny_config,
    wells_table,
    write_csv,
)

# ---- beyond the paper: variants, activity, consistency ----------------------------------------


def two_plate_wells():
    """Two plates (weeks), DMSO and 3 MoAs x 2 compounds, 2 wells each per plate."""
    rng = np.random.default_rng(0)
    rows, feats = [], []
    centres = {"M1": [3, 0, 0, 0], "M2": [0, 3, 0, 0], "M3": [0, 0, 3, 0], "DMSO": [0, 0, 0, 0]}
    treatments = [("DMSO", 0.0, "DMSO")] + [
        (f"{m}-c{j}", 1.0, m) for m in ("M1", "M2", "M3") for j in (1, 2)
    ]
    for p, week in enumerate(("Week1", "Week2")):
        for w, (compound, conc, moa) in enumerate(treatments):
            for rep in range(2):
                rows.append(
                    {
                        "Metadata_Plate": f"{week}_{p}",
                        "Metadata_Well": f"W{w}{rep}",
                        "Metadata_Compound": compound,
                        "Metadata_Concentration": conc,
                        "Metadata_MoA": moa,
                        "Metadata_Batch": week,
                    }
                )
                shift = np.array([0.5 * p, -0.5 * p, 0.2, 1.0])  # a batch effect
                feats.append(np.array(centres[moa], float) + shift + rng.normal(0, 0.3, 4))
    return pd.concat([pd.DataFrame(rows), pd.DataFrame(feats, columns=list("abcd"))], axis=1)


def test_variants_extras_and_headline():
    from cellclr.config import EvaluateConfig
    from cellclr.profiling.evaluate import combine, evaluate_wells
    from cellclr.profiling.profiles import treatment_profiles

    wells = two_plate_wells()
    e = EvaluateConfig(bootstrap=200, knn=[3])
    results = evaluate_wells(wells, e)
    assert list(results) == ["none", "dmso", "tvn"]
    plain = evaluate_treatments(treatment_profiles(wells))
    assert results["none"].metrics["nsc"]["correct"] == plain.metrics["nsc"]["correct"]
    m = combine(results).metrics
    assert m["variant"] == "none" and m["nsc"] == results["none"].metrics["nsc"]
    for v in ("none", "dmso", "tvn"):
        s = m["variants"][v]["nsc"]
        assert s["ci95"][0] <= s["accuracy"] <= s["ci95"][1]
        assert set(s["knn"]) == {"3"} and sum(x["total"] for x in s["per_moa"].values()) == 6
    tables = combine(results).nsc
    assert sorted(tables["Variant"].unique()) == ["dmso", "none", "tvn"]


def test_constant_and_nan_features_are_dropped_and_reported():
    from cellclr.config import EvaluateConfig
    from cellclr.profiling.evaluate import evaluate_wells

    wells = two_plate_wells().assign(const=1.0, holey=np.nan)
    results = evaluate_wells(wells, EvaluateConfig(bootstrap=0, knn=[], map=False))
    dropped = results["none"].metrics["dropped_features"]
    assert dropped["constant"] == ["const"] and dropped["nonfinite"] == ["holey"]


def test_tvn_without_controls_is_an_error_or_a_recorded_skip():
    from cellclr.config import EvaluateConfig
    from cellclr.errors import CellclrError
    from cellclr.profiling.evaluate import combine, evaluate_wells

    wells = two_plate_wells()
    wells = wells[wells["Metadata_Compound"] != "DMSO"]
    with pytest.raises(CellclrError, match="DMSO"):  # the headline variant must work
        evaluate_wells(wells, EvaluateConfig(variants=["tvn", "none"]))
    metrics = combine(evaluate_wells(wells, EvaluateConfig(variants=["none", "tvn"]))).metrics
    assert list(metrics["variants"]) == ["none"]
    assert "no control wells" in metrics["skipped_variants"]["tvn"]


def real_cell_features(folder) -> pd.DataFrame:
    """Per-cell intensity features of the real BBBC021 crops, named as CellProfiler names
    them, with the cells' metadata."""
    images = np.load(folder / "crops.npz")["images"].astype(np.float32)
    cells = pd.read_csv(folder / "cells.csv")
    features = {}
    for c, name in enumerate(["DNA", "Tubulin", "Actin"]):
        pixels = images[:, c].reshape(len(images), -1)
        features[f"Cells_Intensity_MeanIntensity_{name}"] = pixels.mean(axis=1)
        features[f"Cells_Intensity_StdIntensity_{name}"] = pixels.std(axis=1)
        features[f"Cells_Intensity_MaxIntensity_{name}"] = pixels.max(axis=1)
    meta = cells[[c for c in cells if c.startswith("Metadata_")]]
    return pd.concat([meta, pd.DataFrame(features)], axis=1)


def key(table: pd.DataFrame) -> pd.Series:
    return table["Metadata_Compound"] + "@" + table["Metadata_Concentration"].map("{:g}".format)


@pytest.mark.parametrize("level", ["cells", "wells"])
def test_activity_beside_nsc_on_the_real_crops_equals_copairs(shared_singlecell, tmp_path, level):
    """`evaluate --features` on a per-cell table, and on a CellProfiler per-well table
    (pycytominer's aggregate: the mean of each well), of the real crops: NSC/NSCB and the
    phenotypic activity side by side, the activity as copairs computes it when called
    directly on the well means."""
    from copairs.map import mean_average_precision

    from cellclr.cli import main

    cells = real_cell_features(shared_singlecell)
    features = [c for c in cells if not c.startswith("Metadata_")]
    keys = ["Metadata_Plate", "Metadata_Well"]
    wells = (
        cells.groupby(keys, as_index=False)
        .agg(
            {
                **{c: "first" for c in cells if c.startswith("Metadata_") and c not in keys},
                **dict.fromkeys(features, "mean"),
            }
        )
        .drop(columns=["Metadata_Site", "Metadata_CellIndex", "Metadata_FileName_DAPI"])
    )
    table = tmp_path / f"{level}.parquet"
    (cells if level == "cells" else wells.assign(ImageNumber=1)).to_parquet(table)
    out = tmp_path / "eval"
    args = ["evaluate", "--features", str(table), "--out", str(out), "--set", "evaluate.seed=7"]
    assert main([*args, "--set", "evaluate.variants=['none']"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == 103 and metrics["nscb"]["total"] == 92
    ours = pd.read_parquet(out / "activity.parquet")

    ap = copairs_replicate_ap(wells, features)
    ref = mean_average_precision(
        ap, ["treatment"], null_size=10000, threshold=0.05, seed=7, progress_bar=False
    ).set_index("treatment")
    got = ours.assign(
        treatment=ours["Metadata_Compound"]
        + "@"
        + ours["Metadata_Concentration"].map("{:g}".format)
    ).set_index("treatment")
    assert sorted(got.index) == sorted(ref.index) and len(got) > 50
    np.testing.assert_allclose(got["mAP"], ref.loc[got.index, "mean_average_precision"])
    np.testing.assert_allclose(got["p_value"], ref.loc[got.index, "p_value"])
    np.testing.assert_allclose(got["q_value"], ref.loc[got.index, "corrected_p_value"])
    assert metrics["activity"]["retrieved"] == pytest.approx(ref["below_corrected_p"].mean())
    assert metrics["activity"]["map"] == pytest.approx(ref["mean_average_precision"].mean())


@pytest.mark.parametrize("active_only", [False, True])
def test_consistency_by_an_annotation_column(active_only):
    from cellclr.config import EvaluateConfig
    from cellclr.profiling.evaluate import combine, evaluate_wells
    from cellclr.profiling.profiles import treatment_profiles
    from cellclr.profiling.retrieval import activity, consistency

    wells = two_plate_wells()
    e = EvaluateConfig(
        variants=["none"],
        consistency_by=["Metadata_MoA", "Metadata_Target"],
        consistency_active=active_only,
        null_size=500,
    )
    result = combine(evaluate_wells(wells, e))
    treatments = treatment_profiles(wells)
    rows = treatments[treatments["Metadata_Compound"] != "DMSO"]
    if active_only:
        table = activity(wells, null_size=500).table
        active = table.loc[table["retrieved"], "Metadata_Compound"]
        rows = rows[rows["Metadata_Compound"].isin(active)]
    expected = consistency(rows, "Metadata_MoA", null_size=500)
    got = result.metrics["consistency"]["Metadata_MoA"]
    assert got["map"] == pytest.approx(expected.summary["map"])
    assert got["groups"] == expected.summary["groups"] == 3
    pd.testing.assert_frame_equal(
        result.consistency.drop(columns="Variant"), expected.table, check_dtype=False
    )
    assert "have no Metadata_Target" in result.metrics["skipped"]["consistency:Metadata_Target"]


# ---- issue 18: --moa replaces the labels of a `profile` output -------------------------------


def test_evaluate_profiles_with_moa_uses_its_labels(tmp_path, capsys):
    table = wells_table()
    profile_table(write_csv(table, tmp_path / "t.csv"), tmp_path / "R", tiny_config())
    moa = table[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]].drop_duplicates()
    moa = moa.set_axis(["compound", "concentration", "moa"], axis=1)
    # M1 relabelled M2 and M2 relabelled M1: the same grouping; M3 split in two MoAs by week
    moa["moa"] = moa["moa"].replace({"M1": "M2", "M2": "M1"})
    moa.loc[moa["compound"] == "M3-c0", "moa"] = "M4"
    write_csv(moa, tmp_path / "moa.csv")
    args = ["evaluate", "--profiles", tmp_path / "R", "--set", "evaluate.bootstrap=0"]
    assert main([str(a) for a in [*args, "--out", tmp_path / "own"]]) == 0
    capsys.readouterr()
    assert (
        main([str(a) for a in [*args, "--moa", tmp_path / "moa.csv", "--out", tmp_path / "new"]])
        == 0
    )
    assert "its Metadata_MoA column is replaced by the MoAs of" in capsys.readouterr().err
    own, new = metrics(tmp_path / "own"), metrics(tmp_path / "new")
    assert own["n_moas"] == 3 and new["n_moas"] == 4
    nsc = pd.read_parquet(tmp_path / "new" / "nsc.parquet")
    none = nsc[nsc["Variant"] == "none"]
    by_compound = none.groupby("Metadata_Compound")["Metadata_MoA"].agg(set)
    assert by_compound["M1-c0"] == {"M2"} and by_compound["M3-c0"] == {"M4"}
    # M3-c0 (M4) has no other compound of its MoA: never correct
    assert not nsc[nsc["Metadata_Compound"] == "M3-c0"]["Correct"].any()
    assert new["nsc"]["correct"] < own["nsc"]["correct"]
    error = error_of(capsys, [*args, "--moa", tmp_path / "none.csv", "--out", tmp_path / "x"])
    assert f"MoA table not found: {tmp_path / 'none.csv'}" in error
    assert not (tmp_path / "x").exists()


def test_huge_feature_values_give_the_same_evaluation(tmp_path):
    table = wells_table()
    write_csv(table, tmp_path / "t.csv")
    table[FEATURES] = table[FEATURES] * 1e200  # squares overflow float64
    write_csv(table, tmp_path / "big.csv")
    for name, out in (("t.csv", "e1"), ("big.csv", "e2")):
        args = ["evaluate", "--features", str(tmp_path / name), "--out", str(tmp_path / out)]
        assert main([*args, *FAST]) == 0
    plain, big = metrics(tmp_path / "e1"), metrics(tmp_path / "e2")
    assert big["skipped_variants"] == {} and big["variants"]["tvn"]["nsc"]["total"] == 12
    for variant in ("none", "dmso"):  # TVN is not scale-free: its lambda is lost beside 1e200
        for task in ("nsc", "nscb"):
            got, want = big["variants"][variant][task], plain["variants"][variant][task]
            assert got["correct"] == want["correct"] and got["total"] == want["total"] == 12
            assert got.get("map") == pytest.approx(want.get("map"))
    assert plain["nsc"]["correct"] == 12


def test_nan_feature_columns_of_a_well_table_are_dropped_and_listed(tmp_path):
    table = wells_table()
    write_csv(table.drop(columns="b"), tmp_path / "without_b.csv")
    table.loc[[1, 7], "b"] = np.nan
    path = write_csv(table, tmp_path / "t.csv")
    for name, out in ((path, "e"), (tmp_path / "without_b.csv", "e_ref")):
        assert main(["evaluate", "--features", str(name), "--out", str(tmp_path / out), *FAST]) == 0
    got, want = metrics(tmp_path / "e"), metrics(tmp_path / "e_ref")
    assert got["dropped_features"] == {"nonfinite": ["b"], "constant": []}
    assert got["variants"] == want["variants"]


def test_what_cannot_be_scored_is_skipped_with_its_reason(tmp_path, capsys):
    table = wells_table()
    cases = {
        "one.csv": (
            table[table["Metadata_Compound"].isin(["DMSO", "M1-c0"])],
            "at least two compounds, found 1 in 2 treatments",
        ),
        "unannotated.csv": (table.drop(columns="Metadata_MoA"), "no MoA annotation (Metadata_MoA"),
    }
    for name, (table, problem) in cases.items():
        path = write_csv(table, tmp_path / name)
        out = tmp_path / name.replace(".csv", "")
        assert main(["evaluate", "--features", str(path), "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert problem in metrics["skipped"]["nsc"] and "nsc" not in metrics
        assert problem in capsys.readouterr().out.split("skipped nsc: ")[1]
        assert not (out / "nsc.parquet").exists() and (out / "results.parquet").is_file()


def test_the_control_wells_batch_measure_only_without_post_processing():
    """DMSO and TVN are fitted on the control wells (centred per plate, a plate's lone control
    well becomes zeros), so the control wells' same-batch mAP is scored on the raw profiles and
    skipped, with the reason, on the variants fitted on them."""
    from cellclr.profiling.evaluate import evaluate_wells
    from cellclr.profiling.retrieval import batch_retrieval

    rng = np.random.default_rng(0)
    rows = []
    for batch in ("Week1", "Week2"):
        for plate in (1, 2):
            for w, (compound, conc) in enumerate(
                [("DMSO", 0.0), ("DMSO", 0.0), ("DMSO", 0.0), ("a", 1.0), ("b", 1.0)]
            ):
                rows.append((f"{batch}_{plate}", f"B{w:02d}", compound, conc, batch, "M"))
    columns = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound",
               "Metadata_Concentration", "Metadata_Batch", "Metadata_MoA"]  # fmt: skip
    wells = pd.DataFrame(rows, columns=columns)
    shift = (wells["Metadata_Batch"] == "Week2").to_numpy()[:, None]
    features = pd.DataFrame(rng.normal(size=(len(wells), 5)) + shift).add_prefix("f")
    wells = pd.concat([wells, features], axis=1)
    cfg = tiny_config("evaluate.variants=['none', 'dmso', 'tvn']")
    results = evaluate_wells(wells, cfg.evaluate)
    assert results["none"].metrics["batch_retrieval_map"] == batch_retrieval(wells)
    for variant in ("dmso", "tvn"):
        m = results[variant].metrics
        assert "batch_retrieval_map" not in m
        assert "fitted on the control wells" in m["skipped"]["batch_retrieval_map"]
        assert "same_batch_neighbours" in m  # the treatments still say it
