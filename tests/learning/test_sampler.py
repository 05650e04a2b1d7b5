"""The order of the cells in an epoch (cellclr.learning.sampler)."""

from collections import Counter

import numpy as np

from cellclr.learning.sampler import epoch_batches, group_codes
from cellclr.store import CropStore


def test_balanced_sampling_draws_treatments_equally(store):
    s = CropStore(store)
    codes = group_codes(s, "treatment")
    cells = s.cells
    # make it unbalanced: drop most cells of every treatment but DMSO
    keep = np.flatnonzero(
        (cells["Metadata_Compound"] == "DMSO").to_numpy() | (np.arange(len(cells)) % 4 == 0)
    )
    batches = epoch_batches(len(keep), 8, seed=0, epoch=3, groups=codes[keep])
    drawn = Counter(codes[keep][np.concatenate(batches)])
    assert len(drawn) == len(set(codes[keep]))  # every treatment
    assert max(drawn.values()) - min(drawn.values()) <= 2  # equally often (up to rounding)
    again = epoch_batches(len(keep), 8, seed=0, epoch=3, groups=codes[keep])
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # resumable
    other = epoch_batches(len(keep), 8, seed=0, epoch=4, groups=codes[keep])
    assert not np.array_equal(np.concatenate(batches), np.concatenate(other))
