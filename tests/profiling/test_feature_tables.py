"""Feature tables of other tools (``evaluate --features``, ``profile --features``) and the MoA
tables joined to them (issue 18: concentrations, repeated MoA rows)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from tests.helpers import error_of, metrics, sets, wells_table, write_csv

FAST = ["--set", "evaluate.bootstrap=0"]


def moa_table(table: pd.DataFrame) -> pd.DataFrame:
    moa = table[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]].drop_duplicates()
    return moa.set_axis(["compound", "concentration", "moa"], axis=1).reset_index(drop=True)


@pytest.mark.parametrize("verb", ["evaluate", "profile"])
@pytest.mark.parametrize("value", ["inf", "-1"])
def test_an_infinite_or_negative_concentration_is_refused(tmp_path, capsys, verb, value):
    table = wells_table().astype({"Metadata_Concentration": object})
    # both doses of M1-c0 at "inf" would be one treatment: 23 treatments, not 24
    table.loc[table["Metadata_Compound"] == "M1-c0", "Metadata_Concentration"] = value
    path = write_csv(table, tmp_path / "t.csv")
    first = int(np.flatnonzero(table["Metadata_Compound"] == "M1-c0")[0])
    error = error_of(capsys, [verb, "--features", path, "--out", tmp_path / "out", *FAST])
    assert (
        f"{path}: Metadata_Concentration must be a finite concentration >= 0, got "
        f"{float(value)!r} in row {first} (6 such rows)" in error
    )
    assert not (tmp_path / "out").exists()


def test_an_infinite_concentration_in_a_moa_table_is_refused(tmp_path, capsys):
    table = wells_table()
    path = write_csv(table.drop(columns="Metadata_MoA"), tmp_path / "t.csv")
    moa = moa_table(table).astype({"concentration": object})
    moa.loc[2, "concentration"] = "inf"
    moa_path = write_csv(moa, tmp_path / "moa.csv")
    args = ["evaluate", "--features", path, "--moa", moa_path, "--out", tmp_path / "out"]
    error = error_of(capsys, args)
    assert f"{moa_path}: concentration must be a finite concentration >= 0, got inf in row 2" in (
        error
    )


@pytest.mark.parametrize("verb", ["evaluate", "profile"])
def test_a_moa_table_that_repeats_a_treatment(tmp_path, capsys, verb):
    table = wells_table()
    path = write_csv(table.drop(columns="Metadata_MoA"), tmp_path / "t.csv")
    moa = moa_table(table)
    # the same row twice (and once more at a concentration equal to 1e-6): the same labels
    again = pd.concat([moa, moa.iloc[[3]], moa.iloc[[3]].assign(concentration=1.0 + 1e-9)])
    write_csv(again, tmp_path / "again.csv")
    write_csv(moa, tmp_path / "once.csv")
    for name in ("again", "once"):
        args = [verb, "--features", path, "--moa", tmp_path / f"{name}.csv"]
        assert main([str(a) for a in [*args, "--out", tmp_path / name, *FAST]]) == 0
    output = "metrics.json" if verb == "evaluate" else "treatments.parquet"
    assert (tmp_path / "again" / output).read_bytes() == (tmp_path / "once" / output).read_bytes()
    # a treatment given two MoAs: which one is meant is not ours to guess
    clash = pd.concat([moa, moa.iloc[[3]].assign(moa="Other")], ignore_index=True)
    clash_path = write_csv(clash, tmp_path / "clash.csv")
    args = [verb, "--features", path, "--moa", clash_path, "--out", tmp_path / "out"]
    error = error_of(capsys, args)
    row = moa.iloc[3]
    assert (
        f"{clash_path}: compound {row['compound']!r} at concentration "
        f"{row['concentration']:g} has two MoAs, {row['moa']!r} (row 3) and 'Other' "
        f"(row {len(moa)})" in error
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["features", "moa"])
@pytest.mark.parametrize("verb", ["evaluate", "profile"])
def test_a_table_that_is_a_folder_says_so(tmp_path, capsys, verb, flag):
    path = write_csv(wells_table(), tmp_path / "t.csv")
    (tmp_path / "folder").mkdir()
    given = {"features": path, "moa": None, flag: tmp_path / "folder"}
    args = [verb, "--features", given["features"], "--out", tmp_path / "out"]
    args += ["--moa", given["moa"]] if given["moa"] else []
    error = error_of(capsys, args)
    assert f"cellclr: error: {tmp_path / 'folder'}: is a folder, not a file (the " in error


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


def test_feature_tables_of_other_tools_evaluate_like_our_profiles(tmp_path, store, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    ours = json.loads((run / "eval" / "metrics.json").read_text())

    # a CellProfiler-style per-well table: bookkeeping columns, no MoA or batch columns
    wells = pd.read_parquet(run / "profiles" / "wells.parquet")
    moa = wells[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]].drop_duplicates()
    moa.columns = ["compound", "concentration", "moa"]
    moa.to_csv(tmp_path / "moa.csv", index=False)
    table = wells.drop(columns=["Metadata_MoA", "Metadata_Batch", "Metadata_Cells"])
    table.insert(0, "ImageNumber", range(len(table)))
    table["Nuclei_Location_Center_X"] = 10.0
    table.to_csv(tmp_path / "cp_wells.csv", index=False)
    assert (
        main(
            [
                "evaluate",
                "--features",
                str(tmp_path / "cp_wells.csv"),
                "--moa",
                str(tmp_path / "moa.csv"),
                "--out",
                str(tmp_path / "cp"),
                *sets(),
            ]
        )
        == 0
    )
    theirs = json.loads((tmp_path / "cp" / "metrics.json").read_text())
    for variant, m in ours["variants"].items():
        for task in ("nsc", "nscb"):
            assert theirs["variants"][variant][task]["correct"] == m[task]["correct"]
            assert theirs["variants"][variant][task]["total"] == m[task]["total"]
    assert theirs["dropped_features"] == ours["dropped_features"]

    # a per-cell table (pycytominer-style) is averaged per well first: the same result again
    cells = pd.read_parquet(run / "embeddings" / "embeddings.parquet")
    cells.to_parquet(tmp_path / "cells.parquet")
    assert (
        main(
            [
                "evaluate",
                "--features",
                str(tmp_path / "cells.parquet"),
                "--out",
                str(tmp_path / "pc"),
                *sets(),
            ]
        )
        == 0
    )
    per_cell = json.loads((tmp_path / "pc" / "metrics.json").read_text())
    assert per_cell["nsc"]["correct"] == ours["nsc"]["correct"]

    # text columns that are not Metadata_ are refused, naming them
    table.assign(Image_FileName_DNA="a.tif").to_csv(tmp_path / "bad.csv", index=False)
    assert (
        main(["evaluate", "--features", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad")])
        == 2
    )
    assert "Image_FileName_DNA" in capsys.readouterr().err
