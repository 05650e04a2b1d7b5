"""Plate maps (cellclr.tables.platemap)."""

import numpy as np
import pandas as pd
import pytest

from cellclr.tables.platemap import read_platemap, well_key
from tests.tables.test_loaddata import crop, loaddata, write_fields


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.iloc[:1], "no row for plate P1 well B02"),
        (
            lambda m: pd.concat([m, m.iloc[:1].assign(mmoles_per_liter=0.5)]),
            "well P1 A01 is listed 2 times with different Metadata_Concentration",
        ),
        (lambda m: m.assign(mmoles_per_liter=[0.01, float("inf")]), "got inf in row 1"),
        (lambda m: m.assign(mmoles_per_liter=[-1.0, 0.003]), "got -1.0 in row 0"),
        (
            lambda m: m.assign(mmoles_per_liter=["", "0.1"]),
            "Metadata_Concentration is empty for plate P1 well A01",
        ),
    ],
)
def test_bad_platemaps_are_named(tmp_path, capsys, change, message):
    fields = write_fields(tmp_path / "images", sites=(1,))
    table = tmp_path / "load_data.csv"
    loaddata(fields, treatments=False).to_csv(table, index=False)
    platemap = tmp_path / "platemap.csv"
    layout = pd.DataFrame(
        {
            "plate": ["P1", "P1"],
            "well_position": ["A1", "B2"],
            "broad_sample": ["BRD-K1", "BRD-K2"],
            "mmoles_per_liter": [0.01, 0.003],
        }
    )
    change(layout).to_csv(platemap, index=False)
    out = tmp_path / "crops"
    assert crop(table, out, "--channels", "DNA", "--platemap", str(platemap)) == 2
    err = capsys.readouterr().err
    assert message in err and str(platemap) in err
    assert not out.exists()


@pytest.mark.parametrize("value", [np.inf, -0.01])
def test_a_platemap_with_an_infinite_or_negative_concentration(tmp_path, capsys, value):
    fields = write_fields(tmp_path / "images")
    table = tmp_path / "load_data.csv"
    loaddata(fields, treatments=False).to_csv(table, index=False)
    platemap = tmp_path / "platemap.csv"
    pd.DataFrame(
        {
            "Metadata_Plate": ["P1", "P1"],
            "Metadata_Well": ["A01", "B02"],
            "Metadata_Compound": ["BRD-K1", "BRD-K2"],
            "Metadata_Concentration": [0.01, value],
        }
    ).to_csv(platemap, index=False)
    out = tmp_path / "crops"
    assert crop(table, out, "--channels", "DNA", "--platemap", str(platemap)) == 2
    err = capsys.readouterr().err
    assert str(platemap) in err and "Metadata_Concentration" in err and repr(value) in err
    assert not out.exists()


def test_jump_platemap_layout(tmp_path):
    folder = tmp_path / "platemaps" / "batch1"
    (folder / "platemap").mkdir(parents=True)
    barcodes = pd.DataFrame({"Assay_Plate_Barcode": ["P1", "P2"], "Plate_Map_Name": ["M1"] * 2})
    barcodes.to_csv(folder / "barcode_platemap.csv", index=False)
    layout = pd.DataFrame(
        {
            "plate_map_name": ["M1", "M1"],
            "well_position": ["A01", "B02"],
            "broad_sample": ["", "BRD-K9"],  # the control well holds only the solvent
            "mmoles_per_liter": ["", "0.01"],
            "solvent": ["DMSO", "DMSO"],
        }
    )
    layout.to_csv(folder / "platemap" / "M1.txt", sep="\t", index=False)
    plate_map = read_platemap(folder / "barcode_platemap.csv")
    assert len(plate_map) == 4 and set(plate_map["Metadata_Plate"]) == {"P1", "P2"}
    control = plate_map[plate_map["_well_key"] == "A01"].iloc[0]
    assert control["Metadata_Compound"] == "DMSO" and control["Metadata_Concentration"] == 0.0
    assert control["Metadata_plate_map_name"] == "M1"
    assert [well_key(w) for w in ("a1", "A01", "A001", "P24")] == ["A01", "A01", "A01", "P24"]
