"""The parser's argument types (cellclr.cli.common)."""

import pytest

from cellclr.cli import main


@pytest.mark.parametrize(
    "args,message",
    [
        (["download", "bbbc021", "--out", "x", "--retries", "0"], "below the minimum"),
        (["crop", "--bbbc021", "x", "--out", "y", "--box", "abc"], "not an integer"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
