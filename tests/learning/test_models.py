import pytest
import torch

from cellclr.config import load_config
from cellclr.learning.backbones import build_encoder
from cellclr.learning.methods.simclr import SimCLR


@pytest.mark.parametrize("arch,dim", [("resnet_small", 256), ("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("channels", [1, 5])
def test_encoders_any_channel_count(arch, dim, channels):
    encoder = build_encoder(arch, channels, stem="small2").eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, dim) and encoder.out_dim == dim


@pytest.mark.parametrize("stem", ["small", "small2", "imagenet"])
def test_stems(stem):
    encoder = build_encoder("resnet_small", 3, stem=stem).eval()
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 256)


def test_simclr_projects_features():
    cfg = load_config(None, ["simclr.proj_hidden=64", "simclr.proj_dim=16"])
    model = SimCLR(build_encoder("resnet_small", 3), cfg)
    z = model(torch.rand(4, 3, 16, 16))
    assert z.shape == (4, 16)
    z.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown arch"):
        build_encoder("vgg", 3)
    with pytest.raises(ValueError, match="unknown stem"):
        build_encoder("resnet18", 3, stem="big")
