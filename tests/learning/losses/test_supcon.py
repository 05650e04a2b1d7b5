"""SupCon (cellclr.learning.losses.supcon) against Khosla et al.'s formula written element by
element."""

import math

import numpy as np
import pytest
import torch

from cellclr.learning.losses import nt_xent, supcon


def direct_supcon(z1, z2, labels, t):
    """Khosla et al.'s L_out, anchor by anchor."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = np.concatenate([labels, labels])
    total = 0.0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denom = sum(math.exp(z[i] @ z[a] / t) for a in others)
        positives = [p for p in others if y[p] == y[i]]
        total += -sum(math.log(math.exp(z[i] @ z[p] / t) / denom) for p in positives) / len(
            positives
        )
    return total / len(z)


@pytest.mark.parametrize("labels", [[0, 0, 1, 2, 1, 0], [5, 5, 5, 5, 5, 5], [0, 1, 1, 2, 3, 3]])
def test_supcon_matches_direct_formula(labels):
    g = torch.Generator().manual_seed(len(set(labels)))
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor(labels)
    expected = direct_supcon(z1.numpy(), z2.numpy(), np.array(labels), 0.2)
    assert supcon(z1, z2, y, 0.2).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_with_one_cell_per_label_is_nt_xent():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    torch.testing.assert_close(supcon(z1, z2, torch.arange(9), 0.3), nt_xent(z1, z2, 0.3))


def test_supcon_distributed_form_equals_single_process():
    """Two simulated processes whose gather returns every process's tensors, in the order the
    loss asks for them (first views, second views, labels): the mean of their losses is the
    single-process loss."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0])
    everyone = [
        torch.nn.functional.normalize(z1, dim=1),
        torch.nn.functional.normalize(z2, dim=1),
        y[:, None].float(),
    ]
    parts = []
    for rank in range(2):
        rows = slice(4 * rank, 4 * rank + 4)
        gather = iter(everyone).__next__  # one call per gathered tensor, in order
        parts.append(supcon(z1[rows], z2[rows], y[rows], 0.3, lambda _, g=gather: g(), rank))
    torch.testing.assert_close((parts[0] + parts[1]) / 2, supcon(z1, z2, y, 0.3))
