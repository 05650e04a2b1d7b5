"""Bad raw-image inputs: one clear error naming the file (or plate) and the problem, and
nothing silently dropped or converted."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellclr.cli import main
from cellclr.store import CropStore
from cellclr.store.format import plate_file_stem
from tests.cropping.test_stage import CENTRES, crop_args, write_plates

CHANNELS = ("DNA", "Tubulin", "Actin")


def one_site(tmp_path, plate="Week1_1"):
    """An image table of one site (plate, B02, s1) and the folder of its images."""
    return write_plates(tmp_path / "images", plates=(plate,), wells=("B02",), sites=(1,))


def rewrite(folder, convert, sites=("B02_s1",)):
    """Replace the images of ``sites`` (all channels) by ``convert(image)``."""
    for site in sites:
        for name in CHANNELS:
            path = folder / f"{site}_{name}.tif"
            tifffile.imwrite(path, convert(tifffile.imread(path)))


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


def test_plate_file_names_are_distinct_and_safe():
    names = ["Plate A", "Plate_A", "Plate/A", "Wäche1_1", "Wüche1_1", "..", ".", "", "a" * 300]
    stems = [plate_file_stem(n) for n in names]
    assert len(set(stems)) == len(names) and len({s.lower() for s in stems}) == len(names)
    assert all(s and not s.startswith(".") and "/" not in s and len(s) < 80 for s in stems)
    assert plate_file_stem("Week1_22123").startswith("Week1_22123-")  # still readable


@pytest.mark.parametrize(
    "convert,dtype",
    [
        (lambda im: (im / 65535).astype(np.float32), "float32"),  # 0..1: once all zeros
        (lambda im: im.astype(np.int32) * 30, "int32"),  # above 65535: once wrapped
        (lambda im: im.astype(np.int16) - 3000, "int16"),  # negative: once wrapped
        (lambda im: np.where(im > 1000, np.nan, im), "float64"),  # NaN: once 0
    ],
)
def test_images_that_are_not_16_bit_counts_are_refused(tmp_path, capsys, convert, dtype):
    table = one_site(tmp_path)
    rewrite(tmp_path / "images" / "Week1_1", convert)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "B02_s1_DNA.tif" in err and dtype in err and "16-bit counts" in err
    assert not (tmp_path / "crops" / "store.json").exists()


def test_8_bit_images_keep_their_values(tmp_path):
    table = one_site(tmp_path)
    rewrite(tmp_path / "images" / "Week1_1", lambda im: (im // 16).astype(np.uint8))
    out = tmp_path / "crops"
    args = crop_args(table, out, "--no-illumination", "--set", "crop.nucleus_min_area=50")
    assert main(args) == 0
    store = CropStore(out)
    image = tifffile.imread(tmp_path / "images" / "Week1_1" / "B02_s1_DNA.tif")
    cell = store.cells.iloc[0]
    x, y = round(cell["Nuclei_Location_Center_X"]), round(cell["Nuclei_Location_Center_Y"])
    np.testing.assert_array_equal(
        store.read(np.array([0]))[0, 0], image[y - 16 : y + 16, x - 16 : x + 16]
    )


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


def table_with(tmp_path, column, value):
    table = pd.read_csv(one_site(tmp_path)).astype({column: str})
    table.loc[0, column] = value
    path = tmp_path / "images" / "bad.csv"
    table.to_csv(path, index=False)
    return path


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


def test_truncated_tiff_is_called_so(tmp_path, capsys):
    table = one_site(tmp_path)
    bad = tmp_path / "images" / "Week1_1" / "B02_s1_Actin.tif"
    bad.write_bytes(bad.read_bytes()[:8])  # the header only: tifffile reads shape (0,)
    assert main(crop_args(table, tmp_path / "crops", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(bad) in err and "shape" not in err


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


def test_a_box_larger_than_the_field_says_so(tmp_path, capsys):
    table = one_site(tmp_path)
    assert main(crop_args(table, tmp_path / "crops", "--box", "200", "--no-illumination")) == 2
    err = capsys.readouterr().err
    assert "larger than the field of view, 160 x 160" in err and "no cells" not in err
