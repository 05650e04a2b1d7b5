"""What every training method provides to the training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cellclr.learning.distributed import World
from cellclr.learning.losses.nt_xent import Gather


@dataclass
class Batch:
    """One process's slice of a global batch, and what a loss needs to see the whole batch."""

    crops: torch.Tensor  # (n, C, H, W), normalised, on the device
    keys: Callable[[int], torch.Tensor]  # view -> (n,) random keys of the cells' views
    labels: torch.Tensor | None  # (n,) label codes, for methods that use labels
    gather: Gather | None  # all-gather with gradients (None in one process)
    world: World
    batches: torch.Tensor | None = None  # (n,) batch codes, for train.batch_adversary


class Method(nn.Module):
    """A method: the modules a step trains, its loss, and the encoder it leaves behind."""

    uses_labels = False  # trained with labels (treatment or compound): weakly supervised
    views = 2  # random views of each cell a step draws (their keys are drawn per epoch)

    def trained(self) -> nn.Module:
        """The module the optimiser updates (and DistributedDataParallel wraps)."""
        return self

    def encoder_to_keep(self) -> nn.Module:
        """The backbone whose features ``embed`` computes."""
        return self.encoder

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        """The loss of one step; ``net`` is ``trained()`` (possibly wrapped for DDP)."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step; ``progress`` runs from 0 to 1 over training."""
