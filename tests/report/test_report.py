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
from cellclr.report.plates import (
    distance_to_reference,
    plate_format,
    plate_wells,
    row_name,
    well_position,
)
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
    # confusion, the run's map, the layout of its 2 plates and its phenotypic activity
    assert page.count(PNG) == 5
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


def test_folder_without_any_stage_is_an_error(tmp_path: Path) -> None:
    # a run without eval/ gets a report (test_run_without_eval_renders_what_exists)
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(
        ReportError, match=r"empty is not a cellclr run: it has none of crops/"
    ) as info:
        write_report(tmp_path / "empty")
    assert isinstance(info.value, CellclrError)
    assert not (tmp_path / "empty" / "report.html").exists()


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


# ---- runs without MoA, without treatments, with only some stages (issue 16, part 4) ----------

NO_MOA = "no MoA annotation (Metadata_MoA): NSC, NSCB and MoA mAP need it"
NO_TREATMENTS = "no treatment columns (Metadata_Compound, Metadata_Concentration) in the store"
# activity of the six non-control treatments, in treatments.parquet order
ACTIVITY_MAP = [0.9, 0.2, 0.6, 1.0, 0.4, 0.75]
ACTIVITY_Q = [0.01, 0.6, 0.04, 0.002, 0.3, 0.2]
LABEL_FREE_HEADINGS = [
    "Results",
    "Training",
    "Plate layout",
    "Phenotypic activity",
    "Phenotypic consistency",
    "Well profile map",
    "Example cells",
    "Config and stage timings",
]


def headings(page: str) -> list[str]:
    return re.findall(r"<h2>([^<]+)</h2>", page)


def body_rows(html: str) -> list[list[str]]:
    """The cells of each table body row in an HTML fragment."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html.split("<tbody>", 1)[1], re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}">')
    return page[start : page.index("</section>", start)]


def drop_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    table = pd.read_parquet(path).drop(columns=columns, errors="ignore")
    table.to_parquet(path)
    return table


def copy_run(finished_run: Path, folder: Path, *skip: str) -> Path:
    shutil.copytree(
        finished_run, folder, ignore=shutil.ignore_patterns("baselines", "report.html", *skip)
    )
    return folder


def label_free_eval(folder: Path) -> dict:
    """Rewrite the run's eval/ as evaluate writes it without MoA (schema of issue 16): activity
    and consistency by a target column, no NSC; the store and profiles lose Metadata_MoA."""
    for path in (folder / "crops" / "cells.parquet", *(folder / "profiles").glob("*.parquet")):
        drop_columns(path, ["Metadata_MoA"])
    treatments = pd.read_parquet(folder / "profiles" / "treatments.parquet")
    treated = treatments[treatments["Metadata_Compound"] != "DMSO"].reset_index(drop=True)
    assert len(treated) == len(ACTIVITY_MAP)
    shutil.rmtree(folder / "eval")
    (folder / "eval").mkdir()
    keys = treated[["Metadata_Compound", "Metadata_Concentration", "Metadata_Wells"]]
    q = np.array(ACTIVITY_Q)
    headline = keys.assign(mAP=ACTIVITY_MAP, p_value=q / 2, q_value=q, retrieved=q < 0.05)
    other = headline.assign(mAP=0.4321, Variant="dmso")
    pd.concat([headline.assign(Variant="none"), other]).to_parquet(
        folder / "eval" / "activity.parquet"
    )
    consistency = pd.DataFrame(
        {
            "Annotation": "Metadata_Target",
            "Value": ["T1", "T2"],
            "Treatments": [3, 3],
            "mAP": [0.8125, 0.25],
            "p_value": [0.001, 0.5],
            "q_value": [0.002, 0.5],
            "retrieved": [True, False],
            "Variant": "none",
        }
    )
    consistency.to_parquet(folder / "eval" / "consistency.parquet")
    activity = {
        "map": float(np.mean(ACTIVITY_MAP)),
        "retrieved": 0.5,
        "n_retrieved": 3,
        "treatments": 6,
        "threshold": 0.05,
        "null_size": 1000,
        "replicates": "other_plates",
    }
    target = {"map": 0.53125, "retrieved": 0.5, "groups": 2, "treatments": 6}
    metrics = {
        "variant": "none",
        "levels": {"cells": 56, "wells": 14, "plates": 2, "treatments": 7, "controls": 2},
        "skipped": {"nsc": NO_MOA, "consistency:Metadata_Pathway": "no such column"},
        "activity": activity,
        "consistency": {"Metadata_Target": target},
        "variants": {
            "none": {"activity": activity, "consistency": {"Metadata_Target": target}, "notes": []},
            "dmso": {"activity": {**activity, "map": 0.4321}, "notes": []},
        },
        "skipped_variants": {"tvn": "batches with one control well"},
        "training": {"method": "simclr", "supervision": "none"},
    }
    (folder / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def test_label_free_run_shows_activity_instead_of_nsc(finished_run: Path, tmp_path: Path) -> None:
    folder = copy_run(finished_run, tmp_path / "label-free")
    label_free_eval(folder)
    page = write_report(folder, tmp_path / "label-free.html").read_text()
    assert headings(page) == LABEL_FREE_HEADINGS  # no neighbours, no MoA confusion
    assert '<div class="label">Activity</div><div class="value">3/6 retrieved</div>' in page
    assert "mean mAP 0.642; q &lt; 0.05" in page  # mean of ACTIVITY_MAP
    assert '<div class="value">14</div><div class="sub">on 2 plates</div>' in page
    assert '<div class="value">56</div>' in page and "NSCB" not in page.split("<nav>")[0]
    # results: NSC not computed, activity of each variant, and what was skipped, with why
    none, dmso = body_rows(section(page, "results"))
    assert none[2:] == ["none", *["–"] * 7, "0.642", "3/6 (50%)"]
    assert dmso[2:] == ["dmso", *["–"] * 7, "0.432", "3/6 (50%)"]
    assert f"cellclr (this run): NSC, NSCB and MoA mAP not computed: {NO_MOA}" in page
    assert "cellclr (this run): post-processing tvn not computed:" in page
    # the activity table: the headline variant's treatments by mAP, descending
    rows = body_rows(section(page, "activity"))
    assert [float(r[2]) for r in rows] == sorted(ACTIVITY_MAP, reverse=True)
    assert rows[0][0] == 'c1 <span class="muted">1</span>' and rows[0][3:5] == ["0.001", "0.002"]
    assert sum(r[5] == '<span class="ok">✓</span>' for r in rows) == 3
    consistency = section(page, "consistency")
    assert "Metadata_Target" in consistency and "mean mAP 0.531, 1/2 (50%) retrieved" in consistency
    assert body_rows(consistency)[0][:3] == ["T1", "3", "0.812"]
    assert "Metadata_Pathway: not computed: no such column" in consistency
    # training, 2 plates, activity figure, well map, example cells and their legend
    assert page.count(PNG) == 7
    cells = sections.example_cells(load_run(folder))
    assert cells["grouping"] == "compound" and "per compound" in page


def test_run_without_treatments(finished_run: Path, tmp_path: Path) -> None:
    folder = copy_run(finished_run, tmp_path / "no-treatments")
    treatment = ["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]
    for path in (folder / "crops" / "cells.parquet", folder / "profiles" / "wells.parquet"):
        drop_columns(path, treatment)
    (folder / "profiles" / "treatments.parquet").unlink()
    shutil.rmtree(folder / "eval")
    (folder / "eval").mkdir()
    skipped = {m: NO_TREATMENTS for m in ("treatments", "activity", "consistency")}
    levels = {"cells": 56, "wells": 14, "plates": 2, "treatments": None, "controls": 0}
    metrics = {"variant": "none", "levels": levels, "skipped": {"nsc": NO_MOA, **skipped}}
    (folder / "eval" / "metrics.json").write_text(json.dumps(metrics))

    page = write_report(folder, tmp_path / "no-treatments.html").read_text()
    assert headings(page) == LABEL_FREE_HEADINGS
    assert '<div class="label">Activity</div><div class="value">–</div>' in page
    assert f"no treatments known ({NO_TREATMENTS}), 14 wells on 2 plates" in page
    assert f"cellclr (this run): phenotypic activity not computed: {NO_TREATMENTS}" in page
    assert f"not computed: {NO_TREATMENTS}" in section(page, "activity")
    assert page.count("to the median well (no treatments known)") == 2
    # training, 2 plates, well map (by plate only), example cells and legend
    assert page.count(PNG) == 6
    cells = sections.example_cells(load_run(folder))
    assert cells["grouping"] == "well" and "from each of 8 random wells" in page


def test_run_without_eval_renders_what_exists(finished_run: Path, tmp_path: Path) -> None:
    folder = copy_run(finished_run, tmp_path / "no-eval", "eval")
    page = write_report(folder, tmp_path / "no-eval.html").read_text()
    missing = str(folder / "eval" / "metrics.json")
    assert f"not evaluated: {missing} is missing" in page
    assert "<h2>Nearest neighbours</h2>" not in page and "<h2>Results</h2>" in page
    assert "not evaluated ·" in page  # the header's meta line
    # training, 2 plates, the MoA map of treatments and wells, example cells and legend
    assert "<h2>Treatment profile map</h2>" in page and page.count(PNG) == 6


def test_run_with_crops_and_model_only(finished_run: Path, tmp_path: Path) -> None:
    folder = copy_run(finished_run, tmp_path / "trained", "eval", "profiles", "embeddings")
    page = write_report(folder, tmp_path / "trained.html").read_text()
    wells = str(folder / "profiles" / "wells.parquet")
    assert f"no well profiles: {wells} is missing." in page
    assert "Cells per well are counted in the crop store" in page
    assert str(folder / "eval" / "metrics.json") in page
    assert '<div class="value">14</div>' in page and '<div class="value">56</div>' in page
    # training, the 2 plates' cell counts, example cells by MoA and legend
    assert page.count(PNG) == 5 and "per MoA" in page


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


def test_well_names_and_plate_formats() -> None:
    assert well_position("A01") == (0, 0) and well_position("B03") == (1, 2)
    assert well_position("p24") == (15, 23) and well_position("AF48") == (31, 47)
    assert well_position("AA1") == (26, 0) and well_position("H012") == (7, 11)
    assert [row_name(r) for r in (0, 7, 25, 26, 31)] == ["A", "H", "Z", "AA", "AF"]
    for bad in ("B", "03", "B00", "B-3", "r01c01", ""):
        with pytest.raises(ValueError, match="not a well name"):
            well_position(bad)
    assert plate_format(2, 8) == (8, 12) and plate_format(8, 12) == (8, 12)  # 96
    assert plate_format(9, 3) == (16, 24) and plate_format(3, 13) == (16, 24)  # 384
    assert plate_format(16, 25) == (32, 48) and plate_format(32, 48) == (32, 48)  # 1536
    assert plate_format(40, 2) == (40, 2)  # larger than any standard plate: its own extent


def test_distance_to_controls_is_the_cosine_distance_to_their_mean() -> None:
    x = np.random.default_rng(1).normal(size=(9, 5))
    controls = np.zeros(9, bool)
    controls[[2, 7]] = True
    got, used = distance_to_reference(x, controls)
    mean = x[[2, 7]].mean(axis=0)
    expected = 1 - x @ mean / (np.linalg.norm(x, axis=1) * np.linalg.norm(mean))
    assert used and np.allclose(got, expected, atol=1e-12)
    got, used = distance_to_reference(x, np.zeros(9, bool))  # no controls: the median well
    median = np.median(x, axis=0)
    expected = 1 - x @ median / (np.linalg.norm(x, axis=1) * np.linalg.norm(median))
    assert not used and np.allclose(got, expected, atol=1e-12)


def test_plate_wells_measure_each_plate_against_its_own_controls(
    finished_run: Path, tmp_path: Path
) -> None:
    wells = pd.read_parquet(finished_run / "profiles" / "wells.parquet")
    found = plate_wells(load_run(finished_run))
    assert found is not None
    layout, source, bad = found
    assert source == "profiles" and not bad and len(layout) == len(wells) == 14
    x = wells[[c for c in wells if not c.startswith("Metadata_")]].to_numpy(np.float64)
    for plate in wells["Metadata_Plate"].unique():
        on = (wells["Metadata_Plate"] == plate).to_numpy()
        control = x[on & (wells["Metadata_Compound"] == "DMSO").to_numpy()].mean(axis=0)
        expected = 1 - x[on] @ control / (np.linalg.norm(x[on], axis=1) * np.linalg.norm(control))
        mine = layout[layout["Metadata_Plate"] == plate]
        assert np.allclose(mine["Distance"], expected, atol=1e-9)
        assert mine["Control"].sum() == 1 and mine["Reference"].iloc[0] == "the mean of 1 DMSO well"
    assert layout["Row"].eq(1).all() and sorted(layout["Column"].unique()) == list(range(1, 8))
    assert layout["Cells"].tolist() == wells["Metadata_Cells"].tolist()
    # a plate without control wells is measured against its median well, and says so
    no_dmso = copy_run(finished_run, tmp_path / "no-dmso", "crops")
    table = pd.read_parquet(no_dmso / "profiles" / "wells.parquet")
    table.loc[table["Metadata_Plate"] == "Week2_1001", "Metadata_Compound"] = "e1"
    table.to_parquet(no_dmso / "profiles" / "wells.parquet")
    layout, _, _ = plate_wells(load_run(no_dmso))
    week2 = layout[layout["Metadata_Plate"] == "Week2_1001"]
    assert set(week2["Reference"]) == {"the median well (no DMSO well on this plate)"}
    on = (wells["Metadata_Plate"] == "Week2_1001").to_numpy()
    median = np.median(x[on], axis=0)
    expected = 1 - x[on] @ median / (np.linalg.norm(x[on], axis=1) * np.linalg.norm(median))
    assert np.allclose(week2["Distance"], expected, atol=1e-9)


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
