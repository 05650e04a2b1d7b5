"""`cellclr demo` end to end on a tiny simulated screen (the real demo's screen is larger)."""

import json
import logging

import pytest

from cellclr.demo import demo, demo_config
from tests.datasets.test_simulate import TINY


def test_demo_runs_every_stage_and_reports(tmp_path, caplog):
    out = tmp_path / "demo"
    report = demo(out, ["train.epochs=1", "crop.workers=1"], spec=TINY)
    assert report == out / "report.html" and report.is_file()
    html = report.read_text()
    for stage in ("screen", "crops", "model", "embeddings", "profiles", "eval"):
        assert (out / stage / "stage.json").is_file(), stage
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == metrics["n_treatments"] == 12
    for kind in ("random", "classic"):
        assert (out / "baselines" / kind / "eval" / "metrics.json").is_file()
    assert f"{metrics['nsc']['correct']}/{metrics['nsc']['total']}" in html
    assert "random" in html
    # a second call finds everything up to date
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cellclr"):
        demo(out, ["train.epochs=1", "crop.workers=1"], spec=TINY)
    assert caplog.text.count("up to date, skipped") == 11


def test_shipped_demo_config_is_small():
    cfg = demo_config()
    assert cfg.model.arch == "resnet_small" and cfg.augment.size == cfg.crop.box == 48
    assert cfg.train.epochs <= 15


def test_demo_refuses_another_screen_without_overwrite(tmp_path):
    from cellclr.outputs import OutputExistsError

    out = tmp_path / "demo"
    demo(out, ["train.epochs=1", "crop.workers=1"], spec=TINY)
    with pytest.raises(OutputExistsError, match="another simulated screen"):
        demo(out, ["train.epochs=1", "crop.workers=1"], spec=TINY, seed=1)
