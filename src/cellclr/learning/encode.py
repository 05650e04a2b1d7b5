"""Encoding crops with a trained backbone: the pooled features of whole crops resized to the
training view size, optionally averaged over the 8 rotations and flips (test-time augmentation:
a cell has no preferred orientation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cellclr.learning.augment import resize
from cellclr.learning.batches import CropBatches
from cellclr.learning.device import autocast
from cellclr.store import CropStore, Normalization


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and reflections of a batch of square images."""
    turns = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return turns + [t.flip(3) for t in turns]


def encode(
    encoder: nn.Module,
    store: CropStore,
    norm: Normalization,
    batches: Sequence[np.ndarray],
    device: torch.device,
    size: int,
    tta: bool = False,
    progress=None,
) -> Iterator[np.ndarray]:
    """Float32 features of the cells of each batch, in order; ``progress`` wraps the batches
    (e.g. a tqdm)."""
    crops = CropBatches(store, norm, batches, device)
    with torch.inference_mode(), autocast(device):
        for x in progress(crops) if progress else crops:
            x = resize(x, size)
            if tta:
                views = [v.contiguous(memory_format=torch.channels_last) for v in dihedral(x)]
                features = torch.stack([encoder(v).float() for v in views]).mean(dim=0)
            else:
                features = encoder(x).float()
            yield features.cpu().numpy()
