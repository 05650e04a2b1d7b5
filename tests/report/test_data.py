"""Reading a run for the report (cellclr.report.data): a damaged file is named."""

import re
import shutil
from pathlib import Path

import pytest

from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.report import ReportError, write_report
from tests.report.test_page import copy_run


def test_folder_without_any_stage_is_an_error(tmp_path: Path) -> None:
    # a run without eval/ gets a report (test_run_without_eval_renders_what_exists)
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(
        ReportError, match=r"empty is not a cellclr run: it has none of crops/"
    ) as info:
        write_report(tmp_path / "empty")
    assert isinstance(info.value, CellclrError)
    assert not (tmp_path / "empty" / "report.html").exists()


def test_truncated_or_corrupt_files_name_the_file(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cellclr.cli.main import main

    folder = copy_run(finished_run, tmp_path / "broken", "crops")
    metrics = folder / "eval" / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2])
    with pytest.raises(ReportError, match=re.escape(f"{metrics}: not valid JSON")):
        write_report(folder)
    metrics.write_text(text)
    for name in ("treatments", "wells"):
        table = folder / "profiles" / f"{name}.parquet"
        good = table.read_bytes()
        table.write_text("Metadata_Plate,Metadata_Well\nP1,A01\n")
        with pytest.raises(ReportError, match=re.escape(f"{table}: not a parquet table")):
            write_report(folder)
        capsys.readouterr()
        assert main(["report", "--run", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cellclr: error: {table}: not a parquet table (")
        assert len(err.strip().splitlines()) == 1
        table.write_bytes(good)
    assert not (folder / "report.html").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])  # mid-line, mid-object, without the footer


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("eval/metrics.json", _truncate, "not valid JSON"),
        ("eval/metrics.json", lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8"),
        ("eval/metrics.json", lambda p: p.write_text("[1, 2]"), "not a JSON object"),
        ("profiles/treatments.parquet", lambda p: p.write_text("a,b\n1,2\n"), "not a parquet"),
        ("profiles/wells.parquet", _truncate, "not a parquet"),
        ("eval/nsc.parquet", _truncate, "not a parquet"),
        ("model/train_log.jsonl", _truncate, "not valid JSON lines"),
        ("baselines/random/eval/metrics.json", _truncate, "not valid JSON"),
        ("baselines/random/profiles/treatments.parquet", _truncate, "not a parquet"),
    ],
)
def test_a_damaged_file_of_the_run_is_named(finished_run, tmp_path, capsys, name, damage, problem):
    damaged = tmp_path / "damaged"
    shutil.copytree(finished_run, damaged, ignore=shutil.ignore_patterns("crops"))
    damage(damaged / name)
    assert main(["report", "--run", str(damaged)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cellclr: error: {damaged / name}: "), err
    assert problem in err[0]
    assert not (damaged / "report.html").exists()
