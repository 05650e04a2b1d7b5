"""The embeddings file between ``embed`` (or a baseline) and ``profile``: one row per cell, its
``Metadata_*`` columns beside its features, in parquet row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cellclr.metadata import read_output_table

EMBEDDINGS = "embeddings.parquet"  # what `embed` (and the baselines) write: metadata + features
FEATURE_PREFIX = "emb_"  # feature columns of a learned embedding: emb_0000, emb_0001, ...
ROWS_PER_GROUP = 65536  # parquet row group of the embeddings: memory holds one at a time


def read_embeddings(folder: str | Path) -> pd.DataFrame:
    """The cells of an ``embed`` output folder (an error if it is not one)."""
    return read_output_table(folder, EMBEDDINGS, "embed")


class EmbeddingWriter:
    """Writes ``embeddings.parquet``: the cells' metadata beside their features, row-aligned,
    appended in blocks and written in row groups, so memory holds one group, not the table."""

    def __init__(self, path: Path, metadata: pd.DataFrame, names: list[str]) -> None:
        self.path, self.metadata, self.names = path, metadata.reset_index(drop=True), names
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[np.ndarray] = []
        self._done = 0

    def append(self, features: np.ndarray) -> None:
        self._pending.append(np.asarray(features, dtype=np.float32))
        if sum(len(p) for p in self._pending) >= ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        values = np.concatenate(self._pending)
        self._pending = []
        for start in range(0, len(values), ROWS_PER_GROUP):
            block = values[start : start + ROWS_PER_GROUP]
            rows = self.metadata.iloc[self._done : self._done + len(block)].reset_index(drop=True)
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
            self._writer.close()  # release the file; the caller's staged folder is discarded

    def close(self) -> None:
        if self._pending:
            self._flush()
        if self._writer is not None:
            self._writer.close()
        if self._done != len(self.metadata):
            raise RuntimeError(
                f"{self.path}: {self._done} feature rows for {len(self.metadata)} cells"
            )
