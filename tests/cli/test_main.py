"""The CLI's entry point (cellclr.cli.main): help, and every error one line naming the file and
the problem, exit code 2 (``--debug`` shows the traceback)."""

import os

import pytest

from cellclr.cli import main
from tests.helpers import one_line_error, sets


def test_a_permission_error_is_one_line(store, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        args = ["train", "--crops", str(store), "--out", str(locked / "m"), *sets()]
        assert main(args) == 2
        assert "Permission denied" in one_line_error(capsys)
    finally:
        os.chmod(locked, 0o700)


def test_a_missing_input_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = ["profile", "--embeddings", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")]
    assert main(missing) == 2
    assert "nowhere is not a finished cellclr output" in one_line_error(capsys)
    with pytest.raises(FileNotFoundError):
        main(["--debug", *missing])


def test_errors_are_one_line(tmp_path, crop_files, capsys):
    assert main(["run", "--crops", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not a crop store" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "r")]) == 2
    assert "pass --crops" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--crops",
                str(tmp_path),
                "--out",
                str(tmp_path / "m"),
                "--set",
                "train.epoch=1",
            ]
        )
        == 2
    )
    assert "unknown key train.epoch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "verb", ["", "import-crops", "train", "embed", "profile", "evaluate", "run"]
)
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"] if verb else ["--help"])
    assert e.value.code == 0
    assert "usage: cellclr" in capsys.readouterr().out


def test_bad_config_values_are_one_line(tmp_path, store, capsys):
    assert (
        main(
            [
                "train",
                "--crops",
                str(store),
                "--out",
                str(tmp_path / "m"),
                "--set",
                "train.checkpoint_every=0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("cellclr: error:") and "checkpoint_every" in err and "Traceback" not in err
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()
