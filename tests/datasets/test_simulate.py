"""The simulated screen: determinism, BBBC021 layout, visible phenotypes and batch effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from cellclr.datasets.bbbc021 import bbbc021_image_table
from cellclr.datasets.simulate import PHENOTYPES, ScreenSpec, SimulationError, simulate_screen
from cellclr.errors import CellclrError

SIZE = 160
TINY = ScreenSpec(
    weeks=2,
    plates_per_week=1,
    field_shape=(SIZE, SIZE),
    sites_per_well=2,
    cells_per_field=(8, 10),
    compounds_per_moa=1,
    weeks_per_compound=2,
    dmso_wells=2,
)
MICRO = ScreenSpec(
    weeks=1,
    plates_per_week=1,
    field_shape=(96, 96),
    sites_per_well=1,
    cells_per_field=(2, 3),
    moas=("DNA damage",),
    compounds_per_moa=1,
    concentrations=(1.0,),
    weeks_per_compound=1,
    dmso_wells=1,
)
CHANNELS = ("DNA", "Tubulin", "Actin")
MIN_EFFECT = 1.0  # |Cohen's d| of the clearest measurement, MoA (high dose) against DMSO


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim") / "screen"
    return out, simulate_screen(out, seed=0, spec=TINY)


def _files(root: Path) -> dict[str, bytes]:
    paths = [*root.glob("images/**/*.tif"), *root.glob("metadata/*.csv")]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


def test_same_seed_same_bytes_other_seed_other_images(screen, tmp_path: Path) -> None:
    root, _ = screen
    simulate_screen(tmp_path / "again", seed=0, spec=TINY)
    first, again = _files(root), _files(tmp_path / "again")
    assert len(first) == 3 * 56 + 2
    assert first == again
    pd.testing.assert_frame_equal(
        pd.read_parquet(root / "truth" / "cells.parquet"),
        pd.read_parquet(tmp_path / "again" / "truth" / "cells.parquet"),
    )
    simulate_screen(tmp_path / "other", seed=1, spec=TINY)
    table = bbbc021_image_table(root)
    other = bbbc021_image_table(tmp_path / "other")
    for channel in CHANNELS:
        a, b = tifffile.imread(table[channel][0]), tifffile.imread(other[channel][0])
        assert not np.array_equal(a, b)


def test_bbbc021_reader_parses_the_screen(screen) -> None:
    root, summary = screen
    table = bbbc021_image_table(root)
    assert len(table) == summary["sites"] == 2 * (6 * 2 + 2) * 2
    assert table["Metadata_Plate"].nunique() == summary["plates"] == 2
    assert set(table["Metadata_Batch"]) == {"Week1", "Week2"}
    treated = table[table["Metadata_Compound"] != "DMSO"]
    assert treated.groupby(["Metadata_Compound", "Metadata_Concentration"]).ngroups == 12
    assert set(table["Metadata_MoA"]) == {*PHENOTYPES, "DMSO"}
    assert set(table["Metadata_Site"]) == {1, 2}
    for channel in CHANNELS:
        for path in table[channel]:
            image = tifffile.imread(path)
            assert image.dtype == np.uint16 and image.shape == (SIZE, SIZE)
    moa = (root / "metadata" / "BBBC021_v1_moa.csv").read_bytes()
    assert b"\r" in moa and b"\n" not in moa and b"\rDMSO,0.0,DMSO\r" in moa


def test_truth_table_matches_the_images(screen) -> None:
    root, summary = screen
    cells = pd.read_parquet(root / "truth" / "cells.parquet")
    assert len(cells) == summary["cells"] > 8 * summary["sites"] * 0.9
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    table = bbbc021_image_table(root).set_index(keys)
    assert set(cells.set_index(keys).index) == set(table.index)
    for column in ("Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"):
        assert cells[column].between(TINY.edge_margin, SIZE - TINY.edge_margin).all()
    strength = cells.groupby(["Metadata_MoA", "Metadata_Concentration"])["Phenotype_Strength"]
    means = strength.mean().unstack()
    assert (means.loc[list(PHENOTYPES), 3.0] > means.loc[list(PHENOTYPES), 0.3] + 0.2).all()
    assert (cells.loc[cells["Metadata_MoA"] == "DMSO", "Phenotype_Strength"] == 0).all()


def _disc(radius: float, inner: float = 0.0) -> np.ndarray:
    r = np.hypot(*np.mgrid[-24:25, -24:25])
    return (r <= radius) & (r >= inner)


CORE, NUCLEUS, INSIDE = _disc(3), _disc(16), _disc(6)
ANNULUS, RIM = _disc(11, 4), _disc(16, 10)


def _site_measurements(images: list[np.ndarray], centres: np.ndarray) -> pd.DataFrame:
    """Simple per-cell measurements around the true nucleus centres."""
    dna, tubulin, actin = (im - np.percentile(im, 5) for im in images)
    dna_mask = ndi.gaussian_filter(dna, 1) > threshold_otsu(ndi.gaussian_filter(dna, 1))
    fine = tubulin - ndi.gaussian_filter(tubulin, 1.5)
    rows = []
    for x, y in np.rint(centres).astype(int):
        box = (slice(y - 24, y + 25), slice(x - 24, x + 25))
        rows.append(
            {
                "dna_core": dna[box][CORE].mean(),
                "dna_area": dna_mask[box][NUCLEUS].sum(),
                "tubulin_mean": tubulin[box][ANNULUS].mean(),
                "tubulin_texture": fine[box][ANNULUS].std() / tubulin[box][ANNULUS].mean(),
                "actin_cortex": actin[box][RIM].mean() / actin[box][INSIDE].mean(),
            }
        )
    return pd.DataFrame(rows)


def _measurements(root: Path) -> pd.DataFrame:
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    cells = pd.read_parquet(root / "truth" / "cells.parquet")
    parts = []
    for _, site in bbbc021_image_table(root).iterrows():
        images = [tifffile.imread(site[c]).astype(np.float64) for c in CHANNELS]
        mine = cells[(cells[keys] == site[keys]).all(axis=1)].reset_index(drop=True)
        centres = mine[["Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"]].to_numpy()
        parts.append(pd.concat([mine, _site_measurements(images, centres)], axis=1))
    return pd.concat(parts, ignore_index=True)


def test_each_moa_differs_from_dmso(screen) -> None:
    root, _ = screen
    cells = _measurements(root)
    features = ["dna_core", "dna_area", "tubulin_mean", "tubulin_texture", "actin_cortex"]
    # relative to the plate's DMSO cells, so that the weeks' gains cancel
    dmso = cells[cells["Metadata_MoA"] == "DMSO"].groupby("Metadata_Plate")[features].median()
    cells[features] = cells[features] / dmso.loc[cells["Metadata_Plate"]].to_numpy()
    control = cells.loc[cells["Metadata_MoA"] == "DMSO", features]
    strongest = {}
    for moa in PHENOTYPES:
        treated = cells[(cells["Metadata_MoA"] == moa) & (cells["Metadata_Concentration"] == 3.0)]
        spread = np.sqrt((treated[features].var() + control.var()) / 2)
        effect = (treated[features].mean() - control.mean()) / spread
        strongest[moa] = effect.abs().max()
    assert min(strongest.values()) > MIN_EFFECT, strongest


def test_weeks_differ_in_background(screen) -> None:
    root, _ = screen
    table = bbbc021_image_table(root)
    for channel in CHANNELS:
        table[f"bg_{channel}"] = [np.percentile(tifffile.imread(p), 5) for p in table[channel]]
    backgrounds = table.groupby("Metadata_Batch")[[f"bg_{c}" for c in CHANNELS]]
    low, high = backgrounds.min(), backgrounds.max()
    apart = (low.loc["Week1"] > high.loc["Week2"]) | (low.loc["Week2"] > high.loc["Week1"])
    assert apart.any(), backgrounds.describe()


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "screen"
    out.mkdir()
    simulate_screen(out, spec=MICRO)  # an empty folder is fine
    with pytest.raises(CellclrError):
        simulate_screen(out, spec=MICRO)
    (out / "metadata" / "BBBC021_v1_image.csv").unlink()
    simulate_screen(out, spec=MICRO, overwrite=True)
    assert (out / "metadata" / "BBBC021_v1_image.csv").is_file()


def test_rejects_a_bad_spec() -> None:
    with pytest.raises(SimulationError, match="moas"):
        ScreenSpec(moas=("Kinase inhibitors",))
    with pytest.raises(SimulationError, match="weeks_per_compound"):
        ScreenSpec(weeks=2, weeks_per_compound=3)
