"""A real Cell Painting field (plate BR00143976, well C03, site 3; Phenix, 1080x1080, five of
six TIFFs LZW-compressed) with CellProfiler's single-cell table (CytoTable layout), as a source
of the crop stage (cellclr.cropping.sources): through ``--loaddata``, and CellProfiler's nucleus
centres through ``--locations``. Skipped when the data are absent."""

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from cellclr.cli import main
from cellclr.store import CropStore
from tests.helpers import FIELD, TABLE

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
PHENIX = {"Brightfield": 1, "ER": 2, "AGP": 3, "Mito": 4, "DNA": 5, "RNA": 6}  # file channel
XY = ["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]
BOX = 96


def tiff(name: str) -> np.ndarray:
    return tifffile.imread(FIELD / "images" / f"r03c03f03p01-ch{PHENIX[name]}sk1fk1fl1.tiff")


def platemap(folder: Path) -> Path:
    path = folder / "platemap.csv"
    treatment = {"Metadata_Compound": ["DMSO"], "Metadata_Concentration": [0.0]}
    pd.DataFrame({"Metadata_Plate": ["BR00143976"], "Metadata_Well": ["C03"], **treatment}).to_csv(
        path, index=False
    )
    return path


def crop(tmp_path: Path, out: str, *extra: str) -> int:
    args = ["crop", "--loaddata", str(TABLE), "--channels", ",".join(CHANNELS)]
    args += ["--images-root", str(FIELD / "images"), "--platemap", str(platemap(tmp_path))]
    return main([*args, "--out", str(tmp_path / out), "--workers", "1", *extra])


def assert_pixels_are_the_tiffs(store: CropStore) -> None:
    """Every crop, every channel: the TIFF's pixels in the box around the cell's centre."""
    crops = store.read(np.arange(len(store)))
    images = [tiff(name) for name in store.channels]
    for i, (x, y) in enumerate(store.cells[XY].to_numpy()):
        r, c = round(y) - BOX // 2, round(x) - BOX // 2
        for k, image in enumerate(images):
            np.testing.assert_array_equal(crops[i, k], image[r : r + BOX, c : c + BOX])


def test_loaddata_crop_keeps_the_tiffs_pixels(field, tmp_path, capsys):
    # the table names CellProfiler's illumination functions, which are not included
    assert crop(tmp_path, "with_illum") == 2
    err = capsys.readouterr().err
    assert "illumination function not found" in err and "BR00143976_IllumDNA.npy" in err
    assert crop(tmp_path, "crops", "--no-illumination") == 0
    store = CropStore(tmp_path / "crops")
    assert store.channels == CHANNELS and store.crop_shape == (5, BOX, BOX)
    assert store.read(np.arange(2)).dtype == np.uint16
    cells = store.cells
    assert 25 <= len(cells) <= 60
    assert set(cells["Metadata_Plate"]) == {"BR00143976"} and set(cells["Metadata_Well"]) == {"C03"}
    assert set(cells["Metadata_Site"]) == {3} and set(cells["Metadata_ImageNumber"]) == {3}
    assert set(cells["Metadata_Compound"]) == {"DMSO"}
    assert set(cells["Metadata_Concentration"]) == {0.0}
    assert_pixels_are_the_tiffs(store)


def test_cellprofiler_nuclei_from_the_table_centre_the_crops(field, tmp_path):
    assert crop(tmp_path, "crops", "--no-illumination", "--locations", str(TABLE)) == 0
    store = CropStore(tmp_path / "crops")
    table = pd.read_parquet(TABLE)
    cells = store.cells
    np.testing.assert_array_equal(cells[XY].to_numpy(), table[XY].to_numpy())
    objects = table["Metadata_Nuclei_Number_Object_Number"].tolist()
    assert cells["Metadata_ObjectNumber"].tolist() == objects
    assert_pixels_are_the_tiffs(store)
    # centred: the box's middle pixel is the one of the rounded centre
    dna = tiff("DNA")
    crops = store.read(np.arange(len(store)))
    for i, (x, y) in enumerate(cells[XY].to_numpy()):
        assert crops[i, 0, BOX // 2, BOX // 2] == dna[round(y), round(x)]
