import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cellclr.embeddings as embeddings
from cellclr.errors import CellclrError


def test_embedding_writer_row_groups_keep_rows_aligned(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "ROWS_PER_GROUP", 3)
    meta = pd.DataFrame({"Metadata_Cell": np.arange(10), "Metadata_Well": list("AABBCCDDEE")})
    feats = np.arange(20, dtype=np.float32).reshape(10, 2)
    path = tmp_path / "e.parquet"
    writer = embeddings.EmbeddingWriter(path, meta, ["f0", "f1"])
    for block in (feats[:4], feats[4:5], feats[5:]):  # uneven appends across group borders
        writer.append(block)
    writer.close()
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back[meta.columns], meta)
    np.testing.assert_array_equal(back[["f0", "f1"]].to_numpy(), feats)
    assert pq.ParquetFile(path).num_row_groups == 4  # 3 + 3 + 3 + 1: memory holds one group


def test_embedding_writer_refuses_a_row_count_mismatch(tmp_path):
    writer = embeddings.EmbeddingWriter(
        tmp_path / "e.parquet", pd.DataFrame({"Metadata_A": [1, 2]}), ["f"]
    )
    writer.append(np.zeros((1, 1)))
    with pytest.raises(RuntimeError, match="1 feature rows for 2 cells"):
        writer.close()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("no folder", "no such folder"),
        ("no file", "missing embeddings.parquet"),
        ("truncated", "cannot read the embeddings.parquet: "),
    ],
)
def test_read_embeddings_of_an_unfinished_folder(tmp_path, damage, problem):
    folder = tmp_path / "embeddings"
    if damage != "no folder":
        folder.mkdir()
    if damage == "truncated":
        pd.DataFrame({"Metadata_A": [1], "emb_0000": [0.5]}).to_parquet(folder / "e.parquet")
        (folder / embeddings.EMBEDDINGS).write_bytes((folder / "e.parquet").read_bytes()[:50])
    with pytest.raises(CellclrError, match=f"{folder} is not a finished `embed` output: {problem}"):
        embeddings.read_embeddings(folder)
