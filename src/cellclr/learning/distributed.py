"""Data parallelism on torch.distributed, as ``torchrun`` launches it: NCCL on CUDA, gloo on CPU.

One process per device; ``World`` says which one this is. Only the main process (rank 0)
writes files; the others wait at barriers. With one process (no ``torchrun``) every function
here is a no-op, so the same training code runs on a laptop and on a cluster.

Two timeouts: the collectives of training (all processes at work) wait ``train.dist_timeout``
seconds for a peer, then the job stops; the barriers, where the others wait while the main
process works alone (cropping, writing the embeddings, evaluating), go through a gloo group of
their own that waits ``WAIT`` (NCCL's watchdog only watches NCCL work, and none is pending
there). A process that dies still ends the job at once: torchrun stops the others.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cellclr.errors import CellclrError
from cellclr.learning.device import resolve_device

WAIT = timedelta(days=7)  # how long a barrier waits for the main process's single-process work
_wait_group: Any = None


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False  # started by torchrun: a process group (even of one process)

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The process's place, from the variables torchrun sets (one process without them)."""
    env = os.environ
    launched = all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
    if not launched:
        return World()
    rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
    return World(rank, size, int(env.get("LOCAL_RANK", "0")), distributed=True)


def init_distributed(device_name: str, timeout: float = 1800.0) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (once; its collectives wait ``timeout``
    seconds), and pick this process's device: ``cuda:LOCAL_RANK`` when CUDA is asked for or
    available (``auto``), else the CPU."""
    world = world_from_env()
    if not world.distributed:
        return world, resolve_device(device_name)
    wants_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if wants_cuda:
        if not torch.cuda.is_available():
            raise CellclrError(f"device {device_name!r} was asked for but CUDA is not available")
        if world.local_rank >= torch.cuda.device_count():
            raise CellclrError(
                f"process {world.rank} wants cuda:{world.local_rank} but this node has "
                f"{torch.cuda.device_count()} GPUs: start at most that many per node"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        options: dict[str, Any] = {"timeout": timedelta(seconds=timeout)}
        if (
            device.type == "cuda"
            and "device_id" in inspect.signature(dist.init_process_group).parameters
        ):
            # bound to this process's GPU (torch >= 2.3): no collective can pick another one
            options["device_id"] = device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **options)
        _waiting_group()  # made now, while every process is here
    return world, device


def _waiting_group() -> Any:
    """The gloo group the barriers use, with the long timeout (made once per process group, by
    every process)."""
    global _wait_group
    if _wait_group is None or _wait_group[0] is not dist.group.WORLD:
        _wait_group = (dist.group.WORLD, dist.new_group(backend="gloo", timeout=WAIT))
    return _wait_group[1]


def barrier(world: World) -> None:
    """Every process waits here for the others, however long the main process works alone
    (``WAIT``): on a gloo group of its own, not subject to ``train.dist_timeout``."""
    if world.distributed:
        dist.barrier(group=_waiting_group())


def leave(world: World, wait: bool = True) -> None:
    """Meet the other processes (``wait``), then leave the process group: a process that
    leaves while another still works breaks NCCL's shutdown (it waits for its peers from torch
    2.6 on and can hang before)."""
    global _wait_group
    if dist.is_available() and dist.is_initialized():
        if wait and world.distributed:
            barrier(world)
        _wait_group = None
        dist.destroy_process_group()


def broadcast(obj: Any, world: World) -> Any:
    """The main process's ``obj``, on every process."""
    if not world.distributed:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(x: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``x`` over the processes (no gradient)."""
    if world.distributed:
        x = x.clone()
        dist.all_reduce(x)
        x /= world.size
    return x


def all_sum(x: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``x`` over the processes (no gradient)."""
    if world.distributed:
        x = x.clone()
        dist.all_reduce(x)
    return x


def all_max(x: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class _Gather(torch.autograd.Function):
    """All-gather along dim 0 that passes each process the gradient of its own rows, summed over
    the processes that used them (an all-reduce, which gloo and NCCL both have)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


class _Sum(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the sum of every process's output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` concatenated in rank order, with gradients to their owners."""
    return _Gather.apply(x)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation with statistics over every process's batch, for CPU process groups
    (``torch.nn.SyncBatchNorm`` runs on GPUs only): per-channel sums, sums of squares and counts
    are all-reduced, with gradients."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        sync = self.training and dist.is_initialized() and dist.get_world_size() > 1
        if not sync:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                self.training or self.running_mean is None, self.momentum, self.eps,
            )  # fmt: skip
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *([1] * (x.dim() - 2))]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        local = torch.cat([x.double().sum(dims), (x.double() ** 2).sum(dims), count])
        total = _Sum.apply(local)
        c = x.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean**2).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.float(), alpha=m)
                self.running_var.mul_(1 - m).add_((var * n / (n - 1)).float(), alpha=m)
        scale = torch.rsqrt(var + self.eps).float().view(shape)
        y = (x - mean.float().view(shape)) * scale
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm synchronised over the processes."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        new = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
