import errno
from pathlib import Path

import pytest

from cellclr.cli import main
from cellclr.config import ConfigError, load_config, save_config
from tests.helpers import tiny_config


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 7\nlr = 0.01\n[augment]\ncrop_scale = [0.5, 1.0]\n")
    cfg = load_config(path, ["train.epochs=3", "model.arch=resnet18", "augment.flip=false"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.model.arch == "resnet18" and cfg.augment.flip is False
    assert cfg.augment.crop_scale == [0.5, 1.0]
    assert cfg.train.batch_size == 256  # default kept


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "augment.blur_sigma=[0.2, 1.0]"])
    save_config(cfg, tmp_path / "saved.toml")
    assert load_config(tmp_path / "saved.toml") == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", "unknown key train.epoch"),
        ("training.epochs=3", "unknown section"),
        ("train.epochs=many", "expected an integer"),
        ("train.epochs", "expected section.key=value"),
        ("augment.crop_scale=[1]", "list of 2"),
        ("augment.flip=1", "true or false"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    "override",
    ["model.arch='vgg16'", "train.optimizer='sgd'", "data.normalize='tile'", "model.stem='huge'"],
)
def test_choices_are_checked_at_load(override):
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(None, [override])


def test_a_full_disk_while_saving_names_the_file(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as info:
        save_config(load_config(None), tmp_path / "config.toml")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "config.toml")


def test_a_config_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: is a folder, not a file \\(--config"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=inf", "train.lr: expected a finite number"),
        ("train.temperature=nan", "train.temperature: expected a finite number"),
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


def test_supcon_refuses_moa_labels():
    with pytest.raises(ValueError, match="MoA labels would train on the answer"):
        tiny_config("train.method='supcon'", "train.label='moa'")
