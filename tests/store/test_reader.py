"""Reading a crop store (cellclr.store.reader): crops, normalisation statistics, older stores,
and a damaged store named when opened or read."""

import json

import numpy as np
import pandas as pd
import pytest

from cellclr.store import CropStore, StoreError


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


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a crop store"):
        CropStore(tmp_path)


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
