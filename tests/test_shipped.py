"""The shipped configs: addressed by name, listed and shown by `cellclr configs`."""

import json
import tomllib
from pathlib import Path

import pytest

import cellclr
from cellclr.cli import main
from cellclr.config import ConfigError, load_config
from cellclr.shipped import description, shipped_names, shipped_path
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files

FOLDER = Path(cellclr.__file__).parent / "configs"
EXPECTED = {
    "bbbc021-cpu",
    "bbbc021-dino-cpu",
    "bbbc021-gpu",
    "bbbc021-supcon-cpu",
    "cellpainting-cpu",
    "cellpainting-gpu",
    "demo",
}


def test_the_shipped_configs_are_the_package_files():
    assert set(shipped_names()) == EXPECTED
    assert {p.stem for p in FOLDER.glob("*.toml")} == EXPECTED
    assert not (Path(__file__).parents[1] / "configs").exists()  # one copy: the package's


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shipped_config_loads_and_describes_itself(name):
    path = shipped_path(name)
    assert path == FOLDER / f"{name}.toml"
    assert load_config(name) == load_config(path)  # validated: a bad key would raise
    assert tomllib.loads(path.read_text())  # a TOML document, not the defaults
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and description(name) == first[2:].strip()
    assert 20 < len(description(name)) <= 100  # one line of `cellclr configs`


def test_a_name_loads_the_same_config_as_its_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the checkout
    by_name = load_config("bbbc021-cpu", ["train.epochs=3"])
    assert by_name == load_config(FOLDER / "bbbc021-cpu.toml", ["train.epochs=3"])
    assert by_name.data.sampler == "balanced" and by_name.train.epochs == 3
    assert load_config(Path("bbbc021-cpu"), ["train.epochs=3"]) == by_name  # a Path too


def test_a_file_wins_over_a_name_and_paths_work_as_before(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("bbbc021-cpu").write_text("[train]\nepochs = 7\n")  # an existing file is a path
    assert load_config("bbbc021-cpu").train.epochs == 7
    Path("mine.toml").write_text("[train]\nepochs = 9\n")
    assert load_config("mine.toml").train.epochs == 9  # relative, no separator: a path


@pytest.mark.parametrize("value", ["nope", "bbbc021-cpu.toml", "configs/bbbc021-cpu.toml"])
def test_unknown_names_and_missing_files_list_the_shipped_names(monkeypatch, tmp_path, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(value)
    message = str(error.value)
    if value == "nope":
        assert message.startswith("config 'nope': neither a file nor a shipped config")
    else:  # a path (separator or .toml) is never looked up by name
        assert message.startswith(f"config file not found: {value}")
    assert all(name in message for name in EXPECTED)


def test_compare_takes_names_and_checks_them_all_first(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--configs", "bbbc021-cpu", "nope", "--crops", "x", "--out", "cmp"]
    assert main(args) == 2
    assert "config 'nope': neither a file nor a shipped config" in capsys.readouterr().err
    assert not Path("cmp").exists()  # nothing ran


def test_cellpainting_cpu_trains_from_a_folder_that_is_not_the_checkout(
    monkeypatch, tmp_path, capsys
):
    images, cells = make_crop_files(tmp_path / "input", n_channels=5, size=24)
    channels = ["DNA", "ER", "RNA", "AGP", "Mito"]
    import_crops(images, cells, tmp_path / "crops", channels)
    monkeypatch.chdir(tmp_path)
    sets = ["train.epochs=1", "train.device='cpu'", "train.threads=1"]
    args = ["train", "--crops", "crops", "--out", "model", "--config", "cellpainting-cpu"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    out = capsys.readouterr().err
    # 56 cells, fewer than the config's batch of 128: clamped, and said
    assert (
        "train.batch_size=128 is more than the store's 56 cells: training on batches of 56" in out
    )
    saved = load_config(Path("model") / "config.toml")
    assert saved == load_config("cellpainting-cpu", sets)
    assert json.loads(Path("model", "stage.json").read_text())["batch_size"] == 56
