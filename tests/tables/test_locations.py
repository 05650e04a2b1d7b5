"""Nucleus centres from one CellProfiler object table (``crop --locations TABLE``)."""

from __future__ import annotations

import pandas as pd

from cellclr.store import CropStore
from tests.tables.test_loaddata import crop, loaddata, write_fields

CENTRES = [(40.0, 50.0), (120.0, 60.0), (70.0, 110.0)]


def locations(fields: list[dict], objects: bool = True) -> pd.DataFrame:
    """A per-object table: the same three nuclei in every field."""
    rows = [
        {
            "Image_Metadata_Plate": f["plate"],
            "Image_Metadata_Well": f["well"],
            "Image_Metadata_Site": f["site"],
            "Nuclei_Location_Center_X": x,
            "Nuclei_Location_Center_Y": y,
            **({"ObjectNumber": n + 1} if objects else {}),
        }
        for f in fields
        for n, (x, y) in enumerate(CENTRES)
    ]
    return pd.DataFrame(rows)


def test_a_table_listing_each_nucleus_twice_crops_each_once(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",))
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)
    for objects in (True, False):
        once = locations(fields, objects)
        twice = pd.concat([once, once], ignore_index=True)  # e.g. two exports concatenated
        once.to_csv(tmp_path / "once.csv", index=False)
        twice.to_csv(tmp_path / "twice.csv", index=False)
        args = ["--channels", "DNA", "--no-illumination", "--locations"]
        assert (
            crop(tmp_path / "load_data.csv", tmp_path / f"a{objects}", *args, tmp_path / "once.csv")
            == 0
        )
        capsys.readouterr()
        assert (
            crop(
                tmp_path / "load_data.csv", tmp_path / f"b{objects}", *args, tmp_path / "twice.csv"
            )
            == 0
        )
        err = capsys.readouterr().err
        assert f"locations table {tmp_path / 'twice.csv'}: 6 rows repeat a nucleus" in err
        a, b = CropStore(tmp_path / f"a{objects}"), CropStore(tmp_path / f"b{objects}")
        assert len(a) == len(b) == len(fields) * len(CENTRES)
        pd.testing.assert_frame_equal(a.cells, b.cells)


def test_one_object_number_at_two_centres_is_an_error(tmp_path, capsys):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)
    table = locations(fields)
    table.loc[2, "ObjectNumber"] = 2  # objects 1, 2, 2: the last two differ in their centre
    table.to_csv(tmp_path / "loc.csv", index=False)
    args = ["--channels", "DNA", "--locations", tmp_path / "loc.csv"]
    assert crop(tmp_path / "load_data.csv", tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert f"locations table {tmp_path / 'loc.csv'}: object 2 of field P1 A01 1" in err
    assert "two centres" in err
    assert not (tmp_path / "out").exists()
