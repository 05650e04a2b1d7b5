"""The public API: ``import cellclr`` is light, and the notebook-style chain of the README works."""

import subprocess
import sys

import pandas as pd

import cellclr
from tests.helpers import tiny_config


def test_import_is_light_and_names_resolve():
    code = "import sys, cellclr; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    for name in cellclr.__all__[1:]:
        value = getattr(cellclr, name)
        assert callable(value) and value.__doc__, name


def test_notebook_chain(tmp_path, crop_files):
    images, cells = crop_files
    cfg = tiny_config()
    crops = cellclr.import_crops(images, cells, tmp_path / "crops", ["DNA", "Tubulin", "Actin"])
    cellclr.train(crops, tmp_path / "model", cfg)
    cellclr.embed(tmp_path / "model", crops, tmp_path / "embeddings", cfg)
    cellclr.profile(tmp_path / "embeddings", tmp_path / "profiles", cfg)
    result = cellclr.evaluate(tmp_path / "profiles", tmp_path / "eval", cfg)
    embeddings = cellclr.load_embeddings(tmp_path / "embeddings")
    wells = cellclr.load_profiles(tmp_path / "profiles", "wells")
    assert len(embeddings) == len(cellclr.CropStore(crops)) == 56
    assert len(wells) == embeddings.groupby(["Metadata_Plate", "Metadata_Well"]).ngroups
    assert result.metrics["nsc"]["total"] == 6
    assert isinstance(cellclr.load_results(tmp_path), pd.DataFrame)
