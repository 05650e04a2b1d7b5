"""The NT-Xent (normalised temperature-scaled cross-entropy) loss of SimCLR."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    gather: Gather | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """NT-Xent over two batches of projections, where ``z1[i]`` and ``z2[i]`` are two views of
    one image; every other view in the (global) batch is a negative.

    Written as cross-entropy over the rows of the 2N x 2N cosine-similarity matrix (self
    similarity masked out). For data parallelism, ``gather`` concatenates a tensor from all
    processes in rank order, passing gradients back to their owners (a GatherLayer), and
    ``rank`` is this process's index: each process scores its own 2n rows against all 2N
    columns, and the mean over processes equals the single-process loss on the whole batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"expected two (N, D) batches of equal shape, got {z1.shape} and {z2.shape}"
        )
    n = z1.shape[0]
    q1, q2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    k1, k2 = (gather(q1), gather(q2)) if gather is not None else (q1, q2)
    total = k1.shape[0]
    queries = torch.cat([q1, q2])  # (2n, D)
    keys = torch.cat([k1, k2])  # (2N, D)
    logits = queries @ keys.T / temperature
    local = torch.arange(n, device=z1.device) + rank * n
    self_cols = torch.cat([local, local + total])
    positive_cols = torch.cat([local + total, local])
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, self_cols] = float("-inf")
    return F.cross_entropy(logits, positive_cols)
