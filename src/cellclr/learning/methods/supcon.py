"""Weak supervision with SupCon (Khosla et al. 2020): SimCLR's model and views, but every view of
a cell with the same label (its treatment or compound, never its MoA) is a positive."""

from __future__ import annotations

from torch import nn

from cellclr.config import Config, ContrastiveConfig
from cellclr.learning.losses import supcon
from cellclr.learning.methods.base import Batch
from cellclr.learning.methods.simclr import SimCLR


class SupCon(SimCLR):
    uses_labels = True

    @staticmethod
    def settings(cfg: Config) -> ContrastiveConfig:
        return cfg.supcon

    def loss(self, net: nn.Module, batch: Batch):
        if batch.labels is None:
            raise ValueError("SupCon needs the cells' labels")
        z1, z2 = self.projections(net, batch)
        rank = batch.world.rank
        loss = supcon(z1, z2, batch.labels, self.temperature, gather=batch.gather, rank=rank)
        return self.with_adversary(loss)
