"""Writing a store's plate files (cellclr.store.writer)."""

import errno

import numpy as np
import pandas as pd
import pytest

import cellclr.store.writer
from cellclr.cli import main
from cellclr.store import CropStore, StoreError
from cellclr.store.format import plate_file_stem
from cellclr.store.import_crops import import_crops
from tests.cropping.test_stage import crop_args, write_plates


def test_plates_whose_names_sanitise_alike_keep_all_their_cells(tmp_path, crop_files):
    images = np.load(crop_files[0])["images"]
    cells = pd.read_csv(crop_files[1])
    names = ["Plate A", "Plate_A", "Plate/A", "Wäche1_1", "Wüche1_1"]
    cells["Metadata_Plate"] = [names[i % len(names)] for i in range(len(cells))]
    cells.to_csv(tmp_path / "cells.csv", index=False)
    store = CropStore(import_crops(crop_files[0], tmp_path / "cells.csv", tmp_path / "out"))
    assert len(store) == len(cells)  # every cell given is stored
    files = store.cells.groupby("Metadata_Plate")["Metadata_CropFile"].unique()
    assert sorted(files.index) == sorted(names) and files.map(len).eq(1).all()
    assert files.map(lambda f: f[0]).nunique() == len(names)  # a file of its own each
    original = store.cells["Metadata_CellIndex"].to_numpy()
    np.testing.assert_array_equal(store.read(np.arange(len(store))), images[original])
    assert sorted(store.cells["Metadata_Plate"]) == sorted(cells["Metadata_Plate"])


def test_two_plates_never_share_a_file(tmp_path, crop_files, monkeypatch):
    monkeypatch.setattr(cellclr.store.writer, "plate_file_stem", lambda plate: "same")
    with pytest.raises(StoreError, match="map to the same file"):
        import_crops(*crop_files, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class FullDisk:
    """A file whose writes fail after ``room`` bytes, as on a full disk: OSError 28 with no
    file name."""

    def __init__(self, path, mode, room):
        self.file, self.room = open(path, mode), room  # noqa: SIM115 (closed by close())

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_while_cropping_names_the_file(tmp_path, capsys, monkeypatch):
    table = write_plates(tmp_path / "images", plates=("Week1_1",))
    monkeypatch.setattr(
        "cellclr.store.writer.open", lambda path, mode: FullDisk(path, mode, 5000), raising=False
    )
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--no-illumination")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    npy = tmp_path / "crops.partial" / "plates" / f".{plate_file_stem('Week1_1')}.npy.tmp"
    assert err == [f"cellclr: error: {npy}: No space left on device"]
    assert not npy.exists()  # no half-written plate is left
