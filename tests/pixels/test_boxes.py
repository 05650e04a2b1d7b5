"""Boxes around nucleus centres near and beyond the edge of the field (``crop.edge``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellclr.pixels.boxes import crop_boxes
from cellclr.store import CropStore
from tests.tables.test_loaddata import SHAPE, crop, loaddata, write_fields

# (x, y): inside; 5 px from the left edge (its box leaves the field); beyond the right edge and
# above the top (centres outside the field: a table of another image, or of the whole plate)
GIVEN = [(100.0, 75.0), (5.0, 75.0), (SHAPE[1] + 20.0, 75.0), (50.0, -3.0)]


@pytest.mark.parametrize(("edge", "kept", "verb"), [("pad", 2, "padded"), ("skip", 1, "skipped")])
def test_centres_outside_the_field_are_counted_apart(tmp_path, capsys, edge, kept, verb):
    fields = write_fields(tmp_path / "images", wells=("A01",), sites=(1,))
    loaddata(fields).to_csv(tmp_path / "load_data.csv", index=False)
    loc = tmp_path / "nuclei.csv"
    pd.DataFrame(
        {
            "Image_Metadata_Plate": "P1",
            "Image_Metadata_Well": "A01",
            "Image_Metadata_Site": 1,
            "Nuclei_Location_Center_X": [x for x, _ in GIVEN],
            "Nuclei_Location_Center_Y": [y for _, y in GIVEN],
        }
    ).to_csv(loc, index=False)
    args = ["--channels", "DNA", "--locations", loc, "--no-illumination", "--edge", edge]
    assert crop(tmp_path / "load_data.csv", tmp_path / "out", *args) == 0
    out = capsys.readouterr().out
    assert (
        f"cropped {kept} cells from 1 sites (1 boxes off the image edge {verb}, 2 nucleus "
        "centres outside the field left out)" in out
    )
    store = CropStore(tmp_path / "out")
    assert len(store) == kept
    sites = pd.read_parquet(tmp_path / "out" / "sites.parquet")
    assert sites[["cells", "off_edge", "outside_field"]].to_numpy().tolist() == [[kept, 1, 2]]


def test_crop_boxes_pads_only_what_leaves_the_field():
    image = np.arange(1, 101, dtype=np.uint16).reshape(10, 10)
    centres = np.array([[0.0, 0.0], [9.0, 5.0], [5.0, 5.0], [-3.0, 5.0]])
    crops, kept, padded = crop_boxes([image], centres, 4, pad=True)
    assert kept.tolist() == [True, True, True, False]  # a centre outside the field: never
    assert padded.tolist() == [12, 4, 0]
    np.testing.assert_array_equal(crops[0, 0, 2:, 2:], image[:2, :2])
    assert (crops[0, 0, :2] == 0).all() and (crops[0, 0, :, :2] == 0).all()
    np.testing.assert_array_equal(crops[1, 0, :, :3], image[3:7, 7:10])
    _, kept, _ = crop_boxes([image], centres, 4)
    assert kept.tolist() == [False, False, True, False]
