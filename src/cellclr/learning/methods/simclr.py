"""SimCLR (Chen et al. 2020): a backbone and an MLP projection head; the NT-Xent loss compares
the projections of two views of each cell.

With ``train.batch_adversary = w > 0``, a linear classifier on the backbone's features learns to
tell the cells' batches apart, and its gradient reaches the backbone reversed and scaled by w
(gradient reversal, Ganin & Lempitsky 2015): the backbone is pushed towards features from which
the batch cannot be read, without any treatment or MoA label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellclr.config import Config, ContrastiveConfig
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


class ReverseGradient(torch.autograd.Function):
    """The identity forward; the gradient backward multiplied by ``-weight``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


class SimCLR(Method):
    """Encoder + projection head. ``forward`` returns the projection (and, with a batch
    adversary, its batch logits); ``encoder`` the features."""

    def __init__(self, encoder: ResNet, cfg: Config, n_batches: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        own = self.settings(cfg)
        self.head = ProjectionHead(encoder.out_dim, own.proj_hidden, own.proj_dim)
        self.augment = Augmenter(cfg.augment)
        self.temperature = own.temperature
        self.adversary_weight = cfg.train.batch_adversary
        self.adversary = None
        if self.adversary_weight > 0:
            self.adversary = nn.Linear(encoder.out_dim, max(n_batches, 2))

    @staticmethod
    def settings(cfg: Config) -> ContrastiveConfig:
        """This method's section of the config."""
        return cfg.simclr

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        if self.adversary is None:
            return self.head(h)
        logits = self.adversary(ReverseGradient.apply(h, self.adversary_weight).float())
        return self.head(h), logits

    def projections(self, net: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The projections of two views of each cell (the adversary's loss, if any, is kept
        for ``loss``)."""
        x, n = batch.crops, len(batch.crops)
        views = self.augment(torch.cat([x, x]), torch.cat([batch.keys(0), batch.keys(1)]))
        with autocast(x.device):
            z = net(views.contiguous(memory_format=torch.channels_last))
        self._adversary_loss = None
        if isinstance(z, tuple):
            z, logits = z
            if batch.batches is None:
                raise ValueError("train.batch_adversary needs the cells' batch codes")
            target = torch.cat([batch.batches, batch.batches])
            self._adversary_loss = F.cross_entropy(logits.float(), target)
        return z[:n], z[n:]

    def with_adversary(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the batch adversary's (whose gradient the backbone gets reversed)."""
        return loss if self._adversary_loss is None else loss + self._adversary_loss

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        z1, z2 = self.projections(net, batch)
        loss = nt_xent(z1, z2, self.temperature, gather=batch.gather, rank=batch.world.rank)
        return self.with_adversary(loss)
