"""The order in which an epoch visits the cells: a function of the seed and the epoch alone (so a
resumed run, or another number of processes, sees the same), split into global batches.

- ``uniform``: a permutation of all cells.
- ``balanced``: every group (a treatment, or the values of ``data.balance_by``) is drawn
  equally often: the epoch keeps its length (one draw per cell), each group gets an equal
  share of it, taken from a permutation of its cells repeated as often as needed, and the
  draws are shuffled together. Most cells of a screen are DMSO or a few strong compounds;
  balancing spends the views on every treatment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cellclr.columns import COMPOUND, TREATMENT
from cellclr.errors import CellclrError
from cellclr.store import CropStore


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """This epoch's global batches of cell indices (the incomplete last one is dropped);
    ``groups`` (a code per cell) makes the epoch balanced over them."""
    g = _generator(seed, epoch)
    order = torch.randperm(n, generator=g).numpy() if groups is None else _balanced(groups, g)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n // batch_size)]


def _balanced(groups: np.ndarray, g: torch.Generator) -> np.ndarray:
    n = len(groups)
    members = pd.Series(np.arange(n)).groupby(groups, sort=True).indices
    share = -(-n // len(members))  # ceil: every group the same number of draws
    draws = []
    for cells in members.values():
        repeats = -(-share // len(cells))
        cycles = [cells[torch.randperm(len(cells), generator=g).numpy()] for _ in range(repeats)]
        draws.append(np.concatenate(cycles)[:share])
    order = np.concatenate(draws)
    return order[torch.randperm(len(order), generator=g).numpy()][:n]


def group_codes(store: CropStore, by: str) -> np.ndarray:
    """A code per cell for ``by``: ``treatment`` (compound + concentration), ``compound``, or a
    ``Metadata_`` column of the store's cell index."""
    cells = store.cells
    columns = {"treatment": TREATMENT, "compound": [COMPOUND]}.get(by, [by])
    missing = [c for c in columns if c not in cells]
    if missing:
        known = ", ".join(c for c in cells.columns if c.startswith("Metadata_"))
        what = f"{by!r} (column {missing[0]})" if by in ("treatment", "compound") else missing[0]
        raise CellclrError(
            f"{store.path}: its cells have no {what} to group them by (data.sampler = "
            "'balanced' balances over data.balance_by; SupCon's supcon.label): its columns are "
            f"{known}. Use data.sampler = 'uniform', another data.balance_by such as "
            "Metadata_Well, or a store whose cells name treatments (crop --platemap)"
        )
    return cells.groupby(columns, sort=True, dropna=False).ngroup().to_numpy(np.int64).copy()
