"""Running statistics of a table that arrives in blocks of rows (an embeddings file, a row group
at a time), so that memory holds one block and the groups, never the table: per group its first
row, which columns vary within it, its row count and float64 sums of its features; per column
the rows where it is empty or not a number. ``profiles.stream_well_profiles`` gives them
meaning."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cellclr.metadata import MetadataError, concentration_error


class GroupSums:
    """Per group of ``keys`` (in order of first appearance): the first row of the ``described``
    columns, whether each varies within the group (as ``nunique(dropna=False) > 1``), the
    number of rows, and float64 sums of the ``features``; per feature whether all its values
    so far are finite."""

    def __init__(self, keys: list[str], described: list[str], features: list[str]) -> None:
        self.keys, self.described, self.features = keys, described, features
        self._ids: dict[tuple, int] = {}
        self.firsts: pd.DataFrame | None = None  # keys + described, a row per group
        self.varies = np.zeros((0, len(described)), bool)
        self.counts = np.zeros(0, np.int64)
        self.sums = np.zeros((0, len(features)))
        self.finite = np.ones(len(features), bool)

    def add(self, block: pd.DataFrame) -> None:
        """Count one block of rows in."""
        if block.empty:
            return
        ids = self._group_ids(block)
        self._update_varies(block, ids)
        values = _numbers(block[self.features])
        groups, totals = _group_totals(values, ids)
        self.sums[groups] += totals
        self.counts += np.bincount(ids, minlength=len(self.counts))
        self.finite &= np.isfinite(values).all(axis=0)

    def _group_ids(self, block: pd.DataFrame) -> np.ndarray:
        """Each row's group number, adding the groups first seen in this block."""
        local = block.groupby(self.keys, sort=False, dropna=False).ngroup().to_numpy()
        first = np.unique(local, return_index=True)[1]  # local groups number by first row
        keys = block[self.keys].iloc[first].itertuples(index=False, name=None)
        known = len(self._ids)
        number = np.array([self._ids.setdefault(key, len(self._ids)) for key in keys])
        new = first[number >= known]
        if len(new):
            rows = block[self.keys + self.described].iloc[new]
            firsts = [rows] if self.firsts is None else [self.firsts, rows]
            self.firsts = pd.concat(firsts, ignore_index=True)
            self.varies = np.vstack([self.varies, np.zeros((len(new), len(self.described)), bool)])
            self.counts = np.concatenate([self.counts, np.zeros(len(new), np.int64)])
            self.sums = np.vstack([self.sums, np.zeros((len(new), len(self.features)))])
        return number[local]

    def _update_varies(self, block: pd.DataFrame, ids: np.ndarray) -> None:
        """Mark the described columns that differ within a group: in this block, or from the
        group's first row."""
        if not self.described:
            return
        seen = np.unique(ids)
        both = pd.concat(
            [self.firsts[self.described].iloc[seen], block[self.described]], ignore_index=True
        )
        distinct = both.groupby(np.concatenate([seen, ids])).nunique(dropna=False)
        self.varies[distinct.index.to_numpy()] |= distinct.to_numpy() > 1

    def means(self) -> pd.DataFrame:
        """The mean of each feature per group; NaN in every group for a feature with a
        non-finite value in any row."""
        means = self.sums / self.counts[:, None]
        means[:, ~self.finite] = np.nan
        return pd.DataFrame(means, columns=self.features)


def _group_totals(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups of ``ids`` and the float64 sums of their rows of ``values``. Rows come
    sorted by group when a file keeps a well's cells together (then nothing is copied); the
    sums are taken a few columns at a time, so float32 is summed in float64 without a float64
    copy of the block."""
    if (np.diff(ids) < 0).any():
        order = np.argsort(ids, kind="stable")
        values, ids = values[order], ids[order]
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    totals = np.empty((len(starts), values.shape[1]))
    for j in range(0, values.shape[1], 64):
        part = slice(j, j + 64)
        np.add.reduceat(values[:, part], starts, axis=0, dtype=np.float64, out=totals[:, part])
    return ids[starts], totals


def _numbers(features: pd.DataFrame) -> np.ndarray:
    """The features as an array: float32 stays float32 (summed in float64), the rest float64."""
    if all(dtype == np.float32 for dtype in features.dtypes):
        return features.to_numpy()
    return features.to_numpy(np.float64, na_value=np.nan)


@dataclass
class Found:
    """The rows of one column with a problem: how many, the first five (by position in the
    whole table) and the first one's value."""

    count: int = 0
    rows: list[int] = field(default_factory=list)
    value: object = None

    def add(self, rows: np.ndarray, offset: int, values: pd.Series) -> None:
        """Note ``rows`` (positions in a block that starts at row ``offset``) of ``values``."""
        if len(rows) and not self.count:
            self.value = values.iloc[rows[0]]
        self.count += len(rows)
        self.rows = (self.rows + (rows[:5] + offset).tolist())[:5]


class RowProblems:
    """The rows, across blocks, where a required column is empty or a concentration column
    holds something else than a number, or a negative or infinite one: counted, and the first
    named by position in the whole table, in the words of ``metadata.require_filled`` and
    ``metadata.as_concentrations``."""

    def __init__(self, required: list[str], concentrations: list[str]) -> None:
        self.rows = 0
        self.empty = {column: Found() for column in required}
        self.text = {column: Found() for column in concentrations}
        self.range = {column: Found() for column in concentrations}

    @property
    def found(self) -> bool:
        """Whether any problem was found so far."""
        groups = [self.empty, self.text, self.range]
        return any(found.count for group in groups for found in group.values())

    def add(self, block: pd.DataFrame) -> None:
        for column, found in self.empty.items():
            found.add(np.flatnonzero(block[column].isna().to_numpy()), self.rows, block[column])
        for column, found in self.text.items():
            values = block[column]
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            found.add(np.flatnonzero(bad.to_numpy()), self.rows, values)
            wrong = numbers.notna() & ~(np.isfinite(numbers) & (numbers >= 0))
            self.range[column].add(np.flatnonzero(wrong.to_numpy()), self.rows, values)
        self.rows += len(block)

    def check(self, source: str) -> None:
        """Raise for the first problem, as ``require_filled`` then ``as_concentrations``
        would."""
        for column, found in self.empty.items():
            if found.count:
                raise MetadataError(
                    f"{source}: column {column} is empty in {found.count} rows "
                    f"(first: {found.rows})"
                )
        for column, found in self.text.items():
            if found.count:
                raise MetadataError(
                    f"{source}: {column} must be a number, got {found.value!r} in row "
                    f"{found.rows[0]} ({found.count} such rows)"
                )
        for column, found in self.range.items():
            if found.count:
                raise concentration_error(source, column, found.value, found.rows[0], found.count)
