"""The training methods (cellclr.learning.methods) end to end on a tiny store, and the batch
adversary."""

import json

import numpy as np
import pytest
import torch

from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import train
from tests.helpers import tiny_config

DINO_TINY = ["dino.out_dim=32", "dino.hidden=16", "dino.bottleneck=8", "dino.local_size=8"]


@pytest.mark.parametrize(
    "method,supervision",
    [("simclr", "none"), ("supcon", "weak: treatment labels"), ("dino", "none")],
)
def test_one_epoch_of_each_method(store, tmp_path, method, supervision):
    cfg = tiny_config(f"train.method='{method}'", "train.epochs=1", *DINO_TINY)
    out = train(store, tmp_path / method, cfg)
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["method"] == method and manifest["supervision"] == supervision
    log = json.loads((out / "train_log.jsonl").read_text())
    assert np.isfinite(log["loss"]) and log["loss"] > 0
    saved = torch.load(out / MODEL, weights_only=True)["encoder"]
    assert "stem.0.weight" in saved  # a plain backbone, as embed expects


def test_a_batch_adversary_trains(store, tmp_path):
    from cellclr.config import ConfigError
    from cellclr.learning.saved_model import load_encoder
    from cellclr.learning.train import train

    out = train(store, tmp_path / "adv", tiny_config("train.epochs=1", "train.batch_adversary=0.5"))
    encoder, _ = load_encoder(out, torch.device("cpu"))
    assert all(torch.isfinite(p).all() for p in encoder.parameters())
    dino = tiny_config("train.method='dino'", "train.batch_adversary=1")
    with pytest.raises(ConfigError, match="batch_adversary works with simclr and supcon"):
        train(store, tmp_path / "dino", dino)
