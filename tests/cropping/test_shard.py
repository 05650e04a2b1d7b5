"""Cropping across machines: ``crop --shard I/N`` splits the plates over the N jobs of an array,
each writing its own plates into one store, which the last to finish finalises."""

import json
import multiprocessing
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.cropping.plates import shard_plates
from cellclr.cropping.stage import CropError, _claim, crop_sites
from cellclr.outputs import OutputExistsError
from cellclr.store import CropStore, StoreError
from cellclr.store.format import plate_file_stem
from cellclr.tables.image_table import read_image_table
from tests.cropping.test_stage import crop_args, write_plates
from tests.cropping.test_staging import digest, fail_on_plate
from tests.helpers import tiny_config

PLATES = ("Week1_1", "Week1_2", "Week2_3")
FINAL = ("store.json", "cells.parquet", "normalization.parquet", "sites.parquet", "stage.json")


@pytest.fixture
def screen(tmp_path):
    """Three plates, and the store that one crop of all of them makes."""
    table = write_plates(tmp_path / "images", plates=PLATES)
    whole = tmp_path / "whole"
    assert main(crop_args(table, whole)) == 0
    return table, whole


def config():
    """The config that ``crop_args`` gives."""
    return tiny_config(
        "crop.channels=['DNA', 'Tubulin', 'Actin']",
        "crop.box=32",
        "crop.workers=1",
        "crop.nucleus_min_area=100",
        "crop.illumination_min_sites=4",
    )


def assert_same_store(out: Path, whole: Path) -> None:
    """The same store as one crop makes: id, cell index, sites, statistics and pixels."""
    store, reference = CropStore(out), CropStore(whole)
    assert store.id == reference.id
    for name in ("cells.parquet", "sites.parquet", "normalization.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(whole / name))
    every = np.arange(len(reference))
    np.testing.assert_array_equal(store.read(every), reference.read(every))
    for name in ("crop.json", "config.toml"):
        assert (out / name).read_text() == (whole / name).read_text()
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["fingerprint"] == json.loads((whole / "stage.json").read_text())["fingerprint"]
    assert manifest["plates_missing"] == [] and manifest["plates_in_store"] == list(PLATES)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".crop.json.*"))


def test_plates_are_shared_out_by_name_disjoint_and_complete():
    names = [f"Week{w}_{p}" for w in range(1, 5) for p in range(10, 24)]
    assert shard_plates(["C", "A", "E", "B", "D"], 0, 2) == ["A", "C", "E"]  # k -> k % N
    assert shard_plates(["C", "A", "E", "B", "D"], 1, 2) == ["B", "D"]
    for n in range(1, 9):
        shares = [shard_plates(names, i, n) for i in range(n)]
        shuffled = random.Random(n).sample(names, len(names)) * 2  # any order, repeats
        assert shares == [shard_plates(shuffled, i, n) for i in range(n)]  # names alone decide
        assert sorted(p for share in shares for p in share) == sorted(names)  # each once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shard_plates(names[:2], 3, 4) == []  # more shards than plates: some have none


@pytest.mark.parametrize("order", [(0, 1), (1, 0), (0, 1, 2), (3, 2, 1, 0)], ids=str)
def test_shards_one_after_another_make_the_store_of_one_crop(tmp_path, screen, capsys, order):
    table, whole = screen
    capsys.readouterr()
    out, n = tmp_path / "crops", len(order)
    for k, i in enumerate(order):
        assert main(crop_args(table, out, "--shard", f"{i}/{n}")) == 0
        printed = capsys.readouterr().out
        mine = shard_plates(PLATES, i, n)
        assert f"shard {i}/{n}: {len(mine)} plates done ({len(mine)} cropped now)" in printed
        if k < len(order) - 1:  # others are still to come: not finalised
            left = len(PLATES) - len(
                {p for j in order[: k + 1] for p in shard_plates(PLATES, j, n)}
            )
            assert f"{left} of 3 plates still missing: the last shard to finish" in printed
            assert "crop store (not finalised yet)" in printed
            assert not any((out / name).exists() for name in (*FINAL, "config.toml"))
            with pytest.raises(StoreError, match="incomplete: missing store"):
                CropStore(out)
        else:
            assert "all 3 plates done: the store is complete" in printed
    assert_same_store(out, whole)
    manifest = json.loads((out / "stage.json").read_text())
    assert manifest["shard"] == f"{order[-1]}/{n}"
    assert manifest["shard_plates"] == shard_plates(PLATES, order[-1], n)


def test_each_shard_crops_only_its_plates_and_a_plain_crop_finishes(
    tmp_path, screen, monkeypatch, capsys
):
    table, whole = screen
    out = tmp_path / "crops"
    seen = fail_on_plate(monkeypatch, "no such plate", RuntimeError)
    assert main(crop_args(table, out, "--shard", "1/3")) == 0
    assert set(seen) == {"Week1_2"}  # plate 1 of the sorted three
    assert sorted(p.name for p in (out / "plates").glob("*.npy")) == [
        f"{plate_file_stem('Week1_2')}.npy"
    ]
    assert sorted(p.name for p in (out / "illum").iterdir()) == [
        f"{plate_file_stem('Week1_2')}.npz"
    ]
    assert main(crop_args(table, out, "--shard", "1/3")) == 0  # a rerun (requeued job)
    assert seen.count("Week1_2") == 6  # its plate is not cropped again
    assert not (out / "store.json").exists()
    summary = crop_sites(
        read_image_table(table, ["DNA", "Tubulin", "Actin"]),
        ["DNA", "Tubulin", "Actin"],
        out,
        config(),
        shard=(1, 3),
    )
    assert summary["plates_missing"] == ["Week1_1", "Week2_3"] and summary["plates_cropped"] == []
    capsys.readouterr()
    assert main(crop_args(table, out)) == 0  # no --shard: crops what is missing, finalises
    assert sorted(seen) == sorted(["Week1_2"] * 6 + ["Week1_1"] * 6 + ["Week2_3"] * 6)
    assert_same_store(out, whole)


def crop_together(table: Path, out: Path, shards: int) -> str:
    """Run the ``shards`` jobs of an array at the same time; return what they printed."""
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "cellclr", *crop_args(table, out, "--shard", f"{i}/{shards}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(shards)
    ]
    results = [job.communicate(timeout=300) for job in jobs]
    for job, (_, stderr) in zip(jobs, results, strict=True):
        assert job.returncode == 0, stderr
    return "".join(stdout for stdout, _ in results)


def test_shards_at_the_same_time(tmp_path, screen):
    table, whole = screen
    out = tmp_path / "crops"
    printed = crop_together(table, out, 2)  # both create OUT and claim it at once
    assert "all 3 plates done: the store is complete" in printed  # one finalised, or both
    assert_same_store(out, whole)
    for name in FINAL:  # as if the finalising job had been killed
        (out / name).unlink()
    printed = crop_together(table, out, 2)  # both finalise, at the same time
    assert printed.count("all 3 plates done: the store is complete") == 2
    assert_same_store(out, whole)


def claim(folder: Path, fp: str, start) -> str:
    start.wait()
    try:
        _claim(folder, fp)
        return fp
    except OutputExistsError:
        return "refused"


@pytest.mark.skipif(sys.platform != "linux", reason="forks processes")
def test_claiming_a_folder_is_safe_when_jobs_race(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = tmp_path / f"out{attempt}"
        with context.Manager() as manager:
            start = manager.Barrier(8)
            with context.Pool(8) as pool:
                fps = ["a", "b"] * 4  # two settings racing for one folder
                got = pool.starmap(claim, [(folder, fp, start) for fp in fps])
        winner = json.loads((folder / "crop.json").read_text())["fingerprint"]
        assert got == [fp if fp == winner else "refused" for fp in fps]
        assert sorted(p.name for p in folder.iterdir()) == ["crop.json", "plates"]  # no tmp


def test_a_shard_refuses_a_store_made_otherwise(tmp_path, screen, capsys):
    table, whole = screen
    before = digest(whole)
    assert main(crop_args(table, whole, "--box", "40", "--shard", "0/2")) == 2
    err = capsys.readouterr().err
    assert "another image table or crop settings" in err and "never replaces" in err
    assert f"delete {whole} first" in err and "without --shard" in err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    assert main(crop_args(table, other, "--shard", "0/2")) == 2
    assert "is not a crop store" in capsys.readouterr().err
    assert digest(whole) == before and [p.name for p in other.iterdir()] == ["mine.txt"]


def test_shard_with_overwrite_is_refused(tmp_path, screen, capsys):
    table, whole = screen
    before = digest(whole)
    for out in (whole, tmp_path / "new"):
        assert main(crop_args(table, out, "--box", "40", "--shard", "0/2", "--overwrite")) == 2
        err = capsys.readouterr().err
        assert "--shard cannot be used with --overwrite" in err and "without --shard" in err
    assert digest(whole) == before and not (tmp_path / "new").exists()
    assert not (tmp_path / "whole.partial").exists()


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


def test_bad_shards_are_refused_by_the_library_too(tmp_path):
    table = write_plates(tmp_path / "images", plates=("Week1_1",), wells=("B02",), sites=(1,))
    sites = read_image_table(table, ["DNA", "Tubulin", "Actin"])
    for shard in ((2, 2), (-1, 3), (0, 0)):
        with pytest.raises(CropError, match="shard"):
            crop_sites(sites, ["DNA", "Tubulin", "Actin"], tmp_path / "o", config(), shard=shard)
    assert not (tmp_path / "o").exists()


def test_a_plate_with_every_file_missing_does_not_hold_the_shards_up(tmp_path):
    table = write_plates(tmp_path / "images", plates=PLATES)
    shutil.rmtree(tmp_path / "images" / "Week1_2")  # plate 1: no image at all
    whole = tmp_path / "whole"
    assert main(crop_args(table, whole, "--skip-incomplete")) == 0
    out = tmp_path / "crops"
    assert main(crop_args(table, out, "--skip-incomplete", "--shard", "0/2")) == 0
    assert not (out / "store.json").exists()
    assert main(crop_args(table, out, "--skip-incomplete", "--shard", "1/2")) == 0  # Week1_2
    assert CropStore(out).id == CropStore(whole).id
    sites = pd.read_parquet(out / "sites.parquet")
    pd.testing.assert_frame_equal(sites, pd.read_parquet(whole / "sites.parquet"))
    assert (sites.loc[sites["Metadata_Plate"] == "Week1_2", "status"] != "ok").all()
