import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.pipeline import run
from cellclr.report import ReportError, load_run, sections, write_report
from cellclr.report.figures import channel_colours, composite
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files, tiny_config

HEADINGS = [
    "Results",
    "Training",
    "Nearest neighbours",
    "MoA confusion",
    "Treatment profile map",
    "Example cells",
    "Config and stage timings",
]
PNG = '<img src="data:image/png;base64,'


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run with its crop store in run/crops and a fake 'random' baseline."""
    tmp = tmp_path_factory.mktemp("report")
    images, cells = make_crop_files(tmp / "input")
    folder = tmp / "run"
    crops = import_crops(images, cells, folder / "crops", ["DNA", "Tubulin", "Actin"])
    run(tiny_config(), out=folder, crops=crops)
    baseline = folder / "baselines" / "random"
    (baseline / "eval").mkdir(parents=True)
    metrics = {"nsc": {"correct": 1, "total": 6}, "nscb": {"correct": 0, "total": 6}}
    (baseline / "eval" / "metrics.json").write_text(json.dumps({**metrics, "drop_pct": 16.667}))
    shutil.copytree(folder / "profiles", baseline / "profiles")
    return folder


def test_report_is_self_contained_and_complete(finished_run: Path, tmp_path: Path) -> None:
    out = write_report(finished_run, tmp_path / "report.html")
    assert out == tmp_path / "report.html" and out.is_file()
    page = out.read_text()
    assert 'src="http' not in page and "<script src" not in page and "<link" not in page
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    positions = [page.index(f"<h2>{h}</h2>") for h in HEADINGS]
    assert positions == sorted(positions)

    metrics = json.loads((finished_run / "eval" / "metrics.json").read_text())
    for key in ("nsc", "nscb"):
        assert f"{metrics[key]['correct']}/{metrics[key]['total']} (" in page
    assert "<td>random</td>" in page and "1/6 (16.7%)" in page and "16.7 points" in page
    # training, confusion, one map each for the run and the baseline, example cells
    assert page.count(PNG) >= 5
    nsc = pd.read_parquet(finished_run / "eval" / "nsc.parquet")
    for compound, conc in zip(nsc["Metadata_Compound"], nsc["Metadata_Concentration"], strict=True):
        assert f'{compound} <span class="muted">{conc:g}</span>' in page
    assert "<pre>" in page and "[train]" in page and "epochs = 2" in page


def test_default_output_is_in_the_run_folder(finished_run: Path) -> None:
    try:
        assert write_report(finished_run) == finished_run / "report.html"
        assert (finished_run / "report.html").stat().st_size > 0
        with pytest.raises(CellclrError, match="--overwrite"):
            write_report(finished_run)  # an existing report is kept ...
        write_report(finished_run, overwrite=True)  # ... unless asked
    finally:
        (finished_run / "report.html").unlink(missing_ok=True)


def test_missing_optional_parts_give_notes(finished_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(finished_run, bare, ignore=shutil.ignore_patterns("crops", "baselines"))
    manifest = bare / "model" / "stage.json"
    stage = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**stage, "crops": str(tmp_path / "gone")}))
    (bare / "model" / "train_log.jsonl").unlink()

    page = write_report(bare, tmp_path / "bare.html").read_text()
    assert "the crop store could not be opened" in page
    assert "no training log" in page
    assert "no baselines in this run" in page
    assert page.count(PNG) == 2  # confusion and the run's map
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page


def test_run_data_is_escaped(finished_run: Path, tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    run_copy = tmp_path / "hostile"
    shutil.copytree(finished_run, run_copy, ignore=shutil.ignore_patterns("crops", "baselines"))
    nsc = pd.read_parquet(run_copy / "eval" / "nsc.parquet")
    nsc.loc[0, "Metadata_Compound"] = hostile
    nsc.to_parquet(run_copy / "eval" / "nsc.parquet")
    config_path = run_copy / "model" / "config.toml"
    config = tomllib.loads(config_path.read_text())
    config["model"]["arch"] = hostile
    config_path.write_text(tomli_w.dumps(config))

    page = write_report(run_copy, tmp_path / "hostile.html").read_text()
    assert "<script" not in page
    assert '&lt;script&gt;alert(1)&lt;/script&gt; <span class="muted">' in page  # the table
    assert "Model &lt;script&gt;alert(1)&lt;/script&gt; (" in page  # the facts line
    assert "arch = &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;" in page  # the config


def test_unfinished_run_is_an_error(finished_run: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished_run, unfinished, ignore=shutil.ignore_patterns("crops", "eval"))
    with pytest.raises(ReportError, match=r"eval/metrics\.json is missing") as info:
        write_report(unfinished)
    assert isinstance(info.value, CellclrError)
    assert not (unfinished / "report.html").exists()


def test_composite_draws_dna_blue_tubulin_green_actin_red() -> None:
    crops = np.zeros((3, 3, 4, 4), np.uint16)
    for c in range(3):
        crops[c, c] = 1000  # crop c is bright in channel c only
    rgb = composite(crops)
    assert rgb.shape == (3, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert [int(rgb[c].mean(axis=(0, 1)).argmax()) for c in range(3)] == [2, 1, 0]
    five = composite(np.random.default_rng(0).integers(0, 4000, (2, 5, 4, 4)).astype(np.uint16))
    assert five.shape == (2, 4, 4, 3) and five.max() <= 1


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


def test_composite_gives_each_of_five_channels_its_own_colour() -> None:
    crops = np.zeros((5, 5, 4, 4), np.uint16)
    for c in range(5):
        crops[c, c] = 1000  # crop c is bright in channel c only
    rgb = composite(crops)
    colours = channel_colours(5)
    for c in range(5):
        np.testing.assert_allclose(rgb[c].mean(axis=(0, 1)), colours[c], atol=1e-6)
    assert len({tuple(c) for c in colours}) == 5
    for n in range(1, 9):  # any count up to 8: distinct colours, one channel in grey
        assert len({tuple(c) for c in channel_colours(n)}) == n
    assert channel_colours(1).tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(CellclrError, match="1 to 8 channels"):
        channel_colours(9)


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


def test_baselines_are_described() -> None:
    assert sections.about("cellprofiler", {}) == "CellProfiler's measurements (cp_measure)"
    assert sections.about("classic", {}) == "CellProfiler-like features"


# ---- issue 18 item 7: a damaged file of the run is one error naming it ------------------------


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
