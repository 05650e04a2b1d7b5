"""Plate layouts in the report (cellclr.report.plates)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellclr.report import load_run
from cellclr.report.plates import (
    distance_to_reference,
    plate_format,
    plate_wells,
    row_name,
    well_position,
)
from tests.report.test_page import copy_run


def test_well_names_and_plate_formats() -> None:
    assert well_position("A01") == (0, 0) and well_position("B03") == (1, 2)
    assert well_position("p24") == (15, 23) and well_position("AF48") == (31, 47)
    assert well_position("AA1") == (26, 0) and well_position("H012") == (7, 11)
    assert [row_name(r) for r in (0, 7, 25, 26, 31)] == ["A", "H", "Z", "AA", "AF"]
    for bad in ("B", "03", "B00", "B-3", "r01c01", ""):
        with pytest.raises(ValueError, match="not a well name"):
            well_position(bad)
    assert plate_format(2, 8) == (8, 12) and plate_format(8, 12) == (8, 12)  # 96
    assert plate_format(9, 3) == (16, 24) and plate_format(3, 13) == (16, 24)  # 384
    assert plate_format(16, 25) == (32, 48) and plate_format(32, 48) == (32, 48)  # 1536
    assert plate_format(40, 2) == (40, 2)  # larger than any standard plate: its own extent


def test_distance_to_controls_is_the_cosine_distance_to_their_mean() -> None:
    x = np.random.default_rng(1).normal(size=(9, 5))
    controls = np.zeros(9, bool)
    controls[[2, 7]] = True
    got, used = distance_to_reference(x, controls)
    mean = x[[2, 7]].mean(axis=0)
    expected = 1 - x @ mean / (np.linalg.norm(x, axis=1) * np.linalg.norm(mean))
    assert used and np.allclose(got, expected, atol=1e-12)
    got, used = distance_to_reference(x, np.zeros(9, bool))  # no controls: the median well
    median = np.median(x, axis=0)
    expected = 1 - x @ median / (np.linalg.norm(x, axis=1) * np.linalg.norm(median))
    assert not used and np.allclose(got, expected, atol=1e-12)


def test_plate_wells_measure_each_plate_against_its_own_controls(
    finished_run: Path, tmp_path: Path
) -> None:
    wells = pd.read_parquet(finished_run / "profiles" / "wells.parquet")
    found = plate_wells(load_run(finished_run))
    assert found is not None
    layout, source, bad = found
    assert source == "profiles" and not bad and len(layout) == len(wells) == 14
    x = wells[[c for c in wells if not c.startswith("Metadata_")]].to_numpy(np.float64)
    for plate in wells["Metadata_Plate"].unique():
        on = (wells["Metadata_Plate"] == plate).to_numpy()
        control = x[on & (wells["Metadata_Compound"] == "DMSO").to_numpy()].mean(axis=0)
        expected = 1 - x[on] @ control / (np.linalg.norm(x[on], axis=1) * np.linalg.norm(control))
        mine = layout[layout["Metadata_Plate"] == plate]
        assert np.allclose(mine["Distance"], expected, atol=1e-9)
        assert mine["Control"].sum() == 1 and mine["Reference"].iloc[0] == "the mean of 1 DMSO well"
    assert layout["Row"].eq(1).all() and sorted(layout["Column"].unique()) == list(range(1, 8))
    assert layout["Cells"].tolist() == wells["Metadata_Cells"].tolist()
    # a plate without control wells is measured against its median well, and says so
    no_dmso = copy_run(finished_run, tmp_path / "no-dmso", "crops")
    table = pd.read_parquet(no_dmso / "profiles" / "wells.parquet")
    table.loc[table["Metadata_Plate"] == "Week2_1001", "Metadata_Compound"] = "e1"
    table.to_parquet(no_dmso / "profiles" / "wells.parquet")
    layout, _, _ = plate_wells(load_run(no_dmso))
    week2 = layout[layout["Metadata_Plate"] == "Week2_1001"]
    assert set(week2["Reference"]) == {"the median well (no DMSO well on this plate)"}
    on = (wells["Metadata_Plate"] == "Week2_1001").to_numpy()
    median = np.median(x[on], axis=0)
    expected = 1 - x[on] @ median / (np.linalg.norm(x[on], axis=1) * np.linalg.norm(median))
    assert np.allclose(week2["Distance"], expected, atol=1e-9)
