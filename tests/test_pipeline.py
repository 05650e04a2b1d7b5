"""``cellclr run`` on screens without labels: wells always, treatments and measures where the
annotations allow, a plate map joined later."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cellclr.cli import main
from cellclr.store import CropStore
from tests.helpers import TINY_OVERRIDES, make_crop_files


def sets(*extra: str) -> list[str]:
    return [arg for override in (*TINY_OVERRIDES, *extra) for arg in ("--set", override)]


def unannotated_store(tmp_path: Path) -> Path:
    images, cells = make_crop_files(tmp_path / "input")
    table = pd.read_csv(cells)
    platemap = table.groupby(["Metadata_Plate", "Metadata_Well"], as_index=False).first()
    platemap = platemap[["Metadata_Plate", "Metadata_Well", "Metadata_Compound"]].assign(
        Metadata_Concentration=platemap["Metadata_Concentration"],
        Metadata_MoA=platemap["Metadata_MoA"],
    )
    platemap.to_csv(tmp_path / "platemap.csv", index=False)
    table.drop(columns=["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]).to_csv(
        cells, index=False
    )
    out = tmp_path / "crops"
    assert (
        main(["import-crops", "--images", str(images), "--cells", str(cells), "--out", str(out)])
        == 0
    )
    return out


def test_run_without_treatments_profiles_wells_and_says_what_it_skipped(tmp_path, capsys):
    crops = unannotated_store(tmp_path)
    assert "Metadata_Compound" not in CropStore(crops).cells
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--crops", str(crops), "--out", str(run), *sets()]) == 0
    out = capsys.readouterr().out
    assert "skipped activity: no Metadata_Compound, Metadata_Concentration in the wells" in out
    wells = pd.read_parquet(run / "profiles" / "wells.parquet")
    assert len(wells) == 14 and (wells["Metadata_Cells"] == 4).all()
    assert not (run / "profiles" / "treatments.parquet").exists()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["levels"] == {
        "cells": 56,
        "wells": 14,
        "plates": 2,
        "treatments": None,
        "controls": None,
    }
    assert set(metrics["skipped"]) == {
        "treatments",
        "activity",
        "consistency",
        "nsc",
        "batch_retrieval_map",
        "same_batch_neighbours",
    }
    assert "cellclr profile --platemap" in metrics["skipped"]["treatments"]
    assert "nsc" not in metrics and not (run / "eval" / "nsc.parquet").exists()

    # the plate map, joined later: treatments, activity and NSC
    profiles = tmp_path / "profiles"
    platemap = tmp_path / "platemap.csv"
    args = ["profile", "--embeddings", str(run / "embeddings"), "--platemap", str(platemap)]
    assert main([*args, "--out", str(profiles)]) == 0
    treatments = pd.read_parquet(profiles / "treatments.parquet")
    assert len(treatments) == 7 and (treatments["Metadata_Wells"] == 2).all()
    assert set(treatments["Metadata_MoA"]) == {"DMSO", "M1", "M2"}
    assert main(["evaluate", "--profiles", str(profiles), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["activity"]["treatments"] == 6 and metrics["nsc"]["total"] == 6
    assert metrics["levels"]["treatments"] == 7 and metrics["levels"]["controls"] == 2
    activity = pd.read_parquet(tmp_path / "eval" / "activity.parquet")
    assert len(activity[activity["Variant"] == "none"]) == 6
    assert {"mAP", "p_value", "q_value", "retrieved"} <= set(activity)
