"""Label-free model selection during training (cellclr.profiling.selection): the replicate mAP
that ``train.select_every`` logs is the phenotypic activity mAP of the encoder's well profiles,
here computed apart from it: the cells embedded by the ``embed`` stage, averaged per well with
pandas, scored by copairs called directly (as JUMP's activity notebooks call it) and by
``cellclr.profiling.retrieval.activity``."""

import json

import numpy as np
import pandas as pd
import pytest

import cellclr.profiling.selection as selection
from cellclr.embeddings import load_embeddings
from cellclr.learning.embed import embed
from cellclr.learning.train import LOG
from cellclr.pipeline import train
from cellclr.profiling import retrieval
from cellclr.profiling.retrieval import activity
from tests.helpers import copairs_replicate_ap, tiny_config

copairs_map = pytest.importorskip("copairs.map")

KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"]


def copairs_activity_map(wells: pd.DataFrame, features: list[str]) -> float:
    """The mean over treatments of the mAP of retrieving a treatment's wells on other plates
    among the control (DMSO) wells."""
    ap = copairs_replicate_ap(wells, features)
    scores = copairs_map.mean_average_precision(
        ap, ["treatment"], null_size=100, threshold=0.05, seed=0, progress_bar=False
    )
    assert len(scores) == 6  # every treatment but DMSO: one well on each of the two plates
    return float(scores["mean_average_precision"].mean())


def test_the_logged_replicate_map_is_copairs_on_the_encoders_well_means(
    store, tmp_path, monkeypatch
):
    scored = []  # the well profiles selection scores, each epoch

    def replicate_map(wells, *args, **kwargs):
        scored.append(wells.copy())
        return retrieval.replicate_map(wells, *args, **kwargs)

    monkeypatch.setattr(selection, "replicate_map", replicate_map)
    cfg = tiny_config("train.select_every=1", "embed.batch_size=16")
    model = train(store, tmp_path / "model", cfg)
    log = [json.loads(line) for line in (model / LOG).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(isinstance(r["replicate_map"], float) for r in log)
    # the last epoch scored the encoder that was saved: embed the cells with it, average the
    # wells with pandas, and score them
    cells = load_embeddings(embed(model, store, tmp_path / "embeddings", cfg))
    features = [c for c in cells if c.startswith("emb_")]
    wells = cells.groupby(KEYS, as_index=False)[features].mean()
    assert len(wells) == 14 and (cells.groupby(KEYS).size() == 4).all()
    assert len(scored) == 2
    ours = scored[-1].sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours[KEYS], wells[KEYS], check_dtype=False)
    np.testing.assert_allclose(ours.filter(regex=r"^f\d+$"), wells[features], rtol=1e-4, atol=1e-6)
    expected = copairs_activity_map(wells, features)
    assert log[-1]["replicate_map"] == pytest.approx(expected, abs=1e-4)  # logged to 4 places
    assert activity(wells, null_size=100).summary["map"] == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < 1


def test_no_replicate_map_without_select_every(store, tmp_path):
    model = train(store, tmp_path / "model", tiny_config("train.epochs=1"))
    record = json.loads((model / LOG).read_text())
    assert "replicate_map" not in record


def test_label_free_measures_are_evaluates_and_their_combination():
    """Two batches of four control wells and three treatments of two compounds: the logged
    measures are the functions ``evaluate`` uses, and the score is replicate mAP less the
    control wells' same-batch retrieval above its chance."""
    from cellclr.profiling.profiles import treatment_profiles

    rng = np.random.default_rng(0)
    rows = []
    for batch in ("Week1", "Week2"):
        for plate in (1, 2):
            for compound, conc in [("DMSO", 0.0), ("DMSO", 0.0), ("a", 1.0), ("b", 1.0)]:
                rows.append((f"{batch}_{plate}", compound, conc, batch))
    wells = pd.DataFrame(
        rows,
        columns=["Metadata_Plate", "Metadata_Compound", "Metadata_Concentration", "Metadata_Batch"],
    )
    wells.insert(1, "Metadata_Well", [f"B{i:02d}" for i in range(len(wells))])
    shift = (wells["Metadata_Batch"] == "Week2").to_numpy()[:, None] * 0.5
    treated = (wells["Metadata_Compound"] == "a").to_numpy()[:, None] * 2.0
    features = rng.normal(size=(len(wells), 6)) + shift + treated
    wells = pd.concat([wells, pd.DataFrame(features).add_prefix("f")], axis=1)
    measures = selection.label_free_measures(wells, tiny_config())
    batch = retrieval.batch_retrieval(wells)
    treatments = treatment_profiles(wells)
    assert measures["replicate_map"] == round(retrieval.replicate_map(wells)["map"], 4)
    assert measures["batch_retrieval_map"] == round(batch["map"], 4)
    assert measures["batch_retrieval_chance"] == round(batch["chance"], 4)
    assert measures["same_batch_neighbours"] == round(
        retrieval.same_batch_neighbours(treatments)["rate"], 4
    )
    expected = retrieval.replicate_map(wells)["map"] - (batch["map"] - batch["chance"])
    assert measures["label_free_score"] == pytest.approx(expected, abs=1e-4)


def test_a_store_without_treatments_logs_no_measure():
    wells = pd.DataFrame(
        {"Metadata_Plate": ["p"] * 3, "Metadata_Well": ["A01", "A02", "A03"], "f0": [0.0, 1.0, 2.0]}
    )
    assert selection.label_free_measures(wells, tiny_config()) == {}
