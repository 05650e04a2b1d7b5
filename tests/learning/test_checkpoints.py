"""Checkpoints and saved models on disk (cellclr.learning.checkpoints): a corrupt file is one
clear error, and a full disk keeps the last checkpoint usable."""

import errno
from pathlib import Path

import pytest
import torch

from cellclr.cli import main
from cellclr.learning.checkpoints import CheckpointError
from cellclr.learning.embed import embed
from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import CHECKPOINT, train
from tests.helpers import tiny_config
from tests.learning.test_train import assert_same_weights, weights


def test_corrupt_checkpoint_and_model_are_named(store, tmp_path, capsys):
    cfg = tiny_config()
    good = train(store, tmp_path / "good", cfg)
    partial = tmp_path / "m.partial"
    partial.mkdir()
    (partial / CHECKPOINT).write_bytes((good / CHECKPOINT).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: the checkpoint is truncated"):
        train(store, tmp_path / "m", cfg, resume=True)
    (partial / CHECKPOINT).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"m\.partial to start again"):
        train(store, tmp_path / "m", cfg, resume=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("stage.json", "config.toml"):
        (bad / name).write_bytes((good / name).read_bytes())
    (bad / MODEL).write_bytes((good / MODEL).read_bytes()[:500])
    args = ["embed", "--model", str(bad), "--crops", str(store), "--out", str(tmp_path / "e")]
    assert main(args) == 2
    assert f"{bad / MODEL}: the trained model is truncated" in capsys.readouterr().err
    torch.save({"weights": 1}, bad / MODEL)
    with pytest.raises(CheckpointError, match="not a cellclr trained model"):
        embed(bad, store, tmp_path / "e", cfg)


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(store, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=3")
    real = Path.write_bytes
    writes = {"n": 0}

    def write_bytes(self, data):
        if self.name.startswith(f".{CHECKPOINT}."):
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError, match="No space left") as caught:
        train(store, tmp_path / "m", cfg)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "m.partial" / CHECKPOINT)
    assert torch.load(tmp_path / "m.partial" / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "m.partial").glob(".*.tmp"))  # no half-written file left
    monkeypatch.undo()
    train(store, tmp_path / "m", cfg, resume=True)
    assert_same_weights(weights(train(store, tmp_path / "w", cfg)), weights(tmp_path / "m"))
