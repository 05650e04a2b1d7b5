"""Batches of normalised crops (cellclr.learning.batches)."""

import numpy as np

from cellclr.store import CropStore


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
