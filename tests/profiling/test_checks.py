"""Checks of feature and metadata columns (cellclr.profiling.checks)."""

from __future__ import annotations

import pandas as pd

from cellclr.cli import main
from tests.helpers import FEATURES, error_of, wells_table, write_csv


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
