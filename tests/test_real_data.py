"""The real BBBC021 crops (from ../shared): import a few hundred and run one tiny epoch."""

import json

import numpy as np
import pandas as pd

from cellclr.cli import main
from cellclr.store import CropStore
from tests.test_cli import sets


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
