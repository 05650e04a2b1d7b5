"""SimCLR's model: projection head and batch adversary (cellclr.learning.methods.simclr)."""

import torch

from cellclr.config import load_config
from cellclr.learning.backbones import build_encoder
from cellclr.learning.methods.simclr import SimCLR
from tests.helpers import tiny_config


def test_simclr_projects_features():
    cfg = load_config(None, ["simclr.proj_hidden=64", "simclr.proj_dim=16"])
    model = SimCLR(build_encoder("resnet_small", 3), cfg)
    z = model(torch.rand(4, 3, 16, 16))
    assert z.shape == (4, 16)
    z.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_the_batch_adversary_reverses_its_gradient_into_the_encoder():
    """The adversary's cross-entropy trains its own weights as usual and reaches the encoder
    multiplied by -w: the encoder's gradient is -w times what the plain classifier gives it."""
    import torch.nn.functional as F

    from cellclr.learning.methods import build_method
    from cellclr.learning.methods.simclr import ReverseGradient

    x = torch.randn(4, 3, requires_grad=True)
    (ReverseGradient.apply(x, 0.3) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))

    cfg = tiny_config("train.batch_adversary=0.5")
    model = build_method(cfg, 3, n_batches=3).eval()
    crops = torch.rand(6, 3, 16, 16)
    codes = torch.tensor([0, 1, 2, 0, 1, 2])
    _, logits = model(crops)
    F.cross_entropy(logits, codes).backward()
    reversed_grads = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    head_grad = model.adversary.weight.grad.clone()
    model.zero_grad()
    F.cross_entropy(model.adversary(model.encoder(crops)), codes).backward()
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(reversed_grads[name], -0.5 * p.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head_grad, model.adversary.weight.grad)
