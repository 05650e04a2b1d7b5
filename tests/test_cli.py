import json
import logging

import pandas as pd
import pytest

import cellclr
from cellclr.cli import main
from cellclr.config import load_config
from cellclr.store import CropStore
from tests.helpers import TINY_OVERRIDES


def sets(*extra):
    return [arg for o in [*TINY_OVERRIDES, *extra] for arg in ("--set", o)]


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


def test_errors_are_one_line(tmp_path, crop_files, capsys):
    assert main(["run", "--crops", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not a crop store" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "r")]) == 2
    assert "pass --crops" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--crops",
                str(tmp_path),
                "--out",
                str(tmp_path / "m"),
                "--set",
                "train.epoch=1",
            ]
        )
        == 2
    )
    assert "unknown key train.epoch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "verb", ["", "import-crops", "train", "embed", "profile", "evaluate", "run"]
)
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"] if verb else ["--help"])
    assert e.value.code == 0
    assert "usage: cellclr" in capsys.readouterr().out


def test_random_baseline_uses_the_same_stages(tmp_path, store, capsys):
    import torch

    from cellclr.learning.backbones import build_encoder

    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    assert main(["baseline", "--kind", "random", "--run", str(run), "--crops", str(store)]) == 0
    base = run / "baselines" / "random"
    metrics = json.loads((base / "eval" / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == 6
    # the untrained encoder: what the seeded initialisation gives, not the trained weights
    saved = torch.load(base / "model" / "model.pt", weights_only=True)["encoder"]
    torch.manual_seed(0)
    fresh = build_encoder("resnet_small", 3, "small2").state_dict()
    assert all(torch.equal(saved[k], fresh[k]) for k in fresh)
    trained = torch.load(run / "model" / "model.pt", weights_only=True)["encoder"]
    assert not torch.equal(saved["stem.0.weight"], trained["stem.0.weight"])
    emb = pd.read_parquet(base / "embeddings" / "embeddings.parquet")
    assert len(emb) == 56
    capsys.readouterr()
    assert main(["baseline", "--kind", "random", "--run", str(run), "--crops", str(store)]) == 0
    assert capsys.readouterr().err.count("up to date, skipped") == 4


def test_feature_tables_of_other_tools_evaluate_like_our_profiles(tmp_path, store, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    ours = json.loads((run / "eval" / "metrics.json").read_text())

    # a CellProfiler-style per-well table: bookkeeping columns, no MoA or batch columns
    wells = pd.read_parquet(run / "profiles" / "wells.parquet")
    moa = wells[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]].drop_duplicates()
    moa.columns = ["compound", "concentration", "moa"]
    moa.to_csv(tmp_path / "moa.csv", index=False)
    table = wells.drop(columns=["Metadata_MoA", "Metadata_Batch", "Metadata_Cells"])
    table.insert(0, "ImageNumber", range(len(table)))
    table["Nuclei_Location_Center_X"] = 10.0
    table.to_csv(tmp_path / "cp_wells.csv", index=False)
    assert (
        main(
            [
                "evaluate",
                "--features",
                str(tmp_path / "cp_wells.csv"),
                "--moa",
                str(tmp_path / "moa.csv"),
                "--out",
                str(tmp_path / "cp"),
                *sets(),
            ]
        )
        == 0
    )
    theirs = json.loads((tmp_path / "cp" / "metrics.json").read_text())
    for variant, m in ours["variants"].items():
        for task in ("nsc", "nscb"):
            assert theirs["variants"][variant][task]["correct"] == m[task]["correct"]
            assert theirs["variants"][variant][task]["total"] == m[task]["total"]
    assert theirs["dropped_features"] == ours["dropped_features"]

    # a per-cell table (pycytominer-style) is averaged per well first: the same result again
    cells = pd.read_parquet(run / "embeddings" / "embeddings.parquet")
    cells.to_parquet(tmp_path / "cells.parquet")
    assert (
        main(
            [
                "evaluate",
                "--features",
                str(tmp_path / "cells.parquet"),
                "--out",
                str(tmp_path / "pc"),
                *sets(),
            ]
        )
        == 0
    )
    per_cell = json.loads((tmp_path / "pc" / "metrics.json").read_text())
    assert per_cell["nsc"]["correct"] == ours["nsc"]["correct"]

    # text columns that are not Metadata_ are refused, naming them
    table.assign(Image_FileName_DNA="a.tif").to_csv(tmp_path / "bad.csv", index=False)
    assert (
        main(["evaluate", "--features", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad")])
        == 2
    )
    assert "Image_FileName_DNA" in capsys.readouterr().err


def test_predict_from_crops(tmp_path, store, capsys):
    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--reference",
                str(run / "profiles"),
                "--query-crops",
                str(store),
                "--model",
                str(run / "model"),
                "--out",
                str(out),
                "--top",
                "2",
            ]
        )
        == 0
    )
    p = pd.read_parquet(out / "predictions.parquet")
    assert len(p) == 6  # the annotated treatments; DMSO is not a query
    assert {"Predicted_MoA", "Confidence", "Neighbor2_Distance"} <= set(p.columns)
    assert (p["Neighbor1_Compound"] != p["Metadata_Compound"]).all()
    # the same query as profiles gives the same predictions
    assert (
        main(
            [
                "predict",
                "--reference",
                str(run / "profiles"),
                "--query",
                str(run / "profiles"),
                "--out",
                str(tmp_path / "p2"),
            ]
        )
        == 0
    )
    again = pd.read_parquet(tmp_path / "p2" / "predictions.parquet")
    pd.testing.assert_series_equal(again["Predicted_MoA"], p["Predicted_MoA"])

    # with TVN, reference and query are normalised together: crops and profiles agree again
    for name, query in (
        ("t1", ["--query-crops", str(store), "--model", str(run / "model")]),
        ("t2", ["--query", str(run / "profiles")]),
    ):
        assert (
            main(
                [
                    "predict",
                    "--reference",
                    str(run / "profiles"),
                    *query,
                    "--out",
                    str(tmp_path / name),
                    "--set",
                    "profile.postprocess='tvn'",
                ]
            )
            == 0
        )
    t1 = pd.read_parquet(tmp_path / "t1" / "predictions.parquet")
    t2 = pd.read_parquet(tmp_path / "t2" / "predictions.parquet")
    pd.testing.assert_frame_equal(t1, t2, check_exact=False, rtol=1e-5)
    assert (t1["Neighbor1_Compound"] != t1["Metadata_Compound"]).all()


def test_baselines_from_other_crops_are_left_out_of_the_results(tmp_path, store):
    from cellclr.pipeline import collect_results

    run = tmp_path / "run"
    assert main(["run", "--crops", str(store), "--out", str(run), *sets()]) == 0
    assert main(["baseline", "--kind", "random", "--run", str(run), "--crops", str(store)]) == 0
    assert set(collect_results(run)["representation"]) == {"cellclr", "random"}
    manifest = run / "baselines" / "random" / "embeddings" / "stage.json"
    manifest.write_text(manifest.read_text().replace(CropStore(store).id, "another-store"))
    assert set(collect_results(run)["representation"]) == {"cellclr"}


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


def test_bad_config_values_are_one_line(tmp_path, store, capsys):
    assert (
        main(
            [
                "train",
                "--crops",
                str(store),
                "--out",
                str(tmp_path / "m"),
                "--set",
                "train.checkpoint_every=0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("cellclr: error:") and "checkpoint_every" in err and "Traceback" not in err
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_compare_puts_methods_and_baselines_side_by_side(store, tmp_path, capsys):
    configs = []
    for method in ("simclr", "supcon"):
        path = tmp_path / f"{method}.toml"
        path.write_text(f'[train]\nmethod = "{method}"\nepochs = 1\n')
        configs.append(str(path))
    out = tmp_path / "cmp"
    args = ["compare", "--configs", *configs, "--crops", str(store), "--out", str(out), *sets()]
    assert main([*args, "--set", "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "| supcon (weakly supervised) | none |" in printed
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["representation"]) == {"simclr", "supcon", "classic", "random"}
    assert set(results.loc[results["representation"] == "supcon", "supervision"]) == {
        "weak: treatment labels"
    }
    page = (out / "report.html").read_text()
    assert (
        "SupCon, weakly supervised (treatment labels)" in page and "simclr (this run)" not in page
    )
    assert page.count("<h3>") >= 2  # a training section per method


# ---- issue 18 item 10 ------------------------------------------------------------------------


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


def test_every_option_of_every_verb_has_help():
    import argparse

    from cellclr.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in verbs.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing


def test_an_unknown_option_shows_the_verbs_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--crops", "x", "--out", "y", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage: cellclr train" in err and "unrecognized arguments: --bogus" in err


def test_lists_are_written_either_way_and_inputs_are_named_alike():
    from cellclr.cli.main import build_parser

    parser = build_parser()
    a = parser.parse_args(
        ["crop", "--bbbc021", "d", "--out", "o", "--plates", "P1,P2", "--wells", "A01"]
    )
    b = parser.parse_args(
        ["crop", "--bbbc021", "d", "--out", "o", "--plates", "P1", "P2", "--wells", "A01"]
    )
    from cellclr.cli.common import channel_list

    assert channel_list(a.plates) == channel_list(b.plates) == ["P1", "P2"]
    c = parser.parse_args(["crop", "--loaddata", "t", "--out", "o", "--channels", "DNA", "ER"])
    assert channel_list(c.channels) == ["DNA", "ER"]
    new = parser.parse_args(["predict", "--reference", "r", "--features", "t.csv", "--out", "o"])
    old = parser.parse_args(
        ["predict", "--reference", "r", "--query-features", "t.csv", "--out", "o"]
    )
    assert new.query_features == old.query_features
    base = parser.parse_args(["baseline", "--kind", "random", "--out", "run"])
    assert base.out == parser.parse_args(["baseline", "--kind", "random", "--run", "run"]).out
    download = parser.parse_args(["download", "--dataset", "bbbc021", "--out", "d"])
    assert download.dataset == "bbbc021"


def train_args(store, out) -> list[str]:
    """A tiny training whose batch (64) is larger than the store (56 cells): it logs a warning
    (the batch is clamped) and a progress note per epoch (INFO)."""
    return ["train", "--crops", str(store), "--out", str(out), *sets("train.batch_size=64")]


def clamped(store) -> str:
    return f"cellclr: warning: {store}: train.batch_size=64 is more than the store's 56 cells"


EPOCH = '{"epoch": 1, "loss": '


def test_messages_go_to_stderr_and_quiet_keeps_only_warnings(tmp_path, store, capsys):
    assert main(train_args(store, tmp_path / "loud")) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH in said.err  # a warning, and a progress note
    assert said.out == f"model: {tmp_path / 'loud'}\n"  # the result alone on stdout
    assert main(["--quiet", *train_args(store, tmp_path / "quiet")]) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH not in said.err
    assert said.out == f"model: {tmp_path / 'quiet'}\n"  # a result is not a message: shown
    assert main(["-q", *train_args(store, tmp_path / "q")]) == 0
    assert EPOCH not in capsys.readouterr().err


def test_verbose_shows_debugging_messages(capsys):
    line = f"cellclr {cellclr.__version__}: cellclr"
    assert main(["configs"]) == 0
    assert line not in capsys.readouterr().err
    assert main(["-v", "configs"]) == 0
    assert f"{line} -v configs\n" in capsys.readouterr().err
    assert main(["--verbose", "configs"]) == 0
    assert f"{line} --verbose configs\n" in capsys.readouterr().err


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["-q", "-v", "configs"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_under_torchrun_other_processes_show_warnings_only(tmp_path, store, capsys, monkeypatch):
    """RANK 1 (torchrun's second process; alone here, as WORLD_SIZE is unset): no progress
    notes and no results, but its warnings."""
    monkeypatch.setenv("RANK", "1")
    assert main(train_args(store, tmp_path / "m1")) == 0
    said = capsys.readouterr()
    assert clamped(store) in said.err and EPOCH not in said.err and said.out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(train_args(store, tmp_path / "m0")) == 0
    said = capsys.readouterr()
    assert EPOCH in said.err and said.out == f"model: {tmp_path / 'm0'}\n"


def test_the_cellclr_logger_is_left_as_it_was():
    """``main`` called from Python (a notebook, a test) leaves no handler or level behind."""
    logger = logging.getLogger("cellclr")
    before = (list(logger.handlers), logger.level)
    assert main(["-q", "configs"]) == 0
    assert main(["configs", "show", "nothing-of-that-name"]) == 2
    assert (list(logger.handlers), logger.level) == before
