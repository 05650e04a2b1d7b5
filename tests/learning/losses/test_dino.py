"""The DINO loss (cellclr.learning.losses.dino)."""

import numpy as np
import pytest
import torch

from cellclr.learning.losses import dino_loss, updated_center


def direct_dino(student, teacher, center, ts, tt):
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        p = np.exp((t - center) / tt)
        p /= p.sum(axis=1, keepdims=True)
        for j, s in enumerate(student):
            if i == j:
                continue
            log_q = s / ts - np.log(np.exp(s / ts).sum(axis=1, keepdims=True))
            total += (-(p * log_q).sum(axis=1)).mean()
            pairs += 1
    return total / pairs


def test_dino_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(5, 7, generator=g) for _ in range(4)]  # 2 global + 2 local
    teacher = [torch.randn(5, 7, generator=g) for _ in range(2)]
    center = torch.randn(7, generator=g) * 0.1
    expected = direct_dino(
        [s.double().numpy() for s in student],
        [t.double().numpy() for t in teacher],
        center.double().numpy(),
        0.1,
        0.04,
    )
    got = dino_loss(student, teacher, center, 0.1, 0.04)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dino_centre_is_a_running_mean():
    teacher = [torch.ones(3, 4), 3 * torch.ones(3, 4)]
    new = updated_center(torch.zeros(4), teacher, 0.9)
    torch.testing.assert_close(new, torch.full((4,), 0.2))
