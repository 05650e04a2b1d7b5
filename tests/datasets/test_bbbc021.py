"""BBBC021's published metadata (cellclr.datasets.bbbc021)."""

import pytest

from cellclr.datasets.bbbc021 import bbbc021_image_table
from tests.helpers import SHARED


def test_bbbc021_metadata_as_published():
    if not (SHARED / "metadata" / "BBBC021_v1_image.csv").is_file():
        pytest.skip(f"BBBC021 metadata not found in {SHARED} (only present in CI and dev)")
    table = bbbc021_image_table(SHARED)
    assert len(table) == 13200 and table["Metadata_Plate"].nunique() == 55
    annotated = table[table["Metadata_MoA"].notna() & (table["Metadata_Compound"] != "DMSO")]
    treatments = annotated.groupby(["Metadata_Compound", "Metadata_Concentration"]).size()
    assert len(treatments) == 103
    assert annotated["Metadata_Compound"].nunique() == 38
    assert annotated["Metadata_MoA"].nunique() == 12
    assert (table.loc[table["Metadata_Compound"] == "DMSO", "Metadata_MoA"] == "DMSO").all()
    assert set(table["Metadata_Site"]) == {1, 2, 3, 4}
    assert table["Metadata_Batch"].str.fullmatch(r"Week\d+").all()
