"""Replicate retrieval (copairs): label-free, the phenotypic-activity measure of the field. For
each well of a treatment, its replicate wells on other plates are ranked against the control
wells (cosine similarity); the average precision of each well, averaged per treatment, is the
treatment's mAP, with a permutation p-value (copairs; Benjamini-Hochberg corrected). Used to
choose hyperparameters without the MoA labels that NSC grades."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from cellclr.metadata import feature_columns, unit_rows

TREATMENT, PLATE, CONTROL = "Metadata_Treatment", "Metadata_Plate", "Metadata_IsControl"


@contextmanager
def quiet_zero_rows() -> Iterator[None]:
    """copairs divides by row norms in worker threads: a zero row (a control well centred on
    itself, say) warns and scores NaN, which is then left out."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        yield


def replicate_map(
    wells: pd.DataFrame, control: str = "DMSO", seed: int = 0, null_size: int = 1000
) -> dict[str, float | int]:
    """``map``: the mean over treatments of their replicate mAP; ``retrieved``: the fraction of
    treatments whose mAP is significant (corrected p < 0.05); ``treatments``: how many had a
    replicate on another plate and control wells to rank against (NaN scores when none)."""
    from copairs.map import average_precision, mean_average_precision
    from copairs.matching import UnpairedException

    compound = wells["Metadata_Compound"].astype(str)
    concentration = wells["Metadata_Concentration"].astype(float).map("{:g}".format)
    meta = pd.DataFrame(
        {
            TREATMENT: (compound + "@" + concentration).to_numpy(),
            PLATE: wells["Metadata_Plate"].astype(str).to_numpy(),
            CONTROL: (compound == control).astype(str).to_numpy(),
        }
    )
    none = {"map": float("nan"), "retrieved": float("nan"), "treatments": 0}
    if not (meta[CONTROL] == "True").any():
        return none
    x = unit_rows(wells[feature_columns(wells)].to_numpy(np.float64))
    try:  # copairs divides by row norms itself: a zero row (no signal) gives NaN, left out
        with quiet_zero_rows():
            ap = average_precision(
                meta,
                x,
                pos_sameby=[TREATMENT],
                pos_diffby=[PLATE],
                neg_sameby=[],
                neg_diffby=[TREATMENT, CONTROL],
                progress_bar=False,
            )
    except UnpairedException:  # no treatment has a replicate on another plate
        return none
    ap = ap[(ap[CONTROL] == "False") & ap["average_precision"].notna()]
    if ap.empty:
        return none
    scores = mean_average_precision(
        ap, [TREATMENT], null_size=null_size, threshold=0.05, seed=seed, progress_bar=False
    )
    return {
        "map": float(scores["mean_average_precision"].mean()),
        "retrieved": float(scores["below_corrected_p"].mean()),
        "treatments": len(scores),
    }
