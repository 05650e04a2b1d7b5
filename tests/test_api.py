"""The public API: ``import cellclr`` is light, and docs/python-api.md's notebook chain works."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import cellclr
from cellclr.config import ConfigError
from tests.helpers import tiny_config


def test_import_is_light_and_names_resolve():
    code = "import sys, cellclr; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    for name in cellclr.__all__[1:]:
        value = getattr(cellclr, name)
        assert callable(value) and value.__doc__, name


# a notebook's training (warnings: too few cells for the batch and the plates' statistics;
# progress notes: one line per epoch), first with logging as Python starts, then configured
QUIET_THEN_CONFIGURED = """
import logging, sys
import cellclr
from tests.helpers import make_crop_files, tiny_config

images, cells = make_crop_files(OUT / "input")
crops = cellclr.import_crops(images, cells, OUT / "crops", ["DNA", "Tubulin", "Actin"])
cfg = tiny_config("train.batch_size=64")
cellclr.train(crops, OUT / "quiet", cfg)
cellclr.profile(cellclr.embed(OUT / "quiet", crops, OUT / "e", cfg), OUT / "p", cfg)
sys.stderr.write("configured\\n")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
cellclr.train(crops, OUT / "said", cfg)
"""


def test_the_library_says_nothing_until_logging_is_configured(tmp_path):
    code = f"from pathlib import Path\nOUT = Path({str(tmp_path)!r})\n{QUIET_THEN_CONFIGURED}"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout == ""
    quiet, said = done.stderr.split("configured\n")
    assert quiet == ""  # no warning either: the library's logger has a NullHandler
    assert "WARNING " in said and "train.batch_size=64 is more than the store's 56" in said
    assert 'INFO {"epoch": 1, "loss": ' in said


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


def test_handoff_to_pycytominer_and_copairs(tmp_path, crop_files):
    """The hand-off of docs/screens-without-labels.md: our embeddings through pycytominer's
    aggregate, normalize and feature_select (features named by cellclr.feature_columns), then
    copairs' activity mAP."""
    pycytominer = pytest.importorskip("pycytominer")
    from copairs.map import average_precision, mean_average_precision

    images, cells = crop_files
    cfg = tiny_config()
    crops = cellclr.import_crops(images, cells, tmp_path / "crops", ["DNA", "Tubulin", "Actin"])
    cellclr.train(crops, tmp_path / "model", cfg)
    cellclr.embed(tmp_path / "model", crops, tmp_path / "embeddings", cfg)

    cells = cellclr.load_embeddings(tmp_path / "embeddings")
    features = cellclr.feature_columns(cells)
    assert features[0] == "emb_0000" and len(features) == 256
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"]
    wells = pycytominer.aggregate(cells, strata=keys, features=features, operation="median")
    wells = pycytominer.normalize(
        wells,
        features=features,
        meta_features=keys,
        samples="Metadata_Compound == 'DMSO'",
        method="mad_robustize",
    )
    wells = pycytominer.feature_select(
        wells, features=features, operation=["variance_threshold", "correlation_threshold"]
    )
    features = cellclr.feature_columns(wells)
    assert 0 < len(features) <= 256 and len(wells) == 14
    meta = wells[cellclr.metadata_columns(wells)].assign(
        control=wells["Metadata_Compound"] == "DMSO"
    )
    ap = average_precision(
        meta,
        wells[features].to_numpy(),
        pos_sameby=["Metadata_Compound", "Metadata_Concentration"],
        pos_diffby=["Metadata_Plate"],
        neg_sameby=[],
        neg_diffby=["Metadata_Compound", "control"],
        progress_bar=False,
    )
    activity = mean_average_precision(
        ap[~ap["control"]],
        ["Metadata_Compound", "Metadata_Concentration"],
        null_size=1000,
        threshold=0.05,
        seed=0,
        progress_bar=False,
    )
    assert len(activity) == 6 and activity["mean_average_precision"].between(0, 1).all()


def test_stages_take_a_shipped_name_a_dict_or_nothing_as_cfg(tmp_path, crop_files):
    images, cells = crop_files
    crops = cellclr.import_crops(images, cells, tmp_path / "crops", ["DNA", "Tubulin", "Actin"])
    small = {"train.epochs": 1, "train.batch_size": 16, "augment.size": 16, "train.device": "cpu"}
    cellclr.train(crops, tmp_path / "model", small)
    assert tomllib.loads((tmp_path / "model" / "config.toml").read_text())["train"]["epochs"] == 1
    cellclr.embed(tmp_path / "model", crops, tmp_path / "embeddings", small)
    cellclr.profile(tmp_path / "embeddings", tmp_path / "profiles")  # the defaults
    result = cellclr.evaluate(tmp_path / "profiles", tmp_path / "eval", "bbbc021-cpu")
    assert result.metrics["nsc"]["total"] == 6
    with pytest.raises(ConfigError, match="not int"):
        cellclr.profile(tmp_path / "embeddings", tmp_path / "p2", 5)
