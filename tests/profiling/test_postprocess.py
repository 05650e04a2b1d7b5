from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import sqrtm

from cellclr.errors import CellclrError
from cellclr.profiling.postprocess import (
    POSTPROCESSING,
    clean_features,
    postprocess,
    standardize_to_controls,
    tvn,
)
from tests.helpers import FEATURES, wells_table

META = [
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Compound",
    "Metadata_Concentration",
    "Metadata_MoA",
    "Metadata_Batch",
    "Metadata_Cells",
]


def make_wells(
    dmso_per_plate: dict[str, list[int]], k: int, seed: int = 0, treated: int = 4
) -> pd.DataFrame:
    """Wells of plates ``{batch}_{i}`` with the given DMSO counts, a batch effect (shift,
    scale, mixing) per batch, shuffled rows and a non-default index."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for batch, counts in dmso_per_plate.items():
        shift, mix = rng.normal(size=k) * 2, rng.normal(size=(k, k)) * rng.uniform(0.5, 2)
        for i, n_dmso in enumerate(counts):
            for w in range(n_dmso + treated):
                compound = "DMSO" if w < n_dmso else f"c{w % 3}"
                conc = 0.0 if compound == "DMSO" else 1.0
                moa = "DMSO" if compound == "DMSO" else f"M{w % 2}"
                rows.append((f"{batch}_{i}", f"A{w:02d}", compound, conc, moa, batch, 50 + w))
                effect = 0.0 if compound == "DMSO" else 3.0 * (w % 3)
                feats.append(rng.normal(size=k) @ mix + shift + effect)
    wells = pd.DataFrame(rows, columns=META)
    wells = pd.concat([wells, pd.DataFrame(feats, columns=[f"f{j}" for j in range(k)])], axis=1)
    wells = wells.sample(frac=1.0, random_state=seed)
    wells.index = np.arange(len(wells))[::-1] * 10
    return wells


def features(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_")]


# --- TVN -------------------------------------------------------------------------------------


def direct_tvn(x: np.ndarray, dmso: np.ndarray, batch: np.ndarray, lam: float) -> np.ndarray:
    """The protocol's formula with explicit loops and scipy's sqrtm, whitening by
    (C + lam I)^(-1/2) (ZCA): PCA whitening V diag(1/sqrt(e + lam)) is that times the rotation V,
    and CORAL commutes with the rotation, so the outputs agree up to a right rotation."""
    d = x[dmso]
    n, k = d.shape
    mu = sum(d[i] for i in range(n)) / n

    def cov(rows: np.ndarray) -> np.ndarray:
        m = sum(rows[i] for i in range(len(rows))) / len(rows)
        return sum(np.outer(r - m, r - m) for r in rows) / (len(rows) - 1)

    eye = np.eye(k)
    z = (x - mu) @ np.linalg.inv(np.real(sqrtm(cov(d) + lam * eye)))
    c_t = cov(z[dmso])
    out = np.empty_like(z)
    for b in set(batch):
        rows = np.flatnonzero(batch == b)
        zd = z[rows[dmso[rows]]]
        c_s = cov(zd) if len(zd) >= 2 else c_t
        a = np.linalg.inv(np.real(sqrtm(c_s + eye))) @ np.real(sqrtm(c_t + lam * eye))
        for i in rows:
            out[i] = z[i] @ a
    return out


def assert_same_up_to_rotation(y: np.ndarray, y_ref: np.ndarray) -> None:
    # Y Y^T = Y_ref Y_ref^T  <=>  Y = Y_ref Q for an orthogonal Q (same number of columns).
    gram, gram_ref = y @ y.T, y_ref @ y_ref.T
    np.testing.assert_allclose(gram, gram_ref, rtol=1e-8, atol=1e-8 * np.abs(gram_ref).max())


CASES = {
    # more features (12) than DMSO wells (10): the DMSO covariance is singular
    "rank_deficient": ({"Week1": [2, 2], "Week2": [1, 2], "Week3": [3]}, 12),
    "full_rank": ({"Week1": [4, 3], "Week2": [5]}, 4),
    "batch_with_one_dmso": ({"Week1": [4, 3], "Week2": [1], "Week3": [3, 3]}, 5),
}


@pytest.mark.parametrize("lam", [1.0, 0.3])
@pytest.mark.parametrize("case", CASES)
def test_tvn_matches_direct_formula(case, lam):
    wells = make_wells(*CASES[case])
    feats = features(wells)
    out, _ = tvn(wells, lam=lam)
    dmso = (wells["Metadata_Compound"] == "DMSO").to_numpy()
    ref = direct_tvn(wells[feats].to_numpy(), dmso, wells["Metadata_Batch"].to_numpy(), lam)
    assert_same_up_to_rotation(out[features(out)].to_numpy(), ref)
    assert out.index.equals(wells.index)
    pd.testing.assert_frame_equal(out[META], wells[META])
    assert features(out) == [f"tvn_{i + 1}" for i in range(len(feats))]


def test_tvn_lambda_zero_full_rank_matches_direct_formula():
    wells = make_wells(*CASES["full_rank"])
    out, _ = tvn(wells, lam=0.0)
    dmso = (wells["Metadata_Compound"] == "DMSO").to_numpy()
    ref = direct_tvn(
        wells[features(wells)].to_numpy(), dmso, wells["Metadata_Batch"].to_numpy(), 0.0
    )
    assert_same_up_to_rotation(out[features(out)].to_numpy(), ref)


def with_probes(wells: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Non-DMSO probe wells at mu + e_j in every batch (they do not enter the fit): their TVN
    output is row j of the batch's linear map M_s = W A_s, (X - mu) -> TVN(X)."""
    feats = features(wells)
    mu = wells.loc[wells["Metadata_Compound"] == "DMSO", feats].mean().to_numpy()
    probes = []
    for batch in wells["Metadata_Batch"].unique():
        for j in range(len(feats)):
            values = mu + np.eye(len(feats))[j]
            probes.append([f"{batch}_0", f"P{j:02d}", "probe", 1.0, "P", batch, 1, *values])
    return pd.concat([wells, pd.DataFrame(probes, columns=wells.columns)], ignore_index=True), feats


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_tvn_maps_regularised_batch_covariance_onto_target(lam):
    """Per batch, A_s^T (C_s + I) A_s = C_t + lam I in whitened units; in raw units, with
    M_s = W A_s and W^-T W^-1 = C + lam I: M_s^T (C_raw_s + C + lam I) M_s = diag(e/(e+lam) + lam),
    e the DMSO covariance's eigenvalues in decreasing order (C_t = diag(e/(e+lam)))."""
    wells, feats = with_probes(make_wells(*CASES["rank_deficient"]))
    k = len(feats)
    out, _ = tvn(wells, lam=lam)
    dmso = wells["Metadata_Compound"] == "DMSO"
    c = np.cov(wells.loc[dmso, feats].to_numpy(), rowvar=False)
    e = np.clip(np.linalg.eigvalsh(c)[::-1], 0, None)
    target = np.diag(e / (e + lam) + lam)
    for batch in wells["Metadata_Batch"].unique():
        probe = (wells["Metadata_Batch"] == batch) & (wells["Metadata_Compound"] == "probe")
        m = out.loc[probe, features(out)].to_numpy()
        in_batch = dmso & (wells["Metadata_Batch"] == batch)
        c_s = np.cov(wells.loc[in_batch, feats].to_numpy(), rowvar=False)
        if in_batch.sum() < 2:  # no C_s: the fallback C_s = C_t, i.e. raw C_s = C
            c_s = c
        np.testing.assert_allclose(m.T @ (c_s + c + lam * np.eye(k)) @ m, target, atol=1e-8)


def test_tvn_single_batch_whitens_dmso():
    """One batch, lambda = 1: CORAL is the identity, the DMSO wells have mean 0 and the
    covariance diag(e / (e + 1))."""
    wells = make_wells({"Week1": [6, 5]}, 4)
    out, notes = tvn(wells)
    assert notes == []
    dmso = wells["Metadata_Compound"] == "DMSO"
    e = np.linalg.eigvalsh(np.cov(wells.loc[dmso, features(wells)].to_numpy(), rowvar=False))
    y = out.loc[dmso, features(out)].to_numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(
        np.cov(y, rowvar=False), np.diag(e[::-1] / (e[::-1] + 1)), atol=1e-12
    )


def test_tvn_dmso_mean_zero_when_batch_dmso_means_agree():
    """CORAL does not re-centre: the overall DMSO mean is 0 when the batches' DMSO means agree."""
    wells = make_wells(*CASES["rank_deficient"])
    feats = features(wells)
    dmso = wells["Metadata_Compound"] == "DMSO"
    batch_mean = wells[dmso].groupby("Metadata_Batch")[feats].transform("mean")
    wells.loc[dmso, feats] = wells.loc[dmso, feats] - batch_mean + 5.0
    out, _ = tvn(wells)
    y = out.loc[dmso, features(out)].to_numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-10)
    assert np.abs(y).max() > 0.1


def test_tvn_batch_with_one_dmso_well_falls_back_with_note():
    wells, feats = with_probes(make_wells(*CASES["batch_with_one_dmso"]))
    out, notes = tvn(wells)
    assert len(notes) == 1 and "C_s = C_t" in notes[0] and "Week2 (1)" in notes[0]
    assert "Week1" not in notes[0] and "Week3" not in notes[0]
    # lambda = 1: no CORAL change for Week2, its map is the whitening: W^T (C + I) W = I
    dmso = wells["Metadata_Compound"] == "DMSO"
    c = np.cov(wells.loc[dmso, feats].to_numpy(), rowvar=False)
    probe = (wells["Metadata_Batch"] == "Week2") & (wells["Metadata_Compound"] == "probe")
    w = out.loc[probe, features(out)].to_numpy()
    np.testing.assert_allclose(w.T @ (c + np.eye(len(feats))) @ w, np.eye(len(feats)), atol=1e-10)
    _, notes = tvn(wells, lam=0.5)
    assert "not the identity" in notes[0]


@pytest.mark.parametrize(("lam", "message"), [(0.0, "is singular"), (-1.0, "must be >= 0")])
def test_tvn_rejects_non_positive_lambda_on_singular_covariance(lam, message):
    wells = make_wells(*CASES["rank_deficient"])
    with pytest.raises(CellclrError, match=message):
        tvn(wells, lam=lam)


def test_tvn_needs_batch_and_two_dmso_wells():
    wells = make_wells({"Week1": [1]}, 3)
    with pytest.raises(CellclrError, match=">= 2 DMSO wells"):
        tvn(wells)
    with pytest.raises(CellclrError, match="Metadata_Batch"):
        tvn(make_wells({"Week1": [3]}, 3).drop(columns="Metadata_Batch"))


# --- per-plate standardisation ---------------------------------------------------------------


def direct_standardize(wells: pd.DataFrame, std: pd.DataFrame | None = None) -> pd.DataFrame:
    feats = features(wells)
    dmso = wells[wells["Metadata_Compound"] == "DMSO"]
    mean = dmso.groupby("Metadata_Plate")[feats].mean()
    std = dmso.groupby("Metadata_Plate")[feats].std() if std is None else std
    out = wells.copy()
    for plate, rows in wells.groupby("Metadata_Plate"):
        out.loc[rows.index, feats] = (rows[feats] - mean.loc[plate]) / std.loc[plate]
    return out


def test_dmso_standardisation_matches_pandas():
    wells = make_wells({"Week1": [3, 4], "Week2": [5]}, 6)
    out, notes = postprocess(wells, "dmso")
    assert notes == []
    pd.testing.assert_frame_equal(out, direct_standardize(wells))
    dmso = out[out["Metadata_Compound"] == "DMSO"]
    np.testing.assert_allclose(dmso.groupby("Metadata_Plate")[features(out)].mean(), 0, atol=1e-12)


def pooled_std(wells: pd.DataFrame, plates: list[str]) -> pd.Series:
    feats = features(wells)
    dmso = wells[(wells["Metadata_Compound"] == "DMSO") & wells["Metadata_Plate"].isin(plates)]
    groups = dmso.groupby("Metadata_Plate")[feats]
    ss = ((dmso[feats] - groups.transform("mean")) ** 2).sum()
    return np.sqrt(ss / (groups.size() - 1).sum())


def test_dmso_small_controls_use_pooled_std_of_batch_then_all_plates():
    # Week1_1 has 2 DMSO wells, Week1_2 one; Week2 has a single one-well plate: no pool.
    wells = make_wells({"Week1": [4, 2, 1], "Week2": [1], "Week3": [3]}, 5)
    out, notes = standardize_to_controls(wells)
    feats = features(wells)
    plates = sorted(wells["Metadata_Plate"].unique())
    std = wells[wells["Metadata_Compound"] == "DMSO"].groupby("Metadata_Plate")[feats].std()
    std = std.reindex(plates)
    week1 = pooled_std(wells, ["Week1_0", "Week1_1", "Week1_2"])
    std.loc["Week1_1"] = std.loc["Week1_2"] = week1
    std.loc["Week2_0"] = pooled_std(wells, plates)
    pd.testing.assert_frame_equal(out, direct_standardize(wells, std))
    assert len(notes) == 2
    assert "batch Week1" in notes[0] and "Week1_1 (2)" in notes[0] and "Week1_2 (1)" in notes[0]
    assert "all plates" in notes[1] and "Week2_0 (1)" in notes[1]


def test_dmso_without_batch_pools_all_plates():
    wells = make_wells({"Week1": [4, 2], "Week2": [3]}, 3).drop(columns="Metadata_Batch")
    out, notes = standardize_to_controls(wells)
    std = (
        wells[wells["Metadata_Compound"] == "DMSO"].groupby("Metadata_Plate")[features(wells)].std()
    )
    std.loc["Week1_1"] = pooled_std(wells, list(std.index))
    pd.testing.assert_frame_equal(out, direct_standardize(wells, std))
    assert len(notes) == 1 and "all plates" in notes[0] and "Week1_1 (2)" in notes[0]


def test_dmso_plate_without_controls_uses_its_batch():
    wells = make_wells({"Week1": [3, 0, 3], "Week2": [3]}, 3)
    out, notes = standardize_to_controls(wells)
    dmso = wells["Metadata_Compound"] == "DMSO"
    week1 = wells["Metadata_Batch"] == "Week1"
    feats = features(wells)
    centre = wells.loc[dmso & week1, feats].mean().to_numpy()
    plate1 = (wells["Metadata_Plate"] == "Week1_1").to_numpy()
    pooled = pooled_std(wells, ["Week1_0", "Week1_2"]).to_numpy()
    expected = (wells.loc[plate1, feats].to_numpy() - centre) / pooled
    np.testing.assert_allclose(out.loc[plate1, feats].to_numpy(), expected, rtol=1e-12)
    assert any("Week1_1" in n and "centred on their batch" in n for n in notes)


def test_dmso_batch_without_controls_is_an_error():
    wells = make_wells({"Week1": [3, 3], "Week2": [0]}, 3)
    with pytest.raises(CellclrError, match="Week2_0") as info:
        standardize_to_controls(wells)
    assert "Week1_0" not in str(info.value)


def test_dmso_one_control_well_per_plate_uses_the_spread_between_plates():
    wells = make_wells({"Week1": [1, 1], "Week2": [1]}, 3)
    out, notes = standardize_to_controls(wells)
    dmso = wells["Metadata_Compound"] == "DMSO"
    spread = wells.loc[dmso, features(wells)].std(ddof=1).to_numpy()
    plate0 = (wells["Metadata_Plate"] == "Week1_0").to_numpy()
    centre = wells.loc[dmso.to_numpy() & plate0, features(wells)].to_numpy()
    np.testing.assert_allclose(
        out.loc[plate0, features(wells)].to_numpy(),
        (wells.loc[plate0, features(wells)].to_numpy() - centre) / spread,
    )
    assert any("no plate has two" in n for n in notes)


def test_dmso_zero_std_feature_is_centred_not_scaled():
    wells = make_wells({"Week1": [3, 3]}, 3)
    plate0_dmso = (wells["Metadata_Plate"] == "Week1_0") & (wells["Metadata_Compound"] == "DMSO")
    wells.loc[plate0_dmso, "f1"] = 0.1  # constant among the plate's DMSO wells only
    out, notes = standardize_to_controls(wells)
    plate0 = wells["Metadata_Plate"] == "Week1_0"
    np.testing.assert_allclose(out.loc[plate0, "f1"], wells.loc[plate0, "f1"] - 0.1, atol=1e-15)
    assert np.isfinite(out[features(out)].to_numpy()).all()
    assert len(notes) == 1 and "Week1_0" in notes[0] and "f1" in notes[0]
    assert "f0" not in notes[0]


# --- method selection and errors -------------------------------------------------------------


def test_postprocess_none_unknown_and_missing_controls():
    wells = make_wells({"Week1": [3, 3]}, 3)
    assert POSTPROCESSING == ("none", "dmso", "tvn")
    out, notes = postprocess(wells, "none")
    pd.testing.assert_frame_equal(out, wells)
    assert notes == []
    with pytest.raises(CellclrError, match="unknown post-processing"):
        postprocess(wells, "sphere")
    for method in ("dmso", "tvn"):
        with pytest.raises(CellclrError, match="Metadata_Compound == 'NEG'"):
            postprocess(wells, method, control="NEG")


@pytest.mark.parametrize("method", POSTPROCESSING)
def test_postprocess_keeps_a_duplicated_index(method):
    wells = make_wells({"Week1": [3, 3], "Week2": [4]}, 3)
    wells.index = np.zeros(len(wells), dtype=int)
    out, _ = postprocess(wells, method)
    assert out.index.equals(wells.index)
    pd.testing.assert_frame_equal(out[META], wells[META])
    assert np.isfinite(out[features(out)].to_numpy()).all()


def test_postprocess_rejects_nan_features():
    wells = make_wells({"Week1": [3, 3]}, 3)
    wells.iloc[0, wells.columns.get_loc("f0")] = np.nan
    with pytest.raises(CellclrError, match="clean_features"):
        postprocess(wells, "dmso")


# --- feature hygiene -------------------------------------------------------------------------


def test_clean_features_drops_constant_and_nonfinite_columns():
    wells = make_wells({"Week1": [3, 3]}, 4)
    wells["f1"] = 2.5
    wells.iloc[0, wells.columns.get_loc("f2")] = np.nan
    wells.iloc[1, wells.columns.get_loc("f3")] = np.inf
    wells["Metadata_Constant"] = 1
    out, dropped = clean_features(wells)
    assert dropped == {"nonfinite": ["f2", "f3"], "constant": ["f1"]}
    assert list(out.columns) == [*META, "f0", "Metadata_Constant"]
    out, dropped = clean_features(out)
    assert dropped == {"nonfinite": [], "constant": []}


def test_clean_features_all_dropped_is_an_error():
    wells = make_wells({"Week1": [3]}, 2)
    wells["f0"] = 1.0
    wells["f1"] = np.nan
    with pytest.raises(CellclrError, match="no feature column is left"):
        clean_features(wells)


def test_dmso_standardisation_does_not_depend_on_the_scale():
    wells = wells_table()
    big = wells.assign(**{f: wells[f] * 1e200 for f in FEATURES})
    out, _ = standardize_to_controls(wells)
    out_big, _ = standardize_to_controls(big)
    np.testing.assert_allclose(out_big[FEATURES], out[FEATURES], rtol=1e-10)


def test_tvn_of_huge_values_whitens_the_controls():
    wells = wells_table()
    wells["Metadata_Batch"] = "Week1"  # one batch: CORAL is the identity
    wells[FEATURES] = wells[FEATURES] * 1e200
    out, _ = tvn(wells)
    controls = out.loc[wells["Metadata_Compound"] == "DMSO", [f"tvn_{i}" for i in range(1, 5)]]
    np.testing.assert_allclose(controls.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(np.cov(controls, rowvar=False), np.eye(4), atol=1e-12)


def test_tvn_of_huge_values_with_a_singular_covariance_is_a_clear_error():
    wells = wells_table()
    wells[FEATURES] = wells[FEATURES] * 1e200
    wells["e"] = wells["a"] * 2  # the DMSO covariance is singular
    with pytest.raises(CellclrError, match=r"lambda = 1\.0 vanishes beside feature values up to"):
        tvn(wells)


def test_tvn_that_overflows_is_a_clear_error(monkeypatch):
    import cellclr.profiling.postprocess as postprocess

    def overflowing(xw, *args):
        return np.full_like(xw, np.inf), []

    monkeypatch.setattr(postprocess, "_coral", overflowing)
    with pytest.raises(CellclrError, match="TVN overflowed: feature values up to"):
        tvn(wells_table())
