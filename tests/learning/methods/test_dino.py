"""DINO's model: the momentum teacher, the head's float32 logits (cellclr.learning.methods.dino)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellclr.learning.distributed import World
from cellclr.learning.methods import Batch, build_method
from cellclr.learning.methods.dino import DINOHead
from cellclr.learning.rng import view_keys
from tests.helpers import CountOps, tiny_config
from tests.learning.losses.test_dino import dino_reference
from tests.learning.test_methods import DINO_TINY


def test_dino_teacher_follows_the_student_by_its_momentum():
    cfg = tiny_config("train.method='dino'", "dino.teacher_momentum=0.9", *DINO_TINY)
    dino = build_method(cfg, 3)
    with torch.no_grad():
        for p in dino.student.parameters():
            p.add_(1.0)
    before = [t.clone() for t in dino.teacher.parameters()]
    dino.after_step(0.0)  # momentum 0.9 at the start
    for t, b, s in zip(dino.teacher.parameters(), before, dino.student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    before = [t.clone() for t in dino.teacher.parameters()]
    dino.after_step(1.0)  # momentum 1 at the end: the teacher stays
    for t, b in zip(dino.teacher.parameters(), before, strict=True):
        torch.testing.assert_close(t, b)
    assert dino.encoder_to_keep() is dino.teacher.encoder


def test_dino_logits_are_not_rounded_to_bf16_under_autocast():
    """The targets divide the logits by 0.04: the prototype layer computes in float32, from the
    (bf16) MLP's hidden features, even under bf16 autocast."""
    torch.manual_seed(0)
    head = DINOHead(64, 128, 32, 256)
    h = torch.randn(64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(h)
        hidden = head.mlp[:-1](h)
    assert hidden.dtype == torch.bfloat16  # the MLP keeps the speed of bf16
    x = F.normalize(head.mlp[-1](hidden.float()), dim=-1)
    exact = x @ F.normalize(head.prototypes.weight, dim=1).T
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, exact, atol=1e-6, rtol=0)
    # what bf16 logits would have been off by, in units of the teacher's temperature
    assert (exact.bfloat16().float() - exact).abs().max() / 0.04 > 0.02


def test_dino_teacher_update_is_a_few_operations_whatever_the_number_of_parameters():
    calls = []
    for arch in ("resnet_small", "resnet18"):  # 4x as many parameter tensors
        dino = build_method(tiny_config("train.method='dino'", f"model.arch='{arch}'"), 3)
        with CountOps() as count:
            dino.after_step(0.5)
        calls.append(count.calls)
    assert calls[0] == calls[1]


def test_a_dino_step_scores_dinos_published_loss_and_moves_the_centre():
    """The loss of a step of the method (two global and two local views of 8 cells through the
    student, the global ones through the teacher) is DINO's formula (``dino_reference``) on the
    logits the student and the teacher gave, with the centre before the step; the centre then
    moves by the EMA of the teacher's batch mean."""
    cfg = tiny_config("train.method='dino'", "dino.local_views=2", *DINO_TINY)
    dino = build_method(cfg, 3).train()
    with torch.no_grad():
        dino.center.copy_(
            torch.randn(dino.center.shape, generator=torch.Generator().manual_seed(1))
        )
    center = dino.center.clone()
    logits = {}
    for name in ("student", "teacher"):
        getattr(dino, name).register_forward_hook(
            lambda module, args, out, name=name: logits.__setitem__(name, out.detach().clone())
        )
    x = torch.rand(8, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    keys = view_keys(0, 1, torch.arange(8)[None], range(dino.views))
    batch = Batch(x, lambda view: keys[view, 0], None, gather=None, world=World())
    loss = dino.loss(dino.trained(), batch)
    assert logits["student"].shape == (4 * 8, 32) and logits["teacher"].shape == (2 * 8, 32)
    d = cfg.dino
    expected, new_center = dino_reference(
        logits["student"].double().numpy(),
        logits["teacher"].double().numpy(),
        center.double().numpy(),
        d.student_temperature,
        d.teacher_temperature,
        d.center_momentum,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(dino.center.numpy(), new_center, rtol=1e-5, atol=1e-6)
