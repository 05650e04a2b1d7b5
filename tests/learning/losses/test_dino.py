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


def dino_reference(
    student: np.ndarray, teacher: np.ndarray, center: np.ndarray, ts: float, tt: float, m: float
) -> tuple[float, np.ndarray]:
    """DINO's loss and centre update as the authors' code computes them (Caron et al. 2021,
    "Emerging Properties in Self-Supervised Vision Transformers", Algorithm 1; their
    facebookresearch/dino, main_dino.py, class DINOLoss), re-derived here as matrices.

    ``student``: (V*B, K) logits of V views of B images, view by view, the 2 global views
    first; ``teacher``: (2*B, K) logits of the global views. The teacher's distribution is
    softmax((t - center) / tt); each pair (teacher view i, student view v) with v != i scores
    the cross-entropy -sum_k P_t * log softmax(s / ts), averaged over the images; the loss is
    the mean over the pairs. The centre then moves by an EMA of the teacher's batch mean:
    m * center + (1 - m) * mean of the teacher's logits over its 2*B rows."""
    b = len(teacher) // 2
    t = (teacher - center) / tt
    p = np.exp(t - t.max(axis=1, keepdims=True))
    p = (p / p.sum(axis=1, keepdims=True)).reshape(2, b, -1)
    s = student / ts
    log_q = s - s.max(axis=1, keepdims=True)
    log_q = (log_q - np.log(np.exp(log_q).sum(axis=1, keepdims=True))).reshape(-1, b, p.shape[2])
    cross = -np.einsum("ibk,vbk->iv", p, log_q) / b  # (teacher view, student view)
    pairs = np.ones_like(cross, dtype=bool)
    pairs[[0, 1], [0, 1]] = False  # no pair of a view with itself
    return float(cross[pairs].mean()), m * center + (1 - m) * teacher.mean(axis=0)


@pytest.mark.parametrize("local_views", [0, 2, 6])
def test_dino_loss_and_centre_equal_dinos_published_formula(local_views):
    g = torch.Generator().manual_seed(local_views)
    b, k, ts, tt, m = 5, 11, 0.1, 0.04, 0.9
    student = [torch.randn(b, k, generator=g) * 3 for _ in range(2 + local_views)]
    teacher = [torch.randn(b, k, generator=g) * 3 for _ in range(2)]
    center = torch.randn(k, generator=g)
    loss, new_center = dino_reference(
        torch.cat(student).double().numpy(),
        torch.cat(teacher).double().numpy(),
        center.double().numpy(),
        ts,
        tt,
        m,
    )
    assert dino_loss(student, teacher, center, ts, tt).item() == pytest.approx(loss, rel=1e-5)
    got = updated_center(center, teacher, m)
    np.testing.assert_allclose(got.numpy(), new_center, rtol=1e-5, atol=1e-6)
