from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.outputs import write_manifest
from cellclr.profiling.profiles import ProfileError, treatment_profiles, well_profiles
from tests.helpers import error_of, wells_table, write_csv


def cells_table():
    rng = np.random.default_rng(0)
    rows = []
    for plate, week in [("Week1_1", "Week1"), ("Week2_1", "Week2")]:
        for well, compound, conc, moa in [
            ("A01", "x", 1.0, "M1"),
            ("A02", "x", 3.0, "M1"),
            ("A03", "DMSO", 0.0, "DMSO"),
        ]:
            for site in (1, 2):
                rows.append((plate, well, site, compound, conc, moa, week))
    cells = pd.DataFrame(
        rows,
        columns=[
            "Metadata_Plate",
            "Metadata_Well",
            "Metadata_Site",
            "Metadata_Compound",
            "Metadata_Concentration",
            "Metadata_MoA",
            "Metadata_Batch",
        ],
    )
    cells = pd.concat([cells] * 3, ignore_index=True)
    feats = pd.DataFrame(rng.normal(size=(len(cells), 4)), columns=[f"f{i}" for i in range(4)])
    return pd.concat([cells, feats], axis=1)


def test_well_mean_and_treatment_median():
    cells = cells_table()
    wells = well_profiles(cells)
    assert len(wells) == 6
    assert "Metadata_Site" not in wells  # varies within a well
    one = cells[(cells.Metadata_Plate == "Week2_1") & (cells.Metadata_Well == "A02")]
    row = wells[(wells.Metadata_Plate == "Week2_1") & (wells.Metadata_Well == "A02")].iloc[0]
    np.testing.assert_allclose(
        row[["f0", "f1", "f2", "f3"]].to_numpy(float),
        one[["f0", "f1", "f2", "f3"]].mean().to_numpy(),
    )
    assert row["Metadata_Cells"] == len(one)

    treatments = treatment_profiles(wells)
    assert len(treatments) == 3
    t = treatments[(treatments.Metadata_Compound == "x") & (treatments.Metadata_Concentration == 3)]
    t = t.iloc[0]
    assert t["Metadata_Batch"] == "Week1,Week2" and t["Metadata_Wells"] == 2
    expected = wells[(wells.Metadata_Compound == "x") & (wells.Metadata_Concentration == 3)]
    np.testing.assert_allclose(
        t[["f0", "f1"]].to_numpy(float), expected[["f0", "f1"]].median().to_numpy()
    )


def test_inconsistent_metadata_and_bad_features():
    cells = cells_table()
    bad = cells.copy()
    bad.loc[0, "Metadata_MoA"] = "other"
    with pytest.raises(ProfileError, match="Metadata_MoA differs within 1 wells"):
        well_profiles(bad)
    nan = cells.copy()
    nan.loc[3, "f2"] = np.nan  # one cell: the column is NaN in every well, not a partial mean
    wells = well_profiles(nan)
    assert wells["f2"].isna().all() and np.isfinite(wells[["f0", "f1", "f3"]].to_numpy()).all()
    with pytest.raises(ProfileError, match="NaN or infinite values in feature columns \\['f2'\\]"):
        treatment_profiles(wells)
    with pytest.raises(ProfileError, match="no feature columns"):
        well_profiles(cells[[c for c in cells if c.startswith("Metadata_")]])


def test_well_means_of_float32_features_are_float32():
    cells = cells_table()
    cells.loc[2, "f1"] = np.inf  # a column of NaN means, typed as its feature all the same
    cells[["f0", "f1"]] = cells[["f0", "f1"]].astype(np.float32)
    cells["n"] = np.arange(len(cells))
    wells = well_profiles(cells)
    assert wells[["f0", "f1", "f2", "n"]].dtypes.tolist() == [np.float32] * 2 + [np.float64] * 2
    assert wells["f1"].isna().all() and wells["n"].notna().all()


# ---- issue 18 ---------------------------------------------------------------------------------


def test_profile_embeddings_with_moa_uses_its_labels(tmp_path, capsys):
    table = wells_table()
    (tmp_path / "E").mkdir()
    table.to_parquet(tmp_path / "E" / "embeddings.parquet", index=False)
    write_manifest(tmp_path / "E", "embed", "0")
    moa = pd.DataFrame({"compound": ["M1-c0", "M1-c0"], "concentration": [1.0, 3.0]})
    write_csv(moa.assign(moa="New"), tmp_path / "moa.csv")
    args = ["profile", "--embeddings", tmp_path / "E", "--moa", tmp_path / "moa.csv"]
    assert main([str(a) for a in [*args, "--out", tmp_path / "P"]]) == 0
    assert "replaced by the MoAs of" in capsys.readouterr().err
    treatments = pd.read_parquet(tmp_path / "P" / "treatments.parquet")
    labels = dict(zip(treatments["Metadata_Compound"], treatments["Metadata_MoA"], strict=True))
    assert labels["M1-c0"] == "New"
    assert pd.isna(labels["M2-c0"])  # not in the MoA table: unannotated, not its old label
    wells = pd.read_parquet(tmp_path / "P" / "wells.parquet")
    assert set(wells.loc[wells["Metadata_Compound"] == "M1-c0", "Metadata_MoA"]) == {"New"}
    missing = tmp_path / "none.csv"
    error = error_of(capsys, [*args[:-1], missing, "--out", tmp_path / "Q"])
    assert f"MoA table not found: {missing}" in error


@pytest.mark.parametrize("value", [np.inf, -1.0])
def test_a_concentration_that_is_infinite_or_negative_is_refused(value):
    cells = cells_table()
    cells.loc[[5, 7], "Metadata_Concentration"] = value
    message = (
        f"cells.csv: Metadata_Concentration must be a finite concentration >= 0, got {value!r} "
        "in row 5 (2 such rows)"
    )
    with pytest.raises(CellclrError, match=re.escape(message)):
        well_profiles(cells, "cells.csv")


def test_load_profiles_of_a_folder_that_is_not_one(tmp_path):
    from cellclr.profiling.profiles import read_profiles

    with pytest.raises(CellclrError, match="is not a finished `profile` output: no such folder"):
        read_profiles(tmp_path / "nothing")
