import json
import os
import re
import shutil

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


def test_normalisation_levels(store):
    s = CropStore(store)
    stats = pd.read_parquet(store / "normalization.parquet")
    assert set(stats["level"]) == {"plate", "batch", "global"}
    n_plate = s.normalization("plate", min_cells=1)
    assert set(n_plate.source["level"]) == {"plate"}
    # 28 cells per plate: with min_cells above that each plate falls back to its batch ...
    assert set(s.normalization("plate", min_cells=29).source["level"]) == {"global"}
    # ... whose 28 cells are too few as well, so to the global statistics
    g = s.normalization("global")
    assert np.allclose(g.low, g.low[0]) and (g.high > g.low).all()
    images = s.read(np.arange(len(s))).astype(np.float64)
    lo = np.percentile(images.transpose(1, 0, 2, 3).reshape(3, -1), 1.0, axis=1)
    np.testing.assert_allclose(g.low[0], lo, rtol=1e-5)
    none = s.normalization("none")
    assert (none.low == 0).all() and (none.high == 65535).all()


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


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a crop store"):
        CropStore(tmp_path)


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


def test_well_statistics_equal_numpy(store):
    s = CropStore(store)
    norm = s.normalization("well", min_cells=4)  # every well has 4 cells
    cells = s.cells
    assert set(norm.source["level"]) == {"well"} and len(norm.low) == 14
    images = s.read(np.arange(len(s))).astype(np.float64)
    for plate, well in [("Week1_1000", "B02"), ("Week2_1001", "B08")]:
        mine = np.flatnonzero((cells["Metadata_Plate"] == plate) & (cells["Metadata_Well"] == well))
        pixels = images[mine].transpose(1, 0, 2, 3).reshape(3, -1)
        low, high = np.percentile(pixels, [1.0, 99.9], axis=1)
        group = norm.group_of_cell[mine]
        assert (group == group[0]).all()
        np.testing.assert_allclose(norm.low[group[0]], low, rtol=1e-5)
        np.testing.assert_allclose(norm.high[group[0]], high, rtol=1e-5)
    # wells of fewer cells take their plate's statistics
    fallback = s.normalization("well", min_cells=5)
    assert set(fallback.source["level"]) == {"plate"}
    plate = s.normalization("plate", min_cells=5)
    np.testing.assert_allclose(fallback.low[fallback.group_of_cell], plate.low[plate.group_of_cell])


def test_cell_statistics_equal_numpy(store):
    import torch

    from cellclr.baselines.chunks import chunk_tasks, read_scaled
    from cellclr.learning.batches import CropBatches

    s = CropStore(store)
    norm = s.normalization("cell")
    indices = np.array([0, 5, 17, 40])
    crops = s.read(indices).astype(np.float64)
    low = np.percentile(crops, 1.0, axis=(2, 3))
    high = np.percentile(crops, 99.9, axis=(2, 3))
    expected = (crops - low[:, :, None, None]) / (high - low)[:, :, None, None]
    (batch,) = CropBatches(s, norm, [indices], torch.device("cpu"))
    np.testing.assert_allclose(batch.numpy(), expected, rtol=1e-5, atol=1e-5)
    tasks = chunk_tasks(s, "cell", 100, batch=len(s))
    _, scaled = read_scaled(tasks[0])
    np.testing.assert_allclose(scaled[indices], expected, rtol=1e-5, atol=1e-5)


# ---- issue 18 item 4: plate arrays changed after the store was finalised ---------------------


def zero_pixels(store, later_ns: int = 10**9):
    """Zero the pixels of the store's first plate in place (the file keeps its size) and date
    it ``later_ns`` after what was recorded (a test runs faster than the file system's clock
    may tick); return its path and the recorded (size, mtime)."""
    name = CropStore(store).files[0]
    recorded = json.loads((store / "store.json").read_text())["plate_files"][name]
    array = np.load(store / name, mmap_mode="r+")
    array[:] = 0
    array.flush()
    del array
    os.utime(store / name, ns=(recorded[1] + later_ns, recorded[1] + later_ns))
    return store / name, recorded


def verify(store, capsys):
    code = main(["verify", str(store)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_plate_changed_in_place_is_refused_when_opened(store, capsys):
    s = CropStore(store)
    assert (s.read(np.arange(len(s))) > 0).any()
    assert verify(store, capsys)[0] == 0  # an intact store verifies
    path, recorded = zero_pixels(store)
    assert path.stat().st_size == recorded[0]  # the size alone would not tell
    s = CropStore(store)
    with pytest.raises(StoreError, match=f"{re.escape(str(path))}: changed after the store"):
        s.read(np.arange(len(s)))
    # the full hashes tell even when the time is put back as it was
    os.utime(path, ns=(recorded[1], recorded[1]))
    s = CropStore(store)
    assert (s.read(np.arange(len(s))) == 0).any()  # the cheap check cannot see it
    code, out, err = verify(store, capsys)
    assert code == 2
    assert f"{path}: differs from its recorded hash" in out
    name = path.relative_to(store)
    assert f"{store}: 1 of 2 plates differ from their recorded hash, first {name}" in err
    assert err.startswith(f"cellclr: error: {store}: 1 of 2 plates differ") and str(name) in err


def test_a_store_copied_without_its_file_times_is_accepted_after_verify(store, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, copy_function=shutil.copyfile)  # as cp -r: times not kept
    for npy in (copy / "plates").glob("*.npy"):
        st = npy.stat()
        os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    s = CropStore(copy)
    with pytest.raises(StoreError, match=f"cellclr verify {re.escape(str(copy))}"):
        s.read(np.arange(len(s)))
    code, out, _ = verify(copy, capsys)
    assert code == 0
    assert "differ from those recorded (a copy?): recorded now" in out
    assert "2 of 2 match their recorded hash" in out
    s = CropStore(copy)
    np.testing.assert_array_equal(
        s.read(np.arange(len(s))), CropStore(store).read(np.arange(len(s)))
    )


def test_a_store_written_before_records_opens_and_verify_records_them(store, capsys):
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "plate_files"})
    )
    s = CropStore(store)
    assert len(s.read(np.arange(len(s)))) == len(s)  # opened as before, unchecked
    code, out, _ = verify(store, capsys)
    assert code == 0 and "no sizes and times of the plate files were recorded" in out
    assert json.loads((store / "store.json").read_text()) == meta  # now they are
    zero_pixels(store)
    s = CropStore(store)
    with pytest.raises(StoreError, match="changed after the store was finalised"):
        s.read(np.arange(len(s)))
