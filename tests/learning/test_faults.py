"""Training and embedding faults: a non-finite loss, corrupt torch files, a full disk, bad
config values. Each is one clear error, and what was saved stays usable."""

import errno
import json
from pathlib import Path

import pytest
import torch

import cellclr.learning.methods.simclr as simclr_module
from cellclr.cli import main
from cellclr.config import ConfigError, load_config
from cellclr.learning.checkpoints import CheckpointError
from cellclr.learning.embed import embed
from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import CHECKPOINT, LOG, NonFiniteLossError, train
from tests.helpers import error_part, tiny_config
from tests.learning.test_train import assert_same_weights, weights
from tests.test_cli import sets


def nan_loss_at(monkeypatch, epoch: int, step: int) -> None:
    """Make the loss NaN at one step of one epoch (1-based)."""
    real = simclr_module.nt_xent
    calls = {"n": 0}
    steps = 3  # 56 cells / batch 16

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == (epoch - 1) * steps + step else value

    monkeypatch.setattr(simclr_module, "nt_xent", loss)


def test_non_finite_loss_stops_and_the_last_checkpoint_resumes(store, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=3")
    whole = train(store, tmp_path / "whole", cfg)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        nan_loss_at(m, epoch=2, step=2)
        with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 2 of 3"):
            train(store, out, cfg)
    partial = tmp_path / "run.partial"
    assert not out.exists()
    saved = torch.load(partial / CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 1  # the last good one
    for line in (partial / LOG).read_text().splitlines():
        assert json.loads(line, parse_constant=pytest.fail)["epoch"] == 1  # strict JSON
    train(store, out, cfg, resume=True)
    assert_same_weights(weights(whole), weights(out))


def test_non_finite_loss_through_the_cli(store, tmp_path, monkeypatch, capsys):
    nan_loss_at(monkeypatch, epoch=1, step=1)
    assert main(["train", "--crops", str(store), "--out", str(tmp_path / "m"), *sets()]) == 2
    err = error_part(capsys.readouterr().err).strip()
    assert (
        err.count("\n") == 0
        and "epoch 1, step 1" in err
        and "to continue from that checkpoint" in err
    )


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


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=inf", "train.lr: expected a finite number"),
        ("simclr.temperature=nan", "simclr.temperature: expected a finite number"),
        ("train.weight_decay=nan", "train.weight_decay: expected a finite number"),
        ("augment.noise_std=inf", "augment.noise_std: expected a finite number"),
        ("augment.brightness=nan", "augment.brightness: expected a finite number"),
        ("train.device=tpu", "train.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("train.seed=9223372036854775807", "train.seed: 9223372036854775807 is out of range"),
    ],
)
def test_bad_config_values_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin.toml"
    path.write_bytes("[train]\nepochs = 1  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml: not UTF-8 text"):
        load_config(path)
    args = ["train", "--crops", str(tmp_path), "--out", str(tmp_path / "m"), "--config", str(path)]
    assert main(args) == 2
    assert "latin.toml: not UTF-8" in capsys.readouterr().err
