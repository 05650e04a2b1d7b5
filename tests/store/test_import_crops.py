"""``import-crops`` (cellclr.store.import_crops): crops and their table into a store; bad inputs
are one clear error naming the file, inputs are never overwritten and no cell is dropped."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.outputs import OutputExistsError
from cellclr.store import CropStore, StoreError
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files


def test_round_trip(store, crop_files):
    images = np.load(crop_files[0])["images"]
    cells = pd.read_csv(crop_files[1])
    s = CropStore(store)
    assert len(s) == len(images) and s.channels == ["DNA", "Tubulin", "Actin"]
    assert s.crop_shape == images.shape[1:]
    # the index may be reordered by plate; each row still points at its own crop
    order = np.random.default_rng(0).permutation(len(s))
    got = s.read(order)
    original_row = s.cells["Metadata_CellIndex"].to_numpy()
    np.testing.assert_array_equal(got, images[original_row[order]])
    pd.testing.assert_frame_equal(
        s.cells[cells.columns].sort_values("Metadata_CellIndex").reset_index(drop=True), cells
    )
    assert got.dtype == np.uint16
    for column in [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site",
        "Metadata_Compound",
        "Metadata_Concentration",
        "Metadata_MoA",
        "Metadata_Batch",
        "Metadata_CropFile",
        "Metadata_CropRow",
    ]:
        assert column in s.cells
    assert set(s.cells["Metadata_Batch"]) == {"Week1", "Week2"}
    assert all((store / f).is_file() for f in s.files)


def test_five_channels(tmp_path):
    images, cells = make_crop_files(tmp_path / "in", n_channels=5)
    names = ["DNA", "ER", "RNA", "AGP", "Mito"]
    s = CropStore(import_crops(images, cells, tmp_path / "store", names))
    assert s.channels == names and s.read(np.arange(3)).shape == (3, 5, 20, 20)


def _write(tmp_path, images, cells):
    np.savez(tmp_path / "x.npz", images=images)
    cells.to_csv(tmp_path / "x.csv", index=False)
    return tmp_path / "x.npz", tmp_path / "x.csv"


def _assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda im, c: (im, c.iloc[:-1]), "rows but the images hold"),
        (
            lambda im, c: (im, c.drop(columns=["Metadata_Well"])),
            "missing required columns Metadata_Well",
        ),
        (
            lambda im, c: (
                im.astype(np.float32)
                * np.where(np.arange(len(im)) == 3, np.nan, 1)[:, None, None, None],
                c,
            ),
            "NaN or infinite values in 1 crops \\(first: \\[3\\]\\)",
        ),
        (lambda im, c: (im.astype(np.int32) - 5000, c), "negative values"),
        (lambda im, c: (im.astype(np.float32) + 0.5, c), "fractional values"),
        (
            lambda im, c: (
                im,
                c.assign(
                    Metadata_Compound=np.where(np.arange(len(c)) == 2, None, c["Metadata_Compound"])
                ),
            ),
            "Metadata_Compound is empty in 1 rows",
        ),
        (  # issue 18: a dose at infinity, or below zero, is no concentration
            lambda im, c: (
                im,
                c.assign(Metadata_Concentration=c["Metadata_Concentration"] + 1).replace(
                    {"Metadata_Concentration": {2.0: np.inf}}
                ),
            ),
            r"x.csv: Metadata_Concentration must be a finite concentration >= 0, got inf in row 4 ",
        ),
        (
            lambda im, c: (im, c.assign(Metadata_Concentration=-c["Metadata_Concentration"])),
            r"Metadata_Concentration must be a finite concentration >= 0, got -1.0 in row 4 ",
        ),
    ],
)
def test_bad_input_is_named_and_nothing_is_left(tmp_path, crop_files, change, message):
    images = np.load(crop_files[0])["images"]
    cells = pd.read_csv(crop_files[1])
    paths = _write(tmp_path, *change(images, cells))
    with pytest.raises(CellclrError, match=message):
        import_crops(*paths, tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_missing_files_and_keys(tmp_path, crop_files):
    with pytest.raises(StoreError, match="images file not found"):
        import_crops(tmp_path / "none.npz", crop_files[1], tmp_path / "out")
    with pytest.raises(StoreError, match="input: is a folder, not a file"):  # issue 18
        import_crops(crop_files[0].parent, crop_files[1], tmp_path / "out")
    with pytest.raises(StoreError, match="no array 'crops'"):
        import_crops(crop_files[0], crop_files[1], tmp_path / "out", key="crops")
    with pytest.raises(StoreError, match="3 channels but 2 names"):
        import_crops(*crop_files, tmp_path / "out", ["DNA", "Actin"])
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(StoreError, match="cannot read the crops"):
        import_crops(tmp_path / "broken.npz", crop_files[1], tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_existing_output_needs_overwrite(tmp_path, crop_files):
    out = import_crops(*crop_files, tmp_path / "out")
    first_id = CropStore(out).id
    with pytest.raises(OutputExistsError, match="--overwrite"):
        import_crops(*crop_files, out)
    import_crops(*crop_files, out, overwrite=True)
    assert CropStore(out).id == first_id  # same input, same content id
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out.old").exists()


def test_stale_scratch_output_is_replaced(tmp_path, crop_files):
    (tmp_path / "out.partial").mkdir()  # left by a killed run
    (tmp_path / "out.partial" / "junk").write_text("x")
    out = import_crops(*crop_files, tmp_path / "out")
    assert not (out / "junk").exists() and not (tmp_path / "out.partial").exists()


def test_store_id_covers_pixels_and_channel_names(tmp_path, crop_files):
    images = np.load(crop_files[0])["images"]
    base = CropStore(import_crops(*crop_files, tmp_path / "a", ["DNA", "Tubulin", "Actin"])).id
    np.savez(tmp_path / "half.npz", images=images // 2)
    halved = import_crops(
        tmp_path / "half.npz", crop_files[1], tmp_path / "b", ["DNA", "Tubulin", "Actin"]
    )
    renamed = import_crops(*crop_files, tmp_path / "c", ["Actin", "Tubulin", "DNA"])
    assert len({base, CropStore(halved).id, CropStore(renamed).id}) == 3
    assert (
        CropStore(import_crops(*crop_files, tmp_path / "d", ["DNA", "Tubulin", "Actin"])).id == base
    )


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
