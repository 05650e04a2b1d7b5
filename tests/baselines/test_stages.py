"""The baselines run through the same stages as a trained model (cellclr.baselines.stages)."""

import json

import pandas as pd

from cellclr.cli import main
from tests.helpers import sets


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
