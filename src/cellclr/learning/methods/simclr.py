"""SimCLR (Chen et al. 2020): a backbone and an MLP projection head; the NT-Xent loss compares
the projections of two views of each cell."""

from __future__ import annotations

import torch
from torch import nn

from cellclr.learning.backbones import ResNet


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


class SimCLR(nn.Module):
    """Encoder + projection head. ``forward`` returns the projection; ``encoder`` the features."""

    def __init__(self, encoder: ResNet, proj_hidden: int, proj_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.out_dim, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
