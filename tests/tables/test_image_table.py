"""Image tables of raw fields (cellclr.tables.image_table)."""

import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.cropping.stage import CropError, crop_sites
from cellclr.tables.image_table import ImageTableError, read_image_table
from tests.cropping.test_stage import crop_args, one_site, table_with, write_plates
from tests.helpers import tiny_config


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda t: table_with(t, "Metadata_Concentration", "0.3 uM"), "'0.3 uM' in row 0"),
        (lambda t: table_with(t, "Metadata_Site", "s1"), "Metadata_Site must be an integer"),
        (lambda t: t / "images" / "sites.csv", "is an empty file"),
        (lambda t: t / "images" / "sites.csv", "not UTF-8"),
        (lambda t: t / "images" / "sites.csv", "not a well-formed CSV"),
        (lambda t: t / "images" / "sites.csv", "not a well-formed CSV"),
    ],
    ids=["unit", "site", "empty", "latin1", "ragged", "binary"],
)
def test_bad_image_tables_are_named(tmp_path, capsys, request, make, message):
    one_site(tmp_path)
    path = make(tmp_path)
    kind = request.node.callspec.id
    text = path.read_text()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        path.write_bytes(text.replace("taxol", "DMSO").replace("DMSO", "Dïmso").encode("latin-1"))
    elif kind == "ragged":
        lines = text.splitlines()
        path.write_text("\n".join([*lines, lines[1] + ",x,y"]) + "\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    assert main(crop_args(path, tmp_path / "crops")) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_table_without_required_columns(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    df = pd.read_csv(table)
    df.drop(columns=["Metadata_Well"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ImageTableError, match="missing columns Metadata_Well"):
        read_image_table(tmp_path / "a.csv", ["DNA", "Tubulin", "Actin"])
    with pytest.raises(ImageTableError, match="Mito \\(a channel's image paths\\)"):
        read_image_table(table, ["DNA", "Mito"])
    # treatment columns are optional, but where a table names them every field needs one
    df.assign(Metadata_Compound="").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(CropError, match="column Metadata_Compound is empty in 1 rows"):
        crop_sites(
            read_image_table(tmp_path / "b.csv", ["DNA"]), ["DNA"], tmp_path / "o", tiny_config()
        )


@pytest.mark.parametrize("value", ["inf", "-0.5"])
def test_an_image_table_with_an_infinite_or_negative_concentration(tmp_path, capsys, value):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), sites=(1,))
    df = pd.read_csv(table).astype({"Metadata_Concentration": object})
    df.loc[1, "Metadata_Concentration"] = value
    df.to_csv(table, index=False)
    assert main(crop_args(table, tmp_path / "crops")) == 2
    err = capsys.readouterr().err
    assert (
        f"{table}: Metadata_Concentration must be a finite concentration >= 0, got "
        f"{float(value)!r} in row 1 (1 such rows)" in err
    )
    assert not (tmp_path / "crops").exists()
