"""The `cellprofiler` baseline: cp_measure's measurements under CellProfiler's names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cellclr.baselines.cellprofiler import (
    cellprofiler_features,
    feature_names,
    granularity_params,
    standardize_with_gaps,
    write_cellprofiler_embeddings,
)
from cellclr.baselines.classic import segment
from cellclr.baselines.stages import baseline_fingerprint
from cellclr.cli import main
from cellclr.errors import CellclrError
from cellclr.store import CropStore
from cellclr.store.import_crops import import_crops
from tests.helpers import TINY_OVERRIDES, make_crop_files, tiny_config

cpm = pytest.importorskip("cp_measure")
from cp_measure.core import (  # noqa: E402
    measurecolocalization as coloc,
)
from cp_measure.core import (  # noqa: E402
    measuregranularity,
    measureobjectintensity,
    measureobjectintensitydistribution,
    measureobjectsizeshape,
    measuretexture,
)

CHANNELS = ["DNA", "Tubulin", "Actin"]
SIZE = 48


def synthetic_crops(n: int = 3, seed: int = 0) -> np.ndarray:
    """Scaled crops: an elliptic nucleus in DNA, a larger textured cell in the others."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((SIZE, SIZE)) - (SIZE - 1) / 2
    crops = rng.normal(0.02, 0.01, (n, 3, SIZE, SIZE))
    for i in range(n):
        ry, rx = 6 + 2 * i, 8 - i
        nucleus = (rows / ry) ** 2 + (cols / rx) ** 2 <= 1
        cell = (rows / (ry + 9)) ** 2 + (cols / (rx + 12)) ** 2 <= 1
        crops[i, 0][nucleus] += 0.6 + 0.2 * rng.random(nucleus.sum())
        crops[i, 1:, cell] += 0.3 * rng.random((cell.sum(), 2)) + 0.1 * i
    return crops.astype(np.float32)


def reference(image: np.ndarray, nucleus: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    """A few features by calling cp_measure directly, named here by hand as CellProfiler does."""
    image = np.clip(image, 0, 1).astype(np.float64)
    dna, tub, act = image
    nuc, cel = nucleus.astype(np.int32), cell.astype(np.int32)
    shape = measureobjectsizeshape.get_sizeshape(
        nuc, None, calculate_advanced=False, new_features=False
    )
    found = {
        "Nuclei_AreaShape_Area": shape["Area"],
        "Nuclei_AreaShape_FormFactor": shape["FormFactor"],
        "Cells_AreaShape_Zernike_2_0": measureobjectsizeshape.get_zernike(cel, None)["Zernike_2_0"],
        "Cells_AreaShape_MaxFeretDiameter": measureobjectsizeshape.get_feret(cel, None)[
            "MaxFeretDiameter"
        ],
        "Cells_Intensity_MeanIntensity_DNA": measureobjectintensity.get_intensity(
            cel, dna, legacy=True
        )["Intensity_MeanIntensity"],
        "Nuclei_Intensity_UpperQuartileIntensity_Actin": measureobjectintensity.get_intensity(
            nuc, act, legacy=True
        )["Intensity_UpperQuartileIntensity"],
        "Cells_Texture_Contrast_Tubulin_3_00_256": measuretexture.get_texture(cel, tub, 3, 256)[
            "Contrast_3_00_256"
        ],
        "Nuclei_Texture_InfoMeas1_DNA_3_02_256": measuretexture.get_texture(nuc, dna, 3, 256)[
            "InfoMeas1_3_02_256"
        ],
        "Cells_Granularity_3_Actin": measuregranularity.get_granularity(cel, act)["Granularity_3"],
        "Cells_RadialDistribution_FracAtD_Tubulin_2of4": (
            measureobjectintensitydistribution.get_radial_distribution(cel, tub)[
                "RadialDistribution_FracAtD_2of4"
            ]
        ),
        "Cells_Correlation_Correlation_DNA_Tubulin": coloc.get_correlation_pearson(dna, tub, cel)[
            "Correlation_Pearson"
        ],
        "Cells_Correlation_Slope_Tubulin_Actin": coloc.get_correlation_pearson(tub, act, cel)[
            "Correlation_Slope"
        ],
        "Cells_Correlation_Manders_Actin_DNA": coloc.get_correlation_manders_fold(dna, act, cel)[
            "Correlation_Manders_2"
        ],
        "Nuclei_Correlation_RWC_DNA_Tubulin": coloc.get_correlation_rwc(dna, tub, nuc)[
            "Correlation_RWC_1"
        ],
        "Cells_Correlation_K_Tubulin_DNA": coloc.get_correlation_overlap(dna, tub, cel)[
            "Correlation_K_2"
        ],
    }
    return {k: float(np.asarray(v).ravel()[0]) for k, v in found.items()}


def masks_of(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    smooth = ndimage.gaussian_filter(np.maximum(scaled, 0), sigma=(0, 0, 1, 1))
    nuclei, cells, _ = segment(smooth)
    return nuclei, cells


def test_names_are_cellprofilers() -> None:
    names = feature_names(CHANNELS)
    assert len(names) == len(set(names))
    for name in [
        "Nuclei_AreaShape_Area",
        "Cells_AreaShape_Zernike_9_9",
        "Cells_AreaShape_MinFeretDiameter",
        "Cells_Intensity_MeanIntensity_DNA",
        "Nuclei_Intensity_MassDisplacement_Actin",
        "Cells_Texture_AngularSecondMoment_Tubulin_3_03_256",
        "Nuclei_Granularity_16_DNA",
        "Cells_RadialDistribution_RadialCV_Actin_4of4",
        "Cells_Correlation_Correlation_DNA_Actin",
        "Cells_Correlation_Manders_Actin_DNA",
        "Nuclei_Correlation_Overlap_Tubulin_Actin",
    ]:
        assert name in names, name
    # no pose in the crop, no Costes
    for part in ("Center", "BoundingBoxM", "Orientation", "Location", "Costes"):
        assert not any(part in n for n in names), part
    plain = feature_names(CHANNELS, texture=False)
    assert plain == [n for n in names if "_Texture_" not in n]
    assert len(names) - len(plain) == 2 * 3 * 13 * 4  # objects x channels x features x angles
    one = feature_names(["DNA"], texture=False)
    assert not any("Correlation_" in n for n in one)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_values_equal_cp_measure_on_synthetic_crops() -> None:
    crops = synthetic_crops()
    feats = cellprofiler_features(crops, CHANNELS)
    assert list(feats.columns) == feature_names(CHANNELS)
    nuclei, cells = masks_of(crops)
    for i in range(len(crops)):
        expected = reference(crops[i], nuclei[i], cells[i])
        got = feats.iloc[i][list(expected)].to_numpy(np.float64)
        np.testing.assert_allclose(got, list(expected.values()), rtol=1e-6, equal_nan=True)
    area = feats["Nuclei_AreaShape_Area"]
    assert area[0] == pytest.approx(np.pi * 6 * 8, rel=0.1)
    assert area[2] == pytest.approx(np.pi * 10 * 6, rel=0.1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # cp_measure's, on NaN results
def test_values_equal_cp_measure_on_real_crops(shared_singlecell: Path, tmp_path: Path) -> None:
    images = np.load(shared_singlecell / "crops.npz")["images"][:6]
    cells = pd.read_csv(shared_singlecell / "cells.csv").iloc[:6]
    np.savez(tmp_path / "crops.npz", images=images)
    cells.to_csv(tmp_path / "cells.csv", index=False)
    path = import_crops(tmp_path / "crops.npz", tmp_path / "cells.csv", tmp_path / "s", CHANNELS)
    out = tmp_path / "emb"
    out.mkdir()
    write_cellprofiler_embeddings(path, out, workers=1, batch=6, standardize=False)
    written = pd.read_parquet(out / "embeddings.parquet")
    # an independent scaling: the plate's percentiles from the store's normalisation table
    norm = CropStore(path).normalization("plate", 100)
    group = norm.group_of_cell
    low, high = norm.low[group][:, :, None, None], norm.high[group][:, :, None, None]
    scaled = ((images.astype(np.float32) - low) / (high - low)).astype(np.float32)
    nuclei, cell_masks = masks_of(scaled)
    for i in range(len(images)):
        expected = reference(scaled[i], nuclei[i], cell_masks[i])
        got = written.iloc[i][list(expected)].to_numpy(np.float64)
        # the file holds float32
        np.testing.assert_allclose(got, list(expected.values()), rtol=1e-5, atol=1e-6)


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    npz, csv = make_crop_files(tmp_path / "input", size=32, n_plates=1)
    return import_crops(npz, csv, tmp_path / "store", CHANNELS)


def test_embeddings_file_in_a_pool(small_store: Path, tmp_path: Path) -> None:
    cells = CropStore(small_store).cells
    meta = [c for c in cells.columns if c.startswith("Metadata_")]
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    stats = write_cellprofiler_embeddings(
        small_store, tmp_path / "one", workers=1, batch=10, texture=False
    )
    write_cellprofiler_embeddings(small_store, tmp_path / "two", workers=2, batch=10, texture=False)
    one, two = (pd.read_parquet(tmp_path / f / "embeddings.parquet") for f in ("one", "two"))
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(one[meta], cells[meta].reset_index(drop=True))
    assert list(one.columns) == [*meta, *feature_names(CHANNELS, texture=False)]
    values = one.drop(columns=meta).to_numpy(np.float64)
    assert np.isfinite(values).all()
    varies = values.std(0) > 0
    assert varies.sum() > values.shape[1] // 2
    np.testing.assert_allclose(values.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(0)[varies], 1, atol=1e-3)
    assert stats["cells"] == len(cells) and stats["features"] == values.shape[1]
    assert stats["cells_per_s"] > 0 and stats["texture"] is False and stats["workers"] == 1
    assert stats["cpu_ms_per_cell"] > 0


def test_granularity_avoids_two_pixel_backgrounds() -> None:
    assert granularity_params((68, 68)) == {} and granularity_params((48, 96)) == {}
    assert granularity_params((32, 32)) == {"image_sample_size": 1.0}


def test_a_few_undefined_values_do_not_cost_a_feature() -> None:
    values = np.array([[1.0, np.nan, 5.0], [2.0, np.nan, np.inf], [3.0, np.nan, 7.0]])
    values = np.vstack([values, [np.nan, np.nan, 6.0]])
    z, missing = standardize_with_gaps(values)
    assert missing.tolist() == [1, 4, 1]
    np.testing.assert_allclose(z[:3, 0], [-np.sqrt(1.5), 0, np.sqrt(1.5)])
    assert z[3, 0] == 0 and (z[:, 1] == 0).all() and z[1, 2] == 0
    np.testing.assert_allclose(z[[0, 2, 3], 2], [-np.sqrt(1.5), np.sqrt(1.5), 0])


def test_undefined_measurements_are_counted_and_filled(tmp_path: Path) -> None:
    crops = synthetic_crops(6)
    crops[5] = 0  # an empty crop: a fallback nucleus whose pixels all quantise to 0
    images = (crops * 3000 + 100).astype(np.uint16)
    cells = pd.DataFrame(
        {
            "Metadata_Plate": "P1",
            "Metadata_Well": [f"A0{i}" for i in range(6)],
            "Metadata_Site": 1,
            "Metadata_Compound": ["DMSO", "a", "a", "b", "b", "c"],
            "Metadata_Concentration": 1.0,
        }
    )
    np.savez(tmp_path / "crops.npz", images=images)
    cells.to_csv(tmp_path / "cells.csv", index=False)
    path = import_crops(tmp_path / "crops.npz", tmp_path / "cells.csv", tmp_path / "s", CHANNELS)
    raw, filled = tmp_path / "raw", tmp_path / "filled"
    raw.mkdir(), filled.mkdir()
    write_cellprofiler_embeddings(path, raw, workers=1, standardize=False)
    stats = write_cellprofiler_embeddings(path, filled, workers=1)
    raw_table = pd.read_parquet(raw / "embeddings.parquet")
    assert list(raw_table.columns)[-len(feature_names(CHANNELS)) :] == feature_names(CHANNELS)
    raw_values = raw_table[feature_names(CHANNELS)]  # with texture
    values = pd.read_parquet(filled / "embeddings.parquet")[feature_names(CHANNELS)]
    undefined = ~np.isfinite(raw_values.to_numpy())
    assert undefined.any() and np.isfinite(values.to_numpy()).all()
    assert stats["missing_values"] == undefined.sum()
    assert stats["fallback_nuclei"] == 1
    column = raw_values.columns[undefined.any(0) & (undefined.sum(0) < 6)][0]
    assert stats["missing_by_feature"][column] == undefined[:, raw_values.columns == column].sum()
    assert values[column].std() > 0  # the feature is kept for the cells that have it
    assert (values[column][undefined[:, raw_values.columns == column].ravel()] == 0).all()


def test_fingerprint_ignores_workers_not_texture(small_store: Path) -> None:
    store = CropStore(small_store)
    base = baseline_fingerprint("cellprofiler", store, tiny_config())
    assert baseline_fingerprint("cellprofiler", store, tiny_config("cellprofiler.workers=3")) == (
        base
    )
    assert baseline_fingerprint(
        "cellprofiler", store, tiny_config("cellprofiler.texture=false")
    ) != (base)


def test_missing_cp_measure_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "cp_measure.bulk", None)
    with pytest.raises(CellclrError, match=r"pip install .*cellprofiler"):
        write_cellprofiler_embeddings(tmp_path, tmp_path)


def sets(*extra: str) -> list[str]:
    return [arg for o in [*TINY_OVERRIDES, *extra] for arg in ("--set", o)]


def test_cli_baseline_and_run(small_store: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["--run", str(run), "--crops", str(small_store)]
    plain = sets("cellprofiler.texture=false", "evaluate.bootstrap=10")
    assert main(["baseline", "--kind", "cellprofiler", *args, *plain]) == 0
    said = capsys.readouterr()
    assert "cells/s" in said.err and "| cellprofiler | none |" in said.out
    base = run / "baselines" / "cellprofiler"
    manifest = json.loads((base / "embeddings" / "stage.json").read_text())
    assert manifest["stage"] == "baseline-cellprofiler" and manifest["texture"] is False
    assert manifest["cells"] == 28 and manifest["cells_per_s"] > 0
    emb = pd.read_parquet(base / "embeddings" / "embeddings.parquet")
    assert len(emb) == 28 and "Cells_Intensity_MeanIntensity_DNA" in emb
    assert not any("_Texture_" in c for c in emb.columns)
    metrics = json.loads((base / "eval" / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == 6

    # `run` with both feature baselines (classic still works beside it); the finished
    # cellprofiler baseline is up to date and skipped
    full = sets("cellprofiler.texture=false", "evaluate.bootstrap=10")
    full += ["--set", 'evaluate.baselines=["classic","cellprofiler"]']
    assert main(["run", "--crops", str(small_store), "--out", str(run), *full]) == 0
    err = capsys.readouterr().err
    assert "baseline cellprofiler: " in err and "up to date, skipped" in err
    results = pd.read_parquet(run / "results.parquet")
    assert {"cellclr", "classic", "cellprofiler"} <= set(results["representation"])
