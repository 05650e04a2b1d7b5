"""Batches of normalised crops (cellclr.learning.batches)."""

import numpy as np
import pandas as pd

from cellclr.store import CropStore
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files


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


def test_plate_statistics_scale_batches_as_numpy(tmp_path):
    """``data.normalize = "plate"``: the store's statistics of a plate are numpy's 1st and 99.9th
    percentiles of its pixels, per channel (normalization.parquet), and a batch is
    (x - p1) / (p99.9 - p1) with those of each cell's own plate, per channel."""
    import torch

    from cellclr.learning.batches import CropBatches

    images, cells = make_crop_files(tmp_path / "input")
    pixels = np.load(images)["images"]
    second = pd.read_csv(cells)["Metadata_Plate"].eq("Week2_1001").to_numpy()
    pixels[second] = pixels[second] * 2 + 500  # plates far apart: a mix-up would show
    np.savez(images, images=pixels)
    s = CropStore(import_crops(images, cells, tmp_path / "store", ["DNA", "Tubulin", "Actin"]))
    stats = pd.read_parquet(s.path / "normalization.parquet")
    crops = s.read(np.arange(len(s))).astype(np.float64)
    plates = s.cells["Metadata_Plate"].to_numpy()
    low, high = {}, {}
    for plate in ("Week1_1000", "Week2_1001"):
        mine = plates == plate
        rows = stats[(stats["level"] == "plate") & (stats["key"] == plate)]
        rows = rows.set_index("channel").loc[s.channels]
        low[plate], high[plate] = rows["low"].to_numpy(), rows["high"].to_numpy()
        expected = np.percentile(crops[mine].transpose(1, 0, 2, 3).reshape(3, -1), [1, 99.9], 1)
        np.testing.assert_allclose([low[plate], high[plate]], expected, rtol=1e-6)
        assert (rows["n_cells"] == mine.sum()).all()
    assert (high["Week2_1001"] > 1.5 * high["Week1_1000"]).all()
    norm = s.normalization("plate", min_cells=1)  # 28 cells a plate: each plate its own
    order = np.random.default_rng(0).permutation(len(s))
    batches = [order[:20], order[20:]]  # both plates in every batch
    got = np.concatenate([b.numpy() for b in CropBatches(s, norm, batches, torch.device("cpu"))])
    lo = np.stack([low[p] for p in plates[order]])[:, :, None, None]
    hi = np.stack([high[p] for p in plates[order]])[:, :, None, None]
    np.testing.assert_allclose(got, (crops[order] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_crop_percentiles_equal_numpys_for_any_crop_size_and_ties():
    import torch

    from cellclr.learning.batches import crop_percentiles

    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 20, 68):
        crops = rng.integers(0, 50 if size > 7 else 65535, (5, 3, size, size)).astype(np.float32)
        low, high = crop_percentiles(torch.from_numpy(crops))
        flat = crops.reshape(5, 3, -1).astype(np.float64)
        np.testing.assert_allclose(low.numpy(), np.percentile(flat, 1.0, axis=2), rtol=1e-6)
        np.testing.assert_allclose(high.numpy(), np.percentile(flat, 99.9, axis=2), rtol=1e-6)
