"""Bad inputs to import-crops and damaged crop stores: one clear error naming the file and the
problem; inputs are never overwritten and no cell is dropped."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import cellclr.store.writer
from cellclr.cli import main
from cellclr.store import CropStore, StoreError
from cellclr.store.import_crops import import_crops

CHANNELS = "DNA,Tubulin,Actin"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_args(images, cells, out, *extra):
    return ["import-crops", "--images", str(images), "--cells", str(cells), "--out", str(out)]


@pytest.mark.parametrize("where", ["their folder", "above it", "the npz itself"])
def test_out_over_the_inputs_is_refused(tmp_path, crop_files, capsys, where):
    images, cells = crop_files
    out = {"their folder": images.parent, "above it": tmp_path, "the npz itself": images}[where]
    before = {p: sha(p) for p in crop_files}
    assert main([*import_args(images, cells, out), "--overwrite"]) == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert {p: sha(p) for p in crop_files} == before


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


def test_a_store_with_the_older_file_names_is_still_read(store):
    s = CropStore(store)
    expected = s.read(np.arange(len(s)))
    cells = s.cells.copy()
    for old in cells["Metadata_CropFile"].unique():  # plates/<plate>.npy, as written before
        plate = cells.loc[cells["Metadata_CropFile"] == old, "Metadata_Plate"].iloc[0]
        (store / old).rename(store / "plates" / f"{plate}.npy")
        cells.loc[cells["Metadata_CropFile"] == old, "Metadata_CropFile"] = f"plates/{plate}.npy"
    cells.to_parquet(store / "cells.parquet", index=False)
    meta = json.loads((store / "store.json").read_text())
    del meta["plate_files"]  # nor did such stores record the plate files' sizes and times
    (store / "store.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(CropStore(store).read(np.arange(len(s))), expected)


def cells_with(crop_files, tmp_path, column, value):
    cells = pd.read_csv(crop_files[1]).astype({column: str})
    cells.loc[2, column] = value
    cells.to_csv(tmp_path / "bad.csv", index=False)
    return tmp_path / "bad.csv"


def damaged_copy(crop_files, tmp_path, damage):
    path = tmp_path / "bad.csv"
    damage(path, crop_files[1].read_text())
    return path


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda f, t: cells_with(f, t, "Metadata_Concentration", "0.3 uM"), "'0.3 uM' in row 2"),
        (lambda f, t: cells_with(f, t, "Metadata_Site", "s1"), "Metadata_Site must be an integer"),
        (lambda f, t: damaged_copy(f, t, lambda p, _: p.write_bytes(b"")), "is an empty file"),
        (
            lambda f, t: damaged_copy(
                f, t, lambda p, s: p.write_bytes(s.replace("DMSO", "Dïmso").encode("latin-1"))
            ),
            "not UTF-8",
        ),
        (
            lambda f, t: damaged_copy(f, t, lambda p, s: p.write_text(s + "a,b,c,d,e,f,g,h,i\n")),
            "not a well-formed CSV",
        ),
        (
            lambda f, t: damaged_copy(f, t, lambda p, _: p.write_bytes(bytes(range(256)) * 8)),
            "not a well-formed CSV",
        ),
    ],
    ids=["unit", "site", "empty", "latin1", "ragged", "binary"],
)
def test_bad_cells_tables_are_named(tmp_path, crop_files, capsys, make, message):
    path = make(crop_files, tmp_path)
    assert main(import_args(crop_files[0], path, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_numpy_says_so(tmp_path, crop_files, capsys):
    text = tmp_path / "crops.npz"
    text.write_text("Metadata_Plate,Metadata_Well\nWeek1,B02\n")
    assert main(import_args(text, crop_files[1], tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{text} is not an .npz or .npy file" in err and "pickle" not in err
    pickled = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "objects.npy", pickled, allow_pickle=True)
    np.savez(tmp_path / "objects.npz", images=pickled)
    for objects in (tmp_path / "objects.npy", tmp_path / "objects.npz"):
        assert main(import_args(objects, crop_files[1], tmp_path / "out")) == 2
        err = capsys.readouterr().err
        assert f"{objects}: cannot read the crops" in err and "bject" in err


def truncate_plate(store):
    npy = store / CropStore(store).files[0]
    npy.write_bytes(npy.read_bytes()[:300])
    return npy.name


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda s: (s / "store.json").write_text('{"format_vers'), "store.json: corrupt"),
        (lambda s: (s / "store.json").write_text("{}"), "unsupported format version"),
        (lambda s: (s / "store.json").unlink(), "is incomplete: missing store.json"),
        (lambda s: (s / "cells.parquet").unlink(), "is incomplete: missing cells.parquet"),
        (lambda s: (s / "cells.parquet").write_bytes(b"junk"), "cells.parquet: corrupt table"),
    ],
    ids=["json", "empty-json", "no-json", "no-cells", "bad-cells"],
)
def test_a_damaged_store_is_named_when_opened(store, damage, message):
    damage(store)
    with pytest.raises(StoreError, match=message):
        CropStore(store)


@pytest.mark.parametrize(
    "damage,message",
    [
        (truncate_plate, "truncated or corrupt crop file"),
        (lambda s: np.save(s / CropStore(s).files[0], np.zeros((2, 3, 20, 20), np.uint16)), "2, 3"),
        (lambda s: (s / CropStore(s).files[0]).unlink(), "is incomplete: missing plates/"),
    ],
    ids=["truncated", "too-short", "missing"],
)
def test_a_damaged_plate_is_named_when_read(store, damage, message):
    damage(store)
    s = CropStore(store)
    with pytest.raises(StoreError, match=message):
        s.read(np.arange(len(s)))


def test_missing_statistics_are_named(store, capsys):
    (store / "normalization.parquet").unlink()
    with pytest.raises(StoreError, match=f"store at {store} is incomplete: missing normalization"):
        CropStore(store).normalization("plate")
    json.loads((store / "store.json").read_text())  # the rest is untouched
