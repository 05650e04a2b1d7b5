"""NT-Xent (cellclr.learning.losses.nt_xent) against SimCLR's formula written anchor by anchor."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellclr.learning.losses.nt_xent import nt_xent


def direct_nt_xent(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR's loss written out anchor by anchor, as in the paper's algorithm."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / t) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (7, 16, 0.1), (16, 8, 1.0)])
def test_matches_direct_formula(n, d, t):
    g = torch.Generator().manual_seed(n * d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    expected = direct_nt_xent(z1.numpy().astype(np.float64), z2.numpy().astype(np.float64), t)
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-5)


def test_known_value():
    # Two orthogonal images, two identical views each: every anchor sees its positive at
    # similarity 1 and two negatives at 0, so the loss is log(1 + 2 exp(-1/t)).
    z = torch.eye(2)
    t = 0.5
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(
        math.log(1 + 2 * math.exp(-2)), rel=1e-6
    )


def test_gradient_flows_and_scale_invariant():
    z1 = torch.randn(5, 4, requires_grad=True)
    z2 = torch.randn(5, 4)
    loss = nt_xent(z1, z2, 0.2)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    assert nt_xent(3 * z1, z2, 0.2).item() == pytest.approx(loss.item(), rel=1e-5)


def test_distributed_form_equals_single_process():
    """Split a batch over 2 simulated processes whose gather returns every process's normalised
    projections with gradients (as a GatherLayer does): the mean of the per-process losses
    equals the single-process loss, and so do the gradients."""
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(8, 6, generator=g, requires_grad=True)
    z2 = torch.randn(8, 6, generator=g, requires_grad=True)
    single = nt_xent(z1, z2, 0.3)
    grads_single = torch.autograd.grad(single, [z1, z2])

    world, n = 2, 4
    losses = []
    for rank in range(world):
        views = iter([z1, z2])  # nt_xent gathers view 1, then view 2

        def gather(local, views=views):
            return F.normalize(next(views), dim=1)  # all processes' rows, in rank order

        part = slice(rank * n, (rank + 1) * n)
        losses.append(nt_xent(z1[part], z2[part], 0.3, gather=gather, rank=rank))
    distributed = torch.stack(losses).mean()
    assert distributed.item() == pytest.approx(single.item(), rel=1e-6)
    for got, expected in zip(torch.autograd.grad(distributed, [z1, z2]), grads_single, strict=True):
        torch.testing.assert_close(got, expected)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(torch.randn(3, 4), torch.randn(4, 4))
