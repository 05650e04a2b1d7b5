"""Reading annotation and feature tables (cellclr.metadata): one clear error naming the file."""

from __future__ import annotations

import pandas as pd
import pytest

from cellclr.cli import main
from tests.helpers import FAST, error_of, metrics, one_line_error, wells_table, write_csv

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


def test_a_compound_named_NA_is_a_treatment(tmp_path):
    table = wells_table()
    table["Metadata_Compound"] = table["Metadata_Compound"].replace("M1-c0", "NA")
    path = write_csv(table, tmp_path / "t.csv")
    assert main(["evaluate", "--features", str(path), "--out", str(tmp_path / "e"), *FAST]) == 0
    nsc = pd.read_parquet(tmp_path / "e" / "nsc.parquet")
    assert (nsc.loc[nsc["Variant"] == "none", "Metadata_Compound"] == "NA").sum() == 2
    assert metrics(tmp_path / "e")["nsc"]["total"] == 12


def test_a_csv_with_a_row_longer_than_its_header_is_refused(tmp_path, capsys):
    table = tmp_path / "features.csv"
    table.write_text("Metadata_Plate,Metadata_Well,f1\nP1,A01,1.0,7\nP1,A02,2.0\n")
    assert main(["evaluate", "--features", str(table), "--out", str(tmp_path / "e")]) == 2
    assert "features.csv" in one_line_error(capsys) and not (tmp_path / "e").exists()
