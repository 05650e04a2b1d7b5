"""The channels the report shows and their colours (cellclr.report.channels)."""

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w

from cellclr.errors import CellclrError
from cellclr.report import load_run, sections, write_report
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files

CELL_PAINTING = ["DNA", "ER", "RNA", "AGP", "Mito"]


def with_store(finished_run: Path, tmp_path: Path, channels: list[str], name: str) -> Path:
    """A copy of the finished run whose crop store has the given channels."""
    folder = tmp_path / name
    shutil.copytree(finished_run, folder, ignore=shutil.ignore_patterns("crops", "report.html"))
    images, cells = make_crop_files(tmp_path / f"{name}-input", n_channels=len(channels))
    import_crops(images, cells, folder / "crops", channels)
    return folder


def set_report_channels(run_folder: Path, names: list[str]) -> None:
    path = run_folder / "model" / "config.toml"
    config = tomllib.loads(path.read_text())
    config["report"] = {"channels": names}
    path.write_text(tomli_w.dumps(config))


def swatches(page: str) -> list[str]:
    return re.findall(r'<span class="chip" style="background:rgb\([\d,]+\)"></span>([^ <]+)', page)


def test_five_channel_store_gets_a_legend_naming_them(finished_run: Path, tmp_path: Path) -> None:
    folder = with_store(finished_run, tmp_path, CELL_PAINTING, "five")
    cells = sections.example_cells(load_run(folder))
    assert [c["name"] for c in cells["channels"]] == CELL_PAINTING
    assert len({c["rgb"] for c in cells["channels"]}) == 5 and not cells["hidden"]
    page = write_report(folder, tmp_path / "five.html").read_text()
    assert swatches(page) == CELL_PAINTING
    assert 'alt="legend: one cell, each channel alone in its colour"' in page


def test_report_channels_chooses_and_orders_them(finished_run: Path, tmp_path: Path) -> None:
    folder = with_store(finished_run, tmp_path, CELL_PAINTING, "three")
    set_report_channels(folder, ["Mito", "DNA", "AGP"])
    cells = sections.example_cells(load_run(folder))
    assert [c["name"] for c in cells["channels"]] == ["Mito", "DNA", "AGP"]
    assert [c["colour"] for c in cells["channels"]] == ["blue", "green", "red"]
    assert cells["hidden"] == "ER, RNA"
    page = write_report(folder, tmp_path / "three.html").read_text()
    assert swatches(page) == ["Mito", "DNA", "AGP"] and "not shown: ER, RNA" in page


def test_many_channels_default_to_the_first_six(finished_run: Path, tmp_path: Path) -> None:
    names = [f"C{i}" for i in range(8)]
    folder = with_store(finished_run, tmp_path, names, "eight")
    cells = sections.example_cells(load_run(folder))
    assert [c["name"] for c in cells["channels"]] == names[:6] and cells["hidden"] == "C6, C7"
    set_report_channels(folder, names)  # all 8, when asked
    assert len(sections.example_cells(load_run(folder))["channels"]) == 8


def test_unknown_report_channel_is_an_error(finished_run: Path, tmp_path: Path) -> None:
    folder = with_store(finished_run, tmp_path, CELL_PAINTING, "unknown")
    set_report_channels(folder, ["DNA", "Tubulin"])
    with pytest.raises(CellclrError, match=r"unknown channel Tubulin: .* has DNA, ER, RNA, AGP"):
        write_report(folder, tmp_path / "unknown.html")
    assert not (tmp_path / "unknown.html").exists()
    set_report_channels(folder, ["DNA", "DNA"])
    with pytest.raises(CellclrError, match="twice"):
        write_report(folder, tmp_path / "twice.html")
