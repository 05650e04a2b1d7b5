"""SimCLR (Chen et al. 2020): a backbone and an MLP projection head; the NT-Xent loss compares
the projections of two views of each cell."""

from __future__ import annotations

import torch
from torch import nn

from cellclr.config import Config
from cellclr.learning.augment import Augmenter
from cellclr.learning.backbones import ResNet
from cellclr.learning.device import autocast
from cellclr.learning.losses import nt_xent
from cellclr.learning.methods.base import Batch, Method


class ProjectionHead(nn.Module):
    """SimCLR's MLP head: Linear -> BN -> ReLU -> Linear (the loss sees its output)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class SimCLR(Method):
    """Encoder + projection head. ``forward`` returns the projection; ``encoder`` the features."""

    def __init__(self, encoder: ResNet, cfg: Config) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.out_dim, cfg.model.proj_hidden, cfg.model.proj_dim)
        self.augment = Augmenter(cfg.augment)
        self.temperature = cfg.train.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def projections(self, net: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The projections of two views of each cell."""
        x, n = batch.crops, len(batch.crops)
        views = self.augment(torch.cat([x, x]), torch.cat([batch.keys(0), batch.keys(1)]))
        with autocast(x.device):
            z = net(views.contiguous(memory_format=torch.channels_last))
        return z[:n], z[n:]

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        z1, z2 = self.projections(net, batch)
        return nt_xent(z1, z2, self.temperature, gather=batch.gather, rank=batch.world.rank)
