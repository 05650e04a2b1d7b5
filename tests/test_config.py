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


def test_every_key_is_documented_and_the_reference_is_up_to_date():
    from pathlib import Path

    from cellclr.config import Config
    from cellclr.config.reference import reference

    for name, section in Config.model_fields.items():
        model = section.annotation
        assert model.__doc__, f"[{name}] has no description"
        for key, field in model.model_fields.items():
            assert field.description, f"{name}.{key} has no description"
    page = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert page.read_text() == reference(), (
        "docs/configuration.md is out of date: python -m cellclr.config.reference > "
        "docs/configuration.md"
    )
    for name, section in Config.model_fields.items():
        for key in section.annotation.model_fields:
            assert f"| `{key}` |" in reference().split(f"## `[{name}]`")[1]


def test_a_moved_key_says_where_it_went(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("[train]\ntemperature = 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.temperature is now simclr\.temperature"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"evaluate\.control is now screen\.control"):
        load_config(None, ["evaluate.control='PBS'"])


def test_overrides_as_a_dict():
    cfg = load_config(None, {"train.epochs": 3, "screen.control": "PBS"})
    assert cfg.train.epochs == 3 and cfg.screen.control == "PBS"
    assert cfg == load_config(None, ["train.epochs=3", "screen.control='PBS'"])
    with pytest.raises(ConfigError, match=r"override train\.epochs='3'"):
        load_config(None, {"train.epochs": "3"})  # strict: a string is not an integer


def test_runtime_keys_leave_the_fingerprint_alone():
    from cellclr.fingerprint import fingerprint

    base = load_config(None)
    for override in ("train.device='cpu'", "train.threads=1", "embed.batch_size=7"):
        other = load_config(None, [override])
        section = override.split(".")[0]
        assert fingerprint("x", [], base, (section,)) == fingerprint("x", [], other, (section,))
    other = load_config(None, ["train.epochs=3"])
    assert fingerprint("x", [], base, ("train",)) != fingerprint("x", [], other, ("train",))


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


def test_supcon_refuses_moa_labels():
    with pytest.raises(ValueError, match="MoA labels would train on the answer"):
        tiny_config("train.method='supcon'", "supcon.label='moa'")
