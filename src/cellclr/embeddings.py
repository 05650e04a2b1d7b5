"""The embeddings file between ``embed`` (or a baseline) and ``profile``: one row per cell, its
``Metadata_*`` columns beside its features, in parquet row groups (one file that pandas and
pyarrow read as usual; ``iter_embeddings`` reads it a row group at a time)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cellclr.errors import naming
from cellclr.metadata import MetadataError, read_output_table

EMBEDDINGS = "embeddings.parquet"  # what `embed` (and the baselines) write: metadata + features
FEATURE_PREFIX = "emb_"  # feature columns of a learned embedding: emb_0000, emb_0001, ...
ROWS_PER_GROUP = 16384  # parquet row group of the embeddings (32 MB of 512 float32 features):
# writing and `profile` hold one at a time, so this bounds their memory


def load_embeddings(folder: str | Path) -> pd.DataFrame:
    """The cells of an ``embed`` output folder (an error if it is not one)."""
    return read_output_table(folder, EMBEDDINGS, "embed")


def iter_embeddings(folder: str | Path) -> Iterator[pd.DataFrame]:
    """The cells of an ``embed`` output folder, a row group at a time, as ``load_embeddings``
    would give them (same columns and dtypes), with its errors for a folder that is not one."""
    path = Path(folder) / EMBEDDINGS
    not_output = f"{folder} is not a finished `embed` output"
    if not Path(folder).is_dir():
        raise MetadataError(f"{not_output}: no such folder")
    if not path.is_file():
        raise MetadataError(f"{not_output}: missing {EMBEDDINGS}")
    if path.stat().st_size == 0:
        raise MetadataError(f"{not_output}: the {EMBEDDINGS} is an empty file")
    try:
        with pq.ParquetFile(path) as file:
            for group in range(file.num_row_groups):
                yield file.read_row_group(group).to_pandas()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise MetadataError(f"{not_output}: cannot read the {EMBEDDINGS}: {e}") from None


class _Rows:
    """Metadata rows handed out in order, from a whole table or from blocks of one table."""

    def __init__(self, metadata: pd.DataFrame | Iterable[pd.DataFrame]) -> None:
        self._blocks = iter([metadata] if isinstance(metadata, pd.DataFrame) else metadata)
        self._held: pd.DataFrame | None = None  # read from the blocks, not yet taken

    def take(self, n: int) -> pd.DataFrame:
        """The next ``n`` rows (fewer when the blocks run out)."""
        parts = [] if self._held is None else [self._held]
        rows = sum(len(part) for part in parts)
        while rows < n and (block := next(self._blocks, None)) is not None:
            parts.append(block)
            rows += len(block)
        if not parts:
            return pd.DataFrame()
        table = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        table = table.reset_index(drop=True)
        self._held = table.iloc[n:] if len(table) > n else None
        return table.iloc[:n]

    def left(self) -> int:
        """The number of rows not taken (reading the blocks to their end)."""
        held = 0 if self._held is None else len(self._held)
        return held + sum(len(block) for block in self._blocks)


class EmbeddingWriter:
    """Writes ``embeddings.parquet``: the cells' metadata beside their features, row-aligned,
    appended in blocks and written in row groups, so memory holds one group, not the table.

    ``metadata``: a DataFrame of all cells, or DataFrame blocks of it in row order (of any
    sizes, with the same columns and dtypes), so that it need not be in memory at once."""

    def __init__(
        self, path: Path, metadata: pd.DataFrame | Iterable[pd.DataFrame], names: list[str]
    ) -> None:
        self.path, self.names = path, names
        self._rows = _Rows(metadata)
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[np.ndarray] = []
        self._done = 0

    def append(self, features: np.ndarray) -> None:
        self._pending.append(np.asarray(features, dtype=np.float32))
        if sum(len(p) for p in self._pending) >= ROWS_PER_GROUP:
            with naming(self.path):
                self._flush()

    def _flush(self, last: bool = False) -> None:
        """Write the pending rows in whole row groups (and, when ``last``, the rest)."""
        values = np.concatenate(self._pending)
        end = len(values) if last else len(values) - len(values) % ROWS_PER_GROUP
        self._pending = [values[end:].copy()] if end < len(values) else []
        for start in range(0, end, ROWS_PER_GROUP):
            block = values[start : start + ROWS_PER_GROUP]
            rows = self._rows.take(len(block))
            if len(rows) < len(block):
                raise RuntimeError(
                    f"{self.path}: at least {self._done + len(values) - start} feature rows for "
                    f"{self._done + len(rows)} cells"
                )
            frame = pd.concat([rows, pd.DataFrame(block, columns=self.names)], axis=1)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
            self._done += len(block)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        elif self._writer is not None:
            with contextlib.suppress(OSError):  # the error that brought us here is the one
                self._writer.close()  # release the file; the caller's staged folder is discarded

    def close(self) -> None:
        with naming(self.path):
            try:
                if self._pending:
                    self._flush(last=True)
            finally:
                if self._writer is not None:
                    self._writer.close()
        cells = self._done + self._rows.left()
        if self._done != cells:
            raise RuntimeError(f"{self.path}: {self._done} feature rows for {cells} cells")
