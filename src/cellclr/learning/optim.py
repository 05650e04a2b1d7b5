"""Optimisers and the learning-rate schedule: AdamW or LARS, linear warm-up then cosine."""

from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as SimCLR uses.

    Parameter groups with ``lars=False`` (biases and normalisation weights) get neither the
    trust ratio nor weight decay.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            lars=True,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter of a group at once (``torch._foreach_*``: a few fused
        kernels per group, not several per parameter), with nothing read back to the host."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where(
                    (p_norm > 0) & (g_norm > 0),
                    group["trust_coefficient"] * p_norm / g_norm,
                    torch.ones_like(p_norm),
                )
                torch._foreach_mul_(grads, list(trust.unbind()))
            states = [self.state[p] for p in params]
            running = [i for i, st in enumerate(states) if "momentum_buffer" in st]
            if running:
                bufs = [states[i]["momentum_buffer"] for i in running]
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, [grads[i] for i in running])
            for st, d_p in zip(states, grads, strict=True):
                if "momentum_buffer" not in st:  # the first step
                    st["momentum_buffer"] = d_p.clone()
            bufs = [st["momentum_buffer"] for st in states]
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW or LARS; biases and normalisation parameters are not decayed."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    if name == "adamw":
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr)
    if name == "lars":
        groups = [{"params": decay}, {"params": no_decay, "lars": False, "weight_decay": 0.0}]
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: choose adamw or lars")


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the base rate, then cosine decay to 0, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
