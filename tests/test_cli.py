import json

import pandas as pd
import pytest

from cellclr.cli import main
from cellclr.config import load_config

from .conftest import TINY_OVERRIDES


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
    assert capsys.readouterr().out.count("up to date, skipped") == 4
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

    from cellclr.models import build_encoder

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
    assert capsys.readouterr().out.count("up to date, skipped") == 4
