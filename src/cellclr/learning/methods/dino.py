"""DINO (Caron et al. 2021) on our ResNets: a student and a momentum (EMA) teacher share the
architecture (backbone + projection head onto prototypes); the student sees 2 global and K local
views of each cell and learns to match the teacher's centred, sharpened distribution over the
prototypes for the global views. No labels. ``embed`` uses the teacher's backbone."""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from cellclr.config import Config
from cellclr.learning.augment import Augmenter
from cellclr.learning.backbones import ResNet
from cellclr.learning.device import autocast
from cellclr.learning.distributed import all_mean
from cellclr.learning.losses import dino_loss, updated_center
from cellclr.learning.methods.base import Batch, Method


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> prototypes (a linear layer with unit-norm rows).

    The bottleneck layer and the prototypes compute in float32 even under autocast: the logits
    are cosines in [-1, 1] that the loss divides by the teacher temperature (0.04), so bf16's
    rounding of them (about 2**-9) would put ~0.05-0.1 of noise into every target logit."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.prototypes = nn.Linear(bottleneck, out_dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.mlp[:-1](h)
        with _no_autocast(h.device):
            x = F.normalize(self.mlp[-1](h.float()), dim=-1)
            return x @ F.normalize(self.prototypes.weight.float(), dim=1).T


def _no_autocast(device: torch.device) -> AbstractContextManager:
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


class MultiCrop(nn.Module):
    """Backbone + head over a list of view batches, one backbone pass per batch (the global and
    the local views have different sizes), one head pass for all."""

    def __init__(self, encoder: ResNet, head: DINOHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(v) for v in views]))


class DINO(Method):
    def __init__(self, encoder: ResNet, cfg: Config) -> None:
        super().__init__()
        d = cfg.dino
        head = DINOHead(encoder.out_dim, d.hidden, d.bottleneck, d.out_dim)
        self.student = MultiCrop(encoder, head)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(d.out_dim))
        self.global_views = Augmenter(cfg.augment)
        local = {"size": d.local_size, "crop": True, "crop_scale": d.local_scale}
        self.local_views = Augmenter(cfg.augment.model_copy(update=local))
        self.cfg = d
        self.views = 2 + d.local_views

    @property
    def encoder(self) -> ResNet:
        return self.student.encoder

    def trained(self) -> nn.Module:
        return self.student

    def encoder_to_keep(self) -> nn.Module:
        return self.teacher.encoder

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        d, x = self.cfg, batch.crops
        channels_last = torch.channels_last
        keys = torch.cat([batch.keys(0), batch.keys(1)])
        views = [self.global_views(torch.cat([x, x]), keys).contiguous(memory_format=channels_last)]
        if d.local_views:
            keys = torch.cat([batch.keys(2 + k) for k in range(d.local_views)])
            local = self.local_views(x.repeat(d.local_views, 1, 1, 1), keys)
            views.append(local.contiguous(memory_format=channels_last))
        with autocast(x.device):
            student = net(views).float()
            with torch.no_grad():
                teacher = self.teacher(views[:1]).float()
        s_views, t_views = student.chunk(2 + d.local_views), teacher.chunk(2)
        loss = dino_loss(
            list(s_views), list(t_views), self.center, d.student_temperature, d.teacher_temperature
        )
        batch_mean = all_mean(teacher.mean(dim=0), batch.world)
        self.center.copy_(updated_center(self.center, [], d.center_momentum, batch_mean))
        return loss

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """The teacher moves towards the student by the momentum, which rises to 1 (cosine)."""
        m0 = self.cfg.teacher_momentum
        m = 1 - (1 - m0) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2
        teacher, student = list(self.teacher.parameters()), list(self.student.parameters())
        torch._foreach_mul_(teacher, m)  # a few fused kernels for all parameters, not a loop
        torch._foreach_add_(teacher, student, alpha=1 - m)
