"""Label-free model selection during training: the replicate retrieval mAP of the current
encoder's well profiles (``cellclr.retrieval``), logged every ``train.select_every`` epochs.

Under torchrun every process embeds its share of the batches and the per-well sums of the
features are added up over the processes, so no process waits while another embeds the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from cellclr.columns import COMPOUND, WELL_KEYS
from cellclr.config import Config
from cellclr.learning.distributed import World, all_sum
from cellclr.learning.encode import encode
from cellclr.retrieval import replicate_map
from cellclr.store import CropStore


def replicate_map_of(
    encoder: nn.Module, store: CropStore, cfg: Config, world: World | None = None
) -> float | None:
    """Embed every cell (eval mode), average per well, and score replicate retrieval (no
    post-processing); None when the store's cells name no treatments (``screen.treatment``),
    without copairs, and on every process but the main one."""
    world = world or World()
    try:
        import copairs  # noqa: F401
    except ImportError:
        return None
    treatment = cfg.screen.treatment
    if not set(treatment) <= set(store.cells.columns):
        return None
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    n, bs = len(store), cfg.embed.batch_size
    mine = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)][world.rank :: world.size]
    keys = list(dict.fromkeys([*WELL_KEYS, *treatment, COMPOUND]))
    cells = store.cells[[k for k in keys if k in store.cells]].reset_index(drop=True)
    grouped = cells.groupby(list(cells.columns), sort=True)
    well = grouped.ngroup().to_numpy()
    sums, counts = None, np.zeros(grouped.ngroups)
    blocks = encode(encoder, store, norm, mine, device, cfg.augment.size, cfg.embed.tta)
    for rows, block in zip(mine, blocks, strict=True):
        if sums is None:
            sums = np.zeros((grouped.ngroups, block.shape[1]))
        keep = well[rows] >= 0  # a cell with a missing key is in no well (as in groupby)
        np.add.at(sums, well[rows][keep], block[keep])
        np.add.at(counts, well[rows][keep], 1)
    encoder.train(was_training)
    if sums is None:  # more processes than batches: this one embedded nothing
        sums = np.zeros((grouped.ngroups, encoder.out_dim))
    if world.distributed:
        sums = all_sum(torch.from_numpy(sums).to(device), world).cpu().numpy()
        counts = all_sum(torch.from_numpy(counts).to(device), world).cpu().numpy()
    if not world.main:
        return None
    features = pd.DataFrame(sums / counts[:, None]).add_prefix("f")
    wells = pd.concat([grouped.size().index.to_frame(index=False), features], axis=1)
    e = cfg.evaluate
    score = replicate_map(wells, cfg.screen.control, e.seed, treatment=treatment)["map"]
    return None if np.isnan(score) else round(float(score), 4)
