"""A plate of the crop stage: its share of a sharded crop, its illumination, its locations
(cellclr.cropping.plates)."""

import random

import numpy as np
import pandas as pd
import tifffile

from cellclr.cli import main
from cellclr.cropping.plates import shard_plates
from cellclr.store import CropStore
from tests.cropping.test_stage import CENTRES, crop_args, one_site, rewrite, write_plates


def test_plates_whose_names_sanitise_alike_keep_all_their_cells(tmp_path):
    plates = ("Plate A", "Plate_A", "Plate/A")
    table = write_plates(tmp_path / "images", plates=plates, wells=("B02",), sites=(1, 2))
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--no-illumination")) == 0
    store = CropStore(out)
    assert len(store) == 3 * 2 * len(CENTRES)  # every cell of every plate
    files = store.cells.groupby("Metadata_Plate")["Metadata_CropFile"].unique()
    assert sorted(files.index) == sorted(plates) and files.map(len).eq(1).all()
    assert files.map(lambda f: f[0]).nunique() == 3  # a file of its own each
    crops = store.read(np.arange(len(store)))
    for i, cell in store.cells.iterrows():  # each row points at its own pixels
        site = f"{cell['Metadata_Well']}_s{cell['Metadata_Site']}_DNA.tif"
        image = tifffile.imread(tmp_path / "images" / cell["Metadata_Plate"] / site)
        x, y = round(cell["Nuclei_Location_Center_X"]), round(cell["Nuclei_Location_Center_Y"])
        np.testing.assert_array_equal(crops[i, 0], image[y - 16 : y + 16, x - 16 : x + 16])


def test_locations_stay_inside_their_folder(tmp_path, capsys):
    table = one_site(tmp_path, plate="../outside")
    locations = tmp_path / "locations"
    locations.mkdir()
    outside = tmp_path / "outside"  # where ../outside/B02-1-Nuclei.csv would be read from
    outside.mkdir(exist_ok=True)
    pd.DataFrame({"Nuclei_Location_Center_X": [50.0], "Nuclei_Location_Center_Y": [60.0]}).to_csv(
        outside / "B02-1-Nuclei.csv", index=False
    )
    args = crop_args(table, tmp_path / "crops", "--locations", str(locations), "--no-illumination")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'../outside'" in err and "outside the locations folder" in err


def test_a_field_of_another_size_is_named(tmp_path, capsys):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    out = tmp_path / "crops"
    small = ["--set", "crop.illumination_min_sites=2"]
    assert main(crop_args(table, out, "--wells", "B02", *small)) == 0  # functions: 160 x 160
    rewrite(tmp_path / "images" / "Week1_1", lambda im: im[:150, :150], sites=("C03_s2",))
    assert main(crop_args(table, out, *small)) == 2
    err = capsys.readouterr().err
    assert "C03_s2_DNA.tif" in err and "(150, 150)" in err and "(160, 160)" in err
    # the same when the functions are estimated from the plate's fields
    assert main(crop_args(table, tmp_path / "fresh", *small)) == 2
    err = capsys.readouterr().err
    assert "C03_s2_DNA.tif" in err and "(150, 150)" in err and "(160, 160)" in err


def test_plates_are_shared_out_by_name_disjoint_and_complete():
    names = [f"Week{w}_{p}" for w in range(1, 5) for p in range(10, 24)]
    assert shard_plates(["C", "A", "E", "B", "D"], 0, 2) == ["A", "C", "E"]  # k -> k % N
    assert shard_plates(["C", "A", "E", "B", "D"], 1, 2) == ["B", "D"]
    for n in range(1, 9):
        shares = [shard_plates(names, i, n) for i in range(n)]
        shuffled = random.Random(n).sample(names, len(names)) * 2  # any order, repeats
        assert shares == [shard_plates(shuffled, i, n) for i in range(n)]  # names alone decide
        assert sorted(p for share in shares for p in share) == sorted(names)  # each once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shard_plates(names[:2], 3, 4) == []  # more shards than plates: some have none
