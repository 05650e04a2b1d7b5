"""Bad inputs to profile, evaluate and predict (issue #9): one clear error naming the file and
the problem, nothing silently dropped or converted, inputs never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.outputs import write_manifest
from cellclr.profiling.feature_tables import profile_table
from cellclr.profiling.postprocess import standardize_to_controls, tvn
from cellclr.profiling.predict import predict_moa
from tests.helpers import tiny_config

FEATURES = ["a", "b", "c", "d"]
FAST = ["--set", "evaluate.bootstrap=0"]


def wells_table(seed: int = 0) -> pd.DataFrame:
    """Per-well profiles of two weeks: DMSO and three MoAs, one compound per MoA and week at two
    doses, three wells each; the MoAs point along different features."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    centres = {"M1": [3, 0, 0, 0], "M2": [0, 3, 0, 0], "M3": [0, 0, 3, 0], "DMSO": [0, 0, 0, 0]}
    for p, week in enumerate(("Week1", "Week2")):
        treatments = [("DMSO", 0.0, "DMSO")] + [
            (f"{m}-c{p}", dose, m) for dose in (1.0, 3.0) for m in ("M1", "M2", "M3")
        ]
        for w, (compound, dose, moa) in enumerate(treatments):
            for rep in range(3):
                rows.append((f"{week}_{p}", f"W{w}{rep}", compound, dose, moa, week))
                shift = [0.5 * p, -0.5 * p, 0.2, 1.0]  # a batch effect
                feats.append(np.add(centres[moa], shift) + rng.normal(0, 0.8, 4))
    meta = pd.DataFrame(
        rows,
        columns=[
            "Metadata_Plate",
            "Metadata_Well",
            "Metadata_Compound",
            "Metadata_Concentration",
            "Metadata_MoA",
            "Metadata_Batch",
        ],
    )
    return pd.concat([meta, pd.DataFrame(feats, columns=FEATURES)], axis=1)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_of(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run the CLI, which must fail with exit code 2 and one error line; return that line."""
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellclr: error: "), err
    return err[0]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """tmp_path with t.csv (wells), moa.csv, R and Q (profile outputs), E (an embed output)."""
    table = wells_table()
    write_csv(table, tmp_path / "t.csv")
    moa = table[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]]
    moa = moa.drop_duplicates().set_axis(["compound", "concentration", "moa"], axis=1)
    write_csv(moa, tmp_path / "moa.csv")
    cfg = tiny_config()
    profile_table(tmp_path / "t.csv", tmp_path / "R", cfg)
    profile_table(write_csv(wells_table(1), tmp_path / "q.csv"), tmp_path / "Q", cfg)
    (tmp_path / "E").mkdir()
    table.to_parquet(tmp_path / "E" / "embeddings.parquet", index=False)
    write_manifest(tmp_path / "E", "embed", "0")
    return tmp_path


# ---- item 2: an output never overwrites an input ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "overlapped"),
    [
        (["evaluate", "--profiles", "R", "--out", "R"], "R"),
        (["evaluate", "--features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["evaluate", "--features", "t.csv", "--moa", "moa.csv", "--out", "moa.csv"], "moa.csv"),
        (["profile", "--features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["profile", "--features", "t.csv", "--out", "t.csv"], "t.csv"),
        (["profile", "--embeddings", "E", "--out", "E/sub"], "E"),
        (["predict", "--reference", "R", "--query", "Q", "--out", "Q/x"], "Q"),
        (["predict", "--reference", "R", "--query", "Q", "--out", "R"], "R"),
        (["predict", "--reference", "R", "--query-features", "D/t.csv", "--out", "D"], "D/t.csv"),
        (["predict", "--reference", "R", "--query-crops", "E", "--model", "Q", "--out", "Q"], "Q"),
    ],
)
def test_output_over_an_input_is_refused_and_the_inputs_kept(
    runs, capsys, monkeypatch, args, overlapped
):
    monkeypatch.chdir(runs)
    write_csv(wells_table(), runs / "D" / "t.csv")
    (runs / "D" / "stage.json").write_text("{}")  # looks like an output: --overwrite may replace
    before = snapshot(runs)
    error = error_of(capsys, [*args, "--overwrite"])
    assert f"overlaps the input {overlapped}" in error
    assert snapshot(runs) == before


# ---- item 6: overflow-safe numbers; required metadata filled ---------------------------------


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


def test_dmso_standardisation_does_not_depend_on_the_scale():
    wells = wells_table()
    big = wells.assign(**{f: wells[f] * 1e200 for f in FEATURES})
    out, _ = standardize_to_controls(wells)
    out_big, _ = standardize_to_controls(big)
    np.testing.assert_allclose(out_big[FEATURES], out[FEATURES], rtol=1e-10)


def test_tvn_of_huge_values_whitens_the_controls():
    wells = wells_table()
    wells["Metadata_Batch"] = "Week1"  # one batch: CORAL is the identity
    wells[FEATURES] = wells[FEATURES] * 1e200
    out, _ = tvn(wells)
    controls = out.loc[wells["Metadata_Compound"] == "DMSO", [f"tvn_{i}" for i in range(1, 5)]]
    np.testing.assert_allclose(controls.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(np.cov(controls, rowvar=False), np.eye(4), atol=1e-12)


def test_tvn_of_huge_values_with_a_singular_covariance_is_a_clear_error():
    wells = wells_table()
    wells[FEATURES] = wells[FEATURES] * 1e200
    wells["e"] = wells["a"] * 2  # the DMSO covariance is singular
    with pytest.raises(CellclrError, match=r"lambda = 1\.0 vanishes beside feature values up to"):
        tvn(wells)


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


@pytest.mark.parametrize(
    "column",
    [
        "Metadata_Batch",
        "Metadata_Concentration",
        "Metadata_Well",
        "Metadata_Plate",
        "Metadata_Compound",
    ],
)
@pytest.mark.parametrize("verb", ["evaluate", "profile"])
def test_empty_required_metadata_in_a_feature_table(tmp_path, capsys, verb, column):
    table = wells_table()
    table.loc[[4, 9, 11], column] = None
    path = write_csv(table, tmp_path / "t.csv")
    error = error_of(capsys, [verb, "--features", path, "--out", tmp_path / "out"])
    assert f"{path}: column {column} is empty in 3 rows (first: [4, 9, 11])" in error
    assert not (tmp_path / "out").exists()


# ---- item 10: unreadable inputs are one clear error ------------------------------------------

UNREADABLE = {
    "empty.csv": (b"", "is an empty file"),
    "ragged.csv": (b"Metadata_Plate,Metadata_Well,a\nP,A01,1\nP,A02,1,2,3\n", "not a well-formed"),
    "latin1.csv": ("Metadata_Compound\ncaf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
    "binary.csv": (bytes(range(256)) * 8, "not a well-formed CSV"),
    "corrupt.parquet": (b"PAR1" + b"\x00garbage" * 40, "cannot read"),
}


@pytest.mark.parametrize("name", UNREADABLE)
@pytest.mark.parametrize("flag", ["evaluate", "profile", "predict", "moa"])
def test_unreadable_tables(runs, capsys, flag, name):
    content, problem = UNREADABLE[name]
    bad = runs / name
    bad.write_bytes(content)
    out = runs / "out"
    args = {
        "evaluate": ["evaluate", "--features", bad, "--out", out],
        "profile": ["profile", "--features", bad, "--out", out],
        "predict": ["predict", "--reference", runs / "R", "--query-features", bad, "--out", out],
        "moa": ["evaluate", "--features", runs / "t.csv", "--moa", bad, "--out", out],
    }[flag]
    error = error_of(capsys, args)
    assert str(bad) in error and problem in error
    assert not out.exists()


def test_concentration_with_a_unit(tmp_path, capsys):
    table = wells_table()
    table["Metadata_Concentration"] = table["Metadata_Concentration"].astype(str) + " uM"
    path = write_csv(table, tmp_path / "t.csv")
    error = error_of(capsys, ["evaluate", "--features", path, "--out", tmp_path / "out"])
    assert f"{path}: Metadata_Concentration must be a number, got '0.0 uM' in row 0" in error
    moa = pd.DataFrame({"compound": ["x"], "concentration": ["0.3 uM"], "moa": ["M1"]})
    moa_path = write_csv(moa, tmp_path / "moa.csv")
    args = [
        "evaluate",
        "--features",
        tmp_path / "t.csv",
        "--moa",
        moa_path,
        "--out",
        tmp_path / "o",
    ]
    write_csv(wells_table(), tmp_path / "t.csv")
    error = error_of(capsys, args)
    assert f"{moa_path}: concentration must be a number, got '0.3 uM' in row 0" in error


def test_predict_a_query_of_controls_only_writes_nothing(runs, capsys):
    table = wells_table()
    path = write_csv(table[table["Metadata_Compound"] == "DMSO"], runs / "dmso.csv")
    out = runs / "out"
    error = error_of(
        capsys, ["predict", "--reference", runs / "R", "--query-features", path, "--out", out]
    )
    assert f"{path}: holds only DMSO control wells (6 rows): nothing to predict" in error
    assert not out.exists() and not (runs / "out.partial").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
@pytest.mark.parametrize(
    ("folder", "name", "stage", "verb"),
    [
        ("R", "wells.parquet", "profile", ["evaluate", "--profiles", "R"]),
        ("R", "wells.parquet", "profile", ["predict", "--reference", "R", "--query", "Q"]),
        ("Q", "wells.parquet", "profile", ["predict", "--reference", "R", "--query", "Q"]),
        ("E", "embeddings.parquet", "embed", ["profile", "--embeddings", "E"]),
    ],
)
def test_unfinished_input_folders(runs, capsys, monkeypatch, damage, folder, name, stage, verb):
    monkeypatch.chdir(runs)
    target = runs / folder / name
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:100])
    error = error_of(capsys, [*verb, "--out", "out"])
    assert f"{folder} is not a finished `{stage}` output: " in error
    assert (f"missing {name}" if damage == "missing" else f"cannot read the {name}: ") in error
    assert not (runs / "out").exists()


def test_load_profiles_of_a_folder_that_is_not_one(tmp_path):
    from cellclr.profiling.profiles import read_profiles

    with pytest.raises(CellclrError, match="is not a finished `profile` output: no such folder"):
        read_profiles(tmp_path / "nothing")


# ---- item 11: names kept, NaN columns dropped and listed, mismatches named -------------------


def test_a_compound_named_NA_is_a_treatment(tmp_path):
    table = wells_table()
    table["Metadata_Compound"] = table["Metadata_Compound"].replace("M1-c0", "NA")
    path = write_csv(table, tmp_path / "t.csv")
    assert main(["evaluate", "--features", str(path), "--out", str(tmp_path / "e"), *FAST]) == 0
    nsc = pd.read_parquet(tmp_path / "e" / "nsc.parquet")
    assert (nsc.loc[nsc["Variant"] == "none", "Metadata_Compound"] == "NA").sum() == 2
    assert metrics(tmp_path / "e")["nsc"]["total"] == 12


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


def test_nan_cells_drop_the_column_not_the_cells(tmp_path):
    cells = pd.concat([wells_table()] * 2, ignore_index=True)  # every well has two cells
    cells.loc[5, "c"] = np.nan
    path = write_csv(cells, tmp_path / "cells.csv")
    assert main(["profile", "--features", str(path), "--out", str(tmp_path / "p")]) == 0
    wells = pd.read_parquet(tmp_path / "p" / "wells.parquet")
    assert [c for c in wells if not c.startswith("Metadata_")] == ["a", "b", "d"]
    manifest = json.loads((tmp_path / "p" / "stage.json").read_text())
    assert manifest["dropped_features"] == {"nonfinite": ["c"]}
    assert main(["evaluate", "--features", str(path), "--out", str(tmp_path / "e"), *FAST]) == 0
    assert metrics(tmp_path / "e")["dropped_features"]["nonfinite"] == ["c"]


def test_predict_names_the_features_that_do_not_match(runs, capsys, monkeypatch):
    monkeypatch.chdir(runs)
    other = wells_table().rename(columns={"a": "emb_0000", "b": "emb_0001"})
    profile_table(write_csv(other, runs / "other.csv"), runs / "O", tiny_config())
    error = error_of(capsys, ["predict", "--reference", "R", "--query", "O", "--out", "out"])
    assert "O/wells.parquet: features do not match the reference's: 2 missing ['a', 'b'], " in error
    assert "2 extra ['emb_0000', 'emb_0001']" in error


# ---- other bad tables ------------------------------------------------------------------------


def test_tables_without_enough_to_evaluate(tmp_path, capsys):
    table = wells_table()
    cases = {
        "header.csv": (table.iloc[:0], "holds no rows"),
        "text.csv": (table.assign(e="x"), "non-numeric columns ['e']"),
        "emptywell.csv": (
            table.assign(**{f: table[f].where(table.index != 3) for f in FEATURES}),
            "1 rows have no finite feature at all (empty wells?): Week1_0 W10",
        ),
    }
    for name, (bad, problem) in cases.items():
        path = write_csv(bad, tmp_path / name)
        error = error_of(capsys, ["evaluate", "--features", path, "--out", tmp_path / "out"])
        assert f"{path}: " in error and problem in error, error


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


def test_numeric_names_are_names(tmp_path):
    table = wells_table()
    table["Metadata_Plate"] = table["Metadata_Plate"].str[-1].astype(int)  # plates 0 and 1
    table["Metadata_Batch"] = table["Metadata_Plate"]
    path = tmp_path / "t.parquet"
    table.to_parquet(path, index=False)
    assert main(["profile", "--features", str(path), "--out", str(tmp_path / "p")]) == 0
    treatments = pd.read_parquet(tmp_path / "p" / "treatments.parquet")
    assert set(treatments["Metadata_Batch"]) == {"0", "1", "0,1"}  # DMSO is on both plates


def test_a_moa_that_differs_within_a_treatment_names_the_table(tmp_path, capsys):
    table = wells_table()
    table.loc[4, "Metadata_MoA"] = "M9"
    path = write_csv(table, tmp_path / "t.csv")
    error = error_of(capsys, ["evaluate", "--features", path, "--out", tmp_path / "out"])
    assert f"{path}: Metadata_MoA differs within 1 treatments, e.g. (" in error


def test_predict_from_a_reference_without_moa(runs, capsys, monkeypatch):
    monkeypatch.chdir(runs)
    profile_table(
        write_csv(wells_table().drop(columns="Metadata_MoA"), runs / "u.csv"), "U", tiny_config()
    )
    error = error_of(capsys, ["predict", "--reference", "U", "--query", "Q", "--out", "out"])
    assert "U/wells.parquet: no treatment other than DMSO has a Metadata_MoA" in error


def test_tvn_that_overflows_is_a_clear_error(monkeypatch):
    import cellclr.profiling.postprocess as postprocess

    def overflowing(xw, *args):
        return np.full_like(xw, np.inf), []

    monkeypatch.setattr(postprocess, "_coral", overflowing)
    with pytest.raises(CellclrError, match="TVN overflowed: feature values up to"):
        tvn(wells_table())
