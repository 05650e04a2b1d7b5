"""The CUDA path (bf16 autocast, channels-last, pinned memory, keyed augmentations on the GPU, a
training step without device-to-host synchronisation, DINO logits in float32).
Marked ``cuda``: skipped on machines without a GPU; ``bench/gpu_check.sh`` runs them on one."""

import numpy as np
import pandas as pd
import pytest
import torch

from cellclr.config import AugmentConfig
from cellclr.learning.augment import Augmenter
from cellclr.learning.batches import CropBatches
from cellclr.learning.device import autocast, grad_scaler, precision
from cellclr.learning.distributed import World
from cellclr.learning.embed import embed
from cellclr.learning.methods import Batch, build_method
from cellclr.learning.methods.dino import DINOHead
from cellclr.learning.optim import build_optimizer
from cellclr.learning.rng import cell_keys, view_keys
from cellclr.learning.train import train, train_step
from cellclr.store import CropStore
from tests.helpers import tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_augmentations_on_the_gpu_match_the_cpu():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keys = cell_keys(7, 3, torch.arange(16), 0)
    aug = Augmenter(AugmentConfig(size=24))
    torch.testing.assert_close(aug(x.cuda(), keys.cuda()).cpu(), aug(x, keys), atol=1e-4, rtol=0)


def test_batches_are_normalised_on_the_gpu_in_channels_last(store):
    s = CropStore(store)
    norm = s.normalization("plate", 100)
    idx = [np.arange(10)]
    on_gpu = next(iter(CropBatches(s, norm, idx, torch.device("cuda"))))
    on_cpu = next(iter(CropBatches(s, norm, idx, torch.device("cpu"))))
    assert on_gpu.is_cuda and on_gpu.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)


def test_train_and_embed_in_bf16_on_the_gpu(store, tmp_path):
    cfg = tiny_config("train.device='cuda'", "embed.device='cuda'")
    model = train(store, tmp_path / "model", cfg)
    assert '"device": "cuda' in (model / "stage.json").read_text()
    gpu = embed(model, store, tmp_path / "gpu", cfg)
    cpu = embed(model, store, tmp_path / "cpu", tiny_config())
    a = pd.read_parquet(gpu / "embeddings.parquet").filter(like="emb_").to_numpy()
    b = pd.read_parquet(cpu / "embeddings.parquet").filter(like="emb_").to_numpy()
    assert np.isfinite(a).all()
    # bf16 keeps about 3 significant digits: close to the float32 features, not equal
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()


def test_a_training_step_does_not_wait_for_the_gpu():
    """torch's sync debug mode raises at any device-to-host synchronisation in the step."""
    cfg = tiny_config("train.device='cuda'", "augment.elastic_p=0.5")
    cuda = torch.device("cuda")
    model = build_method(cfg, 3).to(cuda, memory_format=torch.channels_last)
    opt = build_optimizer(model.trained(), "lars", 0.1, 1e-4)
    keys = view_keys(0, 1, torch.arange(16, device=cuda)[None], range(model.views))
    x = torch.rand(16, 3, 20, 20, device=cuda).contiguous(memory_format=torch.channels_last)
    batch = Batch(x, lambda view: keys[view, 0], None, gather=None, world=World())
    train_step(model.trained(), model, opt, grad_scaler(cuda), batch)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            train_step(model.trained(), model, opt, grad_scaler(cuda), batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_dino_logits_stay_float32_under_cuda_autocast():
    head = DINOHead(64, 128, 32, 256).cuda()
    with autocast(torch.device("cuda")):
        logits = head(torch.randn(8, 64, device="cuda"))
    assert logits.dtype == torch.float32
    assert precision(torch.device("cuda")) in ("bf16", "fp16")
