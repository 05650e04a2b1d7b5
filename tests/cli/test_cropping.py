"""The crop verb's options (cellclr.cli.cropping)."""

import pytest

from cellclr.cli import main
from tests.cropping.test_stage import crop_args


@pytest.mark.parametrize(
    "value,message",
    [
        ("2/2", "shard 2/2: I counts from 0 and must lie in 0..1"),
        ("-1/3", "shard -1/3: I counts from 0 and must lie in 0..2"),
        ("a/b", "'a/b' is not I/N"),
        ("0/0", "shard 0/0: N, the number of shards, must be at least 1"),
        ("1", "'1' is not I/N"),
        ("1/2/3", "'1/2/3' is not I/N"),
    ],
)
def test_bad_shard_values_are_refused(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as stop:
        main(crop_args(tmp_path / "sites.csv", tmp_path / "crops", f"--shard={value}"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --shard" in err and message in err
    assert not (tmp_path / "crops").exists()


@pytest.mark.parametrize("value", ["-1/3", "-2/-3"])
def test_a_negative_shard_is_checked_like_any_other(tmp_path, capsys, value):
    args = ["crop", "--bbbc021", str(tmp_path), "--out", str(tmp_path / "c")]
    messages = []
    for shard in (["--shard", value], [f"--shard={value}"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, *shard])
        assert stop.value.code == 2
        messages.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert messages[0] == messages[1]  # not "expected one argument"
    assert f"argument --shard: shard {value}: " in messages[0]
