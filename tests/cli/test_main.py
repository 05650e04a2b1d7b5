"""The CLI's entry point (cellclr.cli.main): help, and every error one line naming the file and
the problem, exit code 2 (``--debug`` shows the traceback)."""

import logging
import os

import pytest

import cellclr
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


def test_every_option_of_every_verb_has_help():
    import argparse

    from cellclr.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in verbs.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing


def test_an_unknown_option_shows_the_verbs_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--crops", "x", "--out", "y", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage: cellclr train" in err and "unrecognized arguments: --bogus" in err


def test_lists_are_written_either_way_and_inputs_are_named_alike():
    from cellclr.cli.main import build_parser

    parser = build_parser()
    a = parser.parse_args(
        ["crop", "--bbbc021", "d", "--out", "o", "--plates", "P1,P2", "--wells", "A01"]
    )
    b = parser.parse_args(
        ["crop", "--bbbc021", "d", "--out", "o", "--plates", "P1", "P2", "--wells", "A01"]
    )
    from cellclr.cli.common import channel_list

    assert channel_list(a.plates) == channel_list(b.plates) == ["P1", "P2"]
    c = parser.parse_args(["crop", "--loaddata", "t", "--out", "o", "--channels", "DNA", "ER"])
    assert channel_list(c.channels) == ["DNA", "ER"]
    new = parser.parse_args(["predict", "--reference", "r", "--features", "t.csv", "--out", "o"])
    old = parser.parse_args(
        ["predict", "--reference", "r", "--query-features", "t.csv", "--out", "o"]
    )
    assert new.query_features == old.query_features
    base = parser.parse_args(["baseline", "--kind", "random", "--out", "run"])
    assert base.out == parser.parse_args(["baseline", "--kind", "random", "--run", "run"]).out
    download = parser.parse_args(["download", "--dataset", "bbbc021", "--out", "d"])
    assert download.dataset == "bbbc021"


EPOCH = '{"epoch": 1, "loss": '


def train_args(store, out) -> list[str]:
    """A tiny training whose batch (64) is larger than the store (56 cells): it logs a warning
    (the batch is clamped) and a progress note per epoch (INFO)."""
    return ["train", "--crops", str(store), "--out", str(out), *sets("train.batch_size=64")]


def clamped(store) -> str:
    return f"cellclr: warning: {store}: train.batch_size=64 is more than the store's 56 cells"


def test_messages_go_to_stderr_and_quiet_keeps_only_warnings(tmp_path, store, capsys):
    assert main(train_args(store, tmp_path / "loud")) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH in said.err  # a warning, and a progress note
    assert said.out == f"model: {tmp_path / 'loud'}\n"  # the result alone on stdout
    assert main(["--quiet", *train_args(store, tmp_path / "quiet")]) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH not in said.err
    assert said.out == f"model: {tmp_path / 'quiet'}\n"  # a result is not a message: shown
    assert main(["-q", *train_args(store, tmp_path / "q")]) == 0
    assert EPOCH not in capsys.readouterr().err


def test_verbose_shows_debugging_messages(capsys):
    line = f"cellclr {cellclr.__version__}: cellclr"
    assert main(["configs"]) == 0
    assert line not in capsys.readouterr().err
    assert main(["-v", "configs"]) == 0
    assert f"{line} -v configs\n" in capsys.readouterr().err
    assert main(["--verbose", "configs"]) == 0
    assert f"{line} --verbose configs\n" in capsys.readouterr().err


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["-q", "-v", "configs"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_under_torchrun_other_processes_show_warnings_only(tmp_path, store, capsys, monkeypatch):
    """RANK 1 (torchrun's second process; alone here, as WORLD_SIZE is unset): no progress
    notes and no results, but its warnings."""
    monkeypatch.setenv("RANK", "1")
    assert main(train_args(store, tmp_path / "m1")) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH not in said.err and said.out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(train_args(store, tmp_path / "m0")) == 0
    said = capsys.readouterr()
    assert EPOCH in said.err and said.out == f"model: {tmp_path / 'm0'}\n"


def test_the_cellclr_logger_is_left_as_it_was():
    """``main`` called from Python (a notebook, a test) leaves no handler or level behind."""
    logger = logging.getLogger("cellclr")
    before = (list(logger.handlers), logger.level)
    assert main(["-q", "configs"]) == 0
    assert main(["configs", "show", "nothing-of-that-name"]) == 2
    assert (list(logger.handlers), logger.level) == before
