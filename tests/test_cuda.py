"""The CUDA path (bf16 autocast, channels-last, pinned memory, keyed augmentations on the GPU).
Marked ``cuda``: skipped on machines without a GPU; ``bench/gpu_check.sh`` runs them on one."""

import numpy as np
import pandas as pd
import pytest
import torch

from cellclr.config import AugmentConfig
from cellclr.learning.augment import Augmenter
from cellclr.learning.batches import CropBatches
from cellclr.learning.embed import embed
from cellclr.learning.rng import cell_keys
from cellclr.learning.train import train
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
