"""Label-free model selection during training: a training callback (``LabelFreeSelection``)
that every ``train.select_every`` epochs embeds the store with the current encoder, averages
the cells per well, and logs the measures ``evaluate`` computes without labels:

- ``replicate_map``: phenotypic activity mAP (signal: a treatment's wells retrieved among the
  controls), ``retrieval.activity``;
- ``batch_retrieval_map``: the control wells' same-batch retrieval mAP (batch: lower is
  better), ``retrieval.batch_retrieval``;
- ``same_batch_neighbours``: the share of treatments whose nearest treatment of another
  compound shares their batch (batch: lower is better), ``retrieval.same_batch_neighbours``;

and ``label_free_score`` = ``replicate_map - (batch_retrieval_map - its chance)``, the one
number the shipped configs were chosen by (``docs/results.md``): signal, less the part of it
a batch can explain. A measure the store cannot give (no treatments, no controls, one batch)
is left out of the log line.

Under torchrun every process embeds its share of the batches and the per-well sums of the
features are added up over the processes, so no process waits while another embeds the store;
the wells are then ``profiles.treatment_profiles``'s input, as ``profile`` makes them from the
embeddings file (no post-processing)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import nn

from cellclr.columns import BATCH, COMPOUND, WELL_KEYS
from cellclr.config import Config
from cellclr.errors import CellclrError
from cellclr.learning.distributed import World, all_sum
from cellclr.learning.encode import encode
from cellclr.profiling.profiles import treatment_profiles
from cellclr.profiling.retrieval import (
    NotScored,
    batch_retrieval,
    replicate_map,
    same_batch_neighbours,
)
from cellclr.store import CropStore

log = logging.getLogger(__name__)


class LabelFreeSelection:
    """``train(callbacks=[LabelFreeSelection(store, cfg)])``: log the label-free measures
    every ``train.select_every`` epochs and after the last one. Called on every process
    (each embeds its share); only the main process's measures are logged."""

    def __init__(self, store: CropStore, cfg: Config) -> None:
        self.store, self.cfg = store, cfg
        self.every = cfg.train.select_every

    def on_epoch(self, epoch: int, encoder: nn.Module, world: World) -> dict:
        """The measures to add to epoch ``epoch``'s log line (none between selections)."""
        if not self.every or (epoch % self.every and epoch != self.cfg.train.epochs):
            return {}
        wells = well_means(encoder, self.store, self.cfg, world)
        return {} if wells is None else label_free_measures(wells, self.cfg)


def label_free_measures(wells: pd.DataFrame, cfg: Config) -> dict[str, float]:
    """The measures named in the module's docstring, of well profiles, rounded to 4 places;
    a measure that cannot be computed is left out."""
    control, treatment = cfg.screen.control, cfg.screen.treatment
    out: dict[str, float] = {}
    if set(treatment) <= set(wells.columns):
        score = replicate_map(wells, control, cfg.evaluate.seed, treatment=treatment)["map"]
        if not np.isnan(score):
            out["replicate_map"] = score
    try:
        batch = batch_retrieval(wells, control)
        out["batch_retrieval_map"] = batch["map"]
        out["batch_retrieval_chance"] = batch["chance"]
    except NotScored:
        pass
    if set(treatment) <= set(wells.columns):
        try:
            neighbours = same_batch_neighbours(treatment_profiles(wells, treatment), control)
            out["same_batch_neighbours"] = neighbours["rate"]
        except (NotScored, CellclrError):
            pass
    if "replicate_map" in out and "batch_retrieval_map" in out:
        excess = out["batch_retrieval_map"] - out["batch_retrieval_chance"]
        out["label_free_score"] = out["replicate_map"] - excess
    return {k: round(float(v), 4) for k, v in out.items()}


def well_means(
    encoder: nn.Module, store: CropStore, cfg: Config, world: World | None = None
) -> pd.DataFrame | None:
    """Embed every cell (eval mode) and average per well: the well profiles (``Metadata_``
    columns of the store that name wells, treatments and batches; features ``f0``...), on the
    main process; None on the others."""
    world = world or World()
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    norm = store.normalization(cfg.data.normalize, cfg.data.normalize_min_cells)
    n, bs = len(store), cfg.embed.batch_size
    mine = [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)][world.rank :: world.size]
    keys = list(dict.fromkeys([*WELL_KEYS, *cfg.screen.treatment, COMPOUND, BATCH]))
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
    return pd.concat([grouped.size().index.to_frame(index=False), features], axis=1)
