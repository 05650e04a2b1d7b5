"""The DINO loss (Caron et al. 2021): the student's distribution over prototypes matches the
centred, sharpened distribution of the momentum teacher, for every pair of a teacher view (the
global views) and a different student view (global and local)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> torch.Tensor:
    """Mean over pairs (t, s), s != t, of the cross-entropy
    ``-sum_k softmax((g_t - c) / tt)_k * log_softmax(g_s / ts)_k``, averaged over the batch.

    ``student``: the logits of every view, global views first; ``teacher``: the logits of the
    global views (no gradient); ``center``: (K,) running mean of the teacher's logits.
    """
    targets = [F.softmax((t.float() - center) / teacher_temperature, dim=1) for t in teacher]
    log_probs = [F.log_softmax(s.float() / student_temperature, dim=1) for s in student]
    total, pairs = 0.0, 0
    for i, target in enumerate(targets):
        for j, log_p in enumerate(log_probs):
            if i == j:
                continue
            total = total + (-(target * log_p).sum(dim=1)).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def updated_center(
    center: torch.Tensor, teacher: list[torch.Tensor], momentum: float, batch_mean=None
) -> torch.Tensor:
    """The running centre after one step: ``m c + (1 - m) mean(teacher logits)``; the batch
    mean may be given (e.g. averaged over processes)."""
    mean = torch.cat(teacher).float().mean(dim=0) if batch_mean is None else batch_mean
    return center * momentum + mean * (1 - momentum)
