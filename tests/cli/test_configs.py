"""``cellclr configs`` (cellclr.cli.configs): the shipped configs listed and shown."""

from cellclr.cli import main
from cellclr.config import load_config
from cellclr.shipped import description
from tests.test_shipped import EXPECTED, FOLDER


def test_configs_lists_every_config_with_its_description(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(EXPECTED)
    for line in lines:
        name, text = line.split(maxsplit=1)
        assert text == description(name)


def test_configs_show_prints_a_config_verbatim(capsys, tmp_path):
    assert main(["configs", "show", "cellpainting-cpu"]) == 0
    text = capsys.readouterr().out
    assert text == (FOLDER / "cellpainting-cpu.toml").read_text()
    copy = tmp_path / "my.toml"  # `cellclr configs show NAME > my.toml`, then edit
    copy.write_text(text)
    assert load_config(copy) == load_config("cellpainting-cpu")


def test_configs_show_an_unknown_name_lists_the_names(capsys):
    assert main(["configs", "show", "bbbc021"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("cellclr: error: 'bbbc021' is not a shipped config (")
    assert all(name in captured.err for name in EXPECTED)
