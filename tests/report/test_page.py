"""The HTML report (cellclr.report.page): self-contained, its sections, and what it shows of runs
without MoA, without treatments, or with only some stages."""

import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from cellclr.errors import CellclrError
from cellclr.report import load_run, sections, write_report

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
    assert none[2:] == ["none", *["–"] * 7, "0.642", "3/6 (50%)", "–", "–"]
    assert dmso[2:] == ["dmso", *["–"] * 7, "0.432", "3/6 (50%)", "–", "–"]
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
