"""The encoders (cellclr.learning.backbones): any channel count, the stems."""

import pytest
import torch

from cellclr.learning.backbones import build_encoder


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


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown arch"):
        build_encoder("vgg", 3)
    with pytest.raises(ValueError, match="unknown stem"):
        build_encoder("resnet18", 3, stem="big")
