"""A finished run, shared by the report's tests."""

import json
import shutil
from pathlib import Path

import pytest

from cellclr.pipeline import run
from cellclr.store.import_crops import import_crops
from tests.helpers import make_crop_files, tiny_config


@pytest.fixture(scope="package")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run with its crop store in run/crops and a fake 'random' baseline."""
    tmp = tmp_path_factory.mktemp("report")
    images, cells = make_crop_files(tmp / "input")
    folder = tmp / "run"
    crops = import_crops(images, cells, folder / "crops", ["DNA", "Tubulin", "Actin"])
    run(crops, folder, tiny_config())
    baseline = folder / "baselines" / "random"
    (baseline / "eval").mkdir(parents=True)
    metrics = {"nsc": {"correct": 1, "total": 6}, "nscb": {"correct": 0, "total": 6}}
    (baseline / "eval" / "metrics.json").write_text(json.dumps({**metrics, "drop_pct": 16.667}))
    shutil.copytree(folder / "profiles", baseline / "profiles")
    return folder
