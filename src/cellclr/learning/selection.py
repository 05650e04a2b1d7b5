"""Label-free model selection during training: the replicate retrieval mAP of the current
encoder's well profiles (``cellclr.retrieval``), logged every ``train.select_every`` epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from cellclr.config import Config
from cellclr.learning.encode import encode
from cellclr.retrieval import replicate_map
from cellclr.store import CropStore

WELL = ["Metadata_Plate", "Metadata_Well"]


def replicate_map_of(encoder: nn.Module, store: CropStore, cfg: Config) -> float | None:
    """Embed every cell (eval mode), average per well, and score replicate retrieval (no
    post-processing); None when the store's cells name no treatments (``profile.treatment``)
    or copairs is missing."""
    try:
        import copairs  # noqa: F401
    except ImportError:
        return None
    treatment = cfg.profile.treatment
    if not set(treatment) <= set(store.cells.columns):
        return None
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    n, bs = len(store), cfg.embed.batch_size
    batches = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]
    blocks = encode(encoder, store, norm, batches, device, cfg.augment.size, cfg.embed.tta)
    features = np.concatenate(list(blocks))
    encoder.train(was_training)
    keys = list(dict.fromkeys([*WELL, *treatment, "Metadata_Compound"]))
    cells = store.cells[[k for k in keys if k in store.cells]].reset_index(drop=True)
    table = pd.concat([cells, pd.DataFrame(features).add_prefix("f")], axis=1)
    wells = table.groupby(list(cells.columns), sort=True).mean().reset_index()
    e = cfg.evaluate
    score = replicate_map(wells, e.control, e.seed, treatment=treatment)["map"]
    return None if np.isnan(score) else round(float(score), 4)
