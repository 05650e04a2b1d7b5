"""The supervised contrastive loss (Khosla et al. 2020, "SupCon", the L_out form): the views of
cells that share a label are all positives of each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellclr.learning.losses.nt_xent import Gather


def supcon(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    gather: Gather | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """SupCon over two views per cell: for anchor i, the mean over its positives p (the other
    view of its cell and both views of every other cell with its label) of
    ``-log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``, averaged over the anchors.

    With one cell per label it is NT-Xent. ``gather`` and ``rank`` work as in ``nt_xent``: each
    process scores its own rows against every process's views (labels are gathered too).
    """
    if z1.shape != z2.shape or z1.ndim != 2 or labels.shape != z1.shape[:1]:
        raise ValueError(f"expected (N, D) views and (N,) labels, got {z1.shape}, {labels.shape}")
    n = z1.shape[0]
    q1, q2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    k1, k2 = (gather(q1), gather(q2)) if gather is not None else (q1, q2)
    all_labels = gather(labels[:, None].float()).squeeze(1).long() if gather else labels
    total = k1.shape[0]
    queries, keys = torch.cat([q1, q2]), torch.cat([k1, k2])  # (2n, D), (2N, D)
    logits = queries @ keys.T / temperature
    local = torch.arange(n, device=z1.device) + rank * n
    rows = torch.arange(2 * n, device=z1.device)
    self_cols = torch.cat([local, local + total])
    not_self = torch.ones_like(logits, dtype=torch.bool)
    not_self[rows, self_cols] = False
    key_labels = torch.cat([all_labels, all_labels])
    positive = (torch.cat([labels, labels])[:, None] == key_labels[None, :]) & not_self
    log_prob = (
        logits - torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1)[:, None]
    )
    per_anchor = -(log_prob * positive).sum(dim=1) / positive.sum(dim=1)
    return per_anchor.mean()
