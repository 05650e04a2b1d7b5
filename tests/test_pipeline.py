"""``cellclr run``: on screens without labels (wells always, treatments and measures where the
annotations allow, a plate map joined later); its crop stage under torchrun (every process
crops its share of the plates, the main process finalises, and the others wait for it past the
process group's timeout)."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch.distributed as dist
import torch.multiprocessing as mp

from cellclr import pipeline
from cellclr.cli import main
from cellclr.config import load_config
from cellclr.cropping.stage import crop
from cellclr.learning.distributed import barrier, world_from_env
from cellclr.store import CropStore
from tests.cropping.test_stage import write_plates
from tests.helpers import make_crop_files, sets, tiny_config, wait_for


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


def test_a_loaddata_table_without_treatments_runs_to_a_report(tmp_path, monkeypatch):
    """A LoadData table without treatment columns: crop, train (the shipped cellpainting-cpu
    config, one epoch), embed, profile, evaluate and report, from a folder that is not the
    checkout."""
    from tests.tables.test_loaddata import loaddata, write_fields

    fields = write_fields(tmp_path / "images", wells=("A01", "B02", "C03"))
    loaddata(fields, treatments=False).to_csv(tmp_path / "load_data.csv", index=False)
    monkeypatch.chdir(tmp_path)
    crop = ["crop", "--loaddata", "load_data.csv", "--channels", "DNA,ER,Mito", "--box", "32"]
    assert main([*crop, "--out", "crops", "--workers", "1"]) == 0
    run = ["run", "--config", "cellpainting-cpu", "--crops", "crops", "--out", "run"]
    assert main([*run, "--set", "train.epochs=1", "--set", "augment.size=32"]) == 0
    assert main(["report", "--run", "run"]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Plate layout</h2>" in page and "<h2>Example cells</h2>" in page
    assert page.count('<img src="data:image/png;base64,') >= 4
    wells = pd.read_parquet(tmp_path / "run" / "profiles" / "wells.parquet")
    assert len(wells) == 3 and "Metadata_Compound" not in wells


def test_the_readme_cell_painting_commands_run_verbatim(tmp_path):
    """The README's Cell Painting commands, as written, on the shared sample field: to a report
    with composites, with no plate map and no MoA; then with a plate map, treatments."""
    import os
    import re
    import subprocess
    import sys

    import pytest

    sample = Path(__file__).resolve().parents[2] / "shared" / "data" / "cellpainting"
    if not (sample / "BR00143976").is_dir():
        pytest.skip(f"the Cell Painting sample is not at {sample} (only present in CI and dev)")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Cell Painting") : readme.index("On a screen of your own")]
    commands = "\n".join(block.strip("\n") for block in section.split("```")[1::2])
    assert commands.count("cellclr ") == 4 and "--platemap" in commands
    checkout = tmp_path / "cellclr"  # beside a ../shared, as a development checkout is
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(sample.parents[1])
    cellclr = str(Path(sys.executable).with_name("cellclr"))
    script = re.sub(r"^cellclr ", f"{cellclr} ", commands, flags=re.M)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    page = (checkout / "runs" / "cp" / "report.html").read_text()
    assert "DNA" in page and "Mito" in page and "<h2>Example cells</h2>" in page
    treatments = pd.read_parquet(
        checkout / "runs" / "cp" / "profiles-mapped" / "treatments.parquet"
    )
    assert list(treatments["Metadata_Compound"]) == ["DMSO"]
    assert int(treatments["Metadata_Cells"].iloc[0]) == len(
        pd.read_parquet(checkout / "runs" / "cp" / "crops" / "cells.parquet")
    )


CROP = ["crop.channels=['DNA', 'Tubulin', 'Actin']", "crop.box=32", "crop.workers=1"]
CROP += ["crop.nucleus_min_area=100", "crop.illumination_min_sites=4"]


def _crop_ranks(rank: int, init: str, table: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="-", MASTER_PORT="0")
    timeout = timedelta(seconds=5)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=timeout)
    calls = []
    waiting = Path(out) / "waiting-1"  # rank 1 has cropped its shard and waits for rank 0

    def recorded(folder, cfg, overwrite=False, shard=None):
        if rank == 0 and shard is not None:
            wait_for(waiting.exists, "rank 1 at the barrier after its shard")
            time.sleep(8)  # from then on, the other process waits longer than the timeout
        summary = crop(folder, cfg, overwrite=overwrite, shard=shard)
        calls.append({"shard": shard, "cropped": summary["plates_cropped"]})
        return summary

    def announced(world):
        if rank == 1:
            waiting.touch()
        barrier(world)

    pipeline.crop = recorded
    pipeline.barrier = announced
    cfg = tiny_config(f"crop.images_table='{table}'", *CROP)
    pipeline._crop_stage(Path(out) / "crops", cfg, world_from_env(), overwrite=False)
    (Path(out) / f"calls-{rank}.json").write_text(json.dumps(calls))
    dist.destroy_process_group()


def test_every_process_crops_a_shard_and_the_main_one_finalises(tmp_path):
    table = write_plates(tmp_path / "images")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_crop_ranks, args=(init, str(table), str(tmp_path)), nprocs=2, join=True)
    calls = [json.loads((tmp_path / f"calls-{r}.json").read_text()) for r in (0, 1)]
    assert calls[0] == [{"shard": [0, 2], "cropped": ["Week1_1"]}, {"shard": None, "cropped": []}]
    assert calls[1] == [{"shard": [1, 2], "cropped": ["Week2_2"]}]
    two = CropStore(tmp_path / "crops")
    cfg = tiny_config(f"crop.images_table='{table}'", *CROP)
    crop(tmp_path / "one", cfg)  # one process, as before
    one = CropStore(tmp_path / "one")
    pd.testing.assert_frame_equal(two.cells, one.cells)
    everything = np.arange(len(one))
    assert np.array_equal(two.read(everything), one.read(everything))


def test_verbs_chain_and_run_skips_what_is_done(tmp_path, crop_files, capsys):
    images, cells = crop_files
    crops = tmp_path / "crops"
    assert (
        main(
            [
                "import-crops",
                "--images",
                str(images),
                "--cells",
                str(cells),
                "--channels",
                "DNA,Tubulin,Actin",
                "--out",
                str(crops),
            ]
        )
        == 0
    )
    run = tmp_path / "run"
    assert main(["run", "--crops", str(crops), "--out", str(run), *sets()]) == 0
    out = capsys.readouterr().out
    assert "NSC " in out and "NSCB " in out

    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("nsc", "nscb"):
        assert set(metrics[key]) >= {"correct", "total"}
        assert isinstance(metrics[key]["correct"], int)
    assert isinstance(metrics["drop_pct"], float)
    assert metrics["nsc"]["total"] == 6  # 6 annotated treatments, DMSO excluded
    table = pd.read_parquet(run / "eval" / "nsc.parquet")
    assert {
        "Metadata_Compound",
        "Metadata_MoA",
        "Neighbor_Compound",
        "Neighbor_MoA",
        "Correct",
    } <= set(table.columns)
    for stage in ("model", "embeddings", "profiles", "eval"):
        saved = load_config(run / stage / "config.toml")
        assert saved.train.epochs == 2 and saved.augment.size == 16

    emb = pd.read_parquet(run / "embeddings" / "embeddings.parquet")
    assert len(emb) == 56 and emb.filter(like="emb_").shape[1] == 256

    stamp = (run / "model" / "model.pt").stat().st_mtime_ns
    assert main(["run", "--crops", str(crops), "--out", str(run), *sets()]) == 0
    assert capsys.readouterr().err.count("up to date, skipped") == 4
    assert (run / "model" / "model.pt").stat().st_mtime_ns == stamp

    # another config: refused without --overwrite, redone with it
    assert main(["run", "--crops", str(crops), "--out", str(run), *sets("train.epochs=1")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "--crops",
                str(crops),
                "--out",
                str(run),
                *sets("train.epochs=1"),
                "--overwrite",
            ]
        )
        == 0
    )
    assert load_config(run / "model" / "config.toml").train.epochs == 1

    # the single verbs, each from the previous output
    assert (
        main(
            [
                "embed",
                "--model",
                str(run / "model"),
                "--crops",
                str(crops),
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert main(["profile", "--embeddings", str(tmp_path / "e"), "--out", str(tmp_path / "p")]) == 0
    assert main(["evaluate", "--profiles", str(tmp_path / "p"), "--out", str(tmp_path / "v")]) == 0
    again = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert again == json.loads((run / "eval" / "metrics.json").read_text())


def test_baselines_from_other_crops_are_left_out_of_the_results(tmp_path, store):
    from cellclr.pipeline import load_results

    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    assert main(["baseline", "--kind", "random", "--run", str(run), "--crops", str(store)]) == 0
    assert set(load_results(run)["representation"]) == {"cellclr", "random"}
    manifest = run / "baselines" / "random" / "embeddings" / "stage.json"
    manifest.write_text(manifest.read_text().replace(CropStore(store).id, "another-store"))
    assert set(load_results(run)["representation"]) == {"cellclr"}


def test_real_crops_through_run(shared_singlecell, tmp_path, capsys):
    cells = pd.read_csv(shared_singlecell / "cells.csv")
    # a few cells of every treatment, DMSO included: 300-odd crops
    pick = cells.groupby(["Metadata_Compound", "Metadata_Concentration"]).head(3).index.to_numpy()
    with np.load(shared_singlecell / "crops.npz") as npz:
        images = npz["images"][pick]
    np.savez(tmp_path / "crops.npz", images=images)
    cells.iloc[pick].to_csv(tmp_path / "cells.csv", index=False)

    crops = tmp_path / "store"
    assert (
        main(
            [
                "import-crops",
                "--images",
                str(tmp_path / "crops.npz"),
                "--cells",
                str(tmp_path / "cells.csv"),
                "--channels",
                "DNA,Tubulin,Actin",
                "--out",
                str(crops),
            ]
        )
        == 0
    )
    store = CropStore(crops)
    assert len(store) == len(pick) and store.crop_shape == (3, 68, 68)
    assert store.cells["Metadata_Batch"].str.match(r"^Week\d+$").all()

    run = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--crops",
                str(crops),
                "--out",
                str(run),
                *sets("train.epochs=1", "train.batch_size=64", "augment.size=32"),
            ]
        )
        == 0
    )
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == 103
    assert metrics["nscb"]["total"] == 92
    assert metrics["nscb_dropped_moas"] == ["Cholesterol-lowering", "Kinase inhibitors"]
    assert metrics["n_compounds"] == 38 and metrics["n_moas"] == 12


def test_the_results_table_shows_the_batch_measures_beside_their_chance():
    from cellclr.pipeline import format_results
    from cellclr.profiling.results import results_table

    metrics = {
        "variants": {
            "none": {
                "batch_retrieval_map": {"map": 0.337, "chance": 0.105, "wells": 100},
                "same_batch_neighbours": {"rate": 0.41, "chance": 0.146, "treatments": 103},
            }
        }
    }
    table = results_table(metrics, "simclr")
    row = table.iloc[0]
    assert (row["batch_retrieval_map"], row["same_batch_chance"]) == (0.337, 0.146)
    text = format_results(table)
    header, _, line = text.splitlines()
    assert header.endswith("| controls same-batch mAP | same-batch neighbours |")
    assert line.endswith("| 0.337 (0.105) | 41% (15%) |")
    assert line.startswith("| simclr | none | – | – |")
