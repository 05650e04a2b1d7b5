"""Feature tables of other tools (``evaluate --features``, ``profile --features``) and the MoA
tables joined to them (issue 18: concentrations, repeated MoA rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from tests.profiling.test_faults import error_of, wells_table, write_csv

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
