import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cellclr.embeddings as embeddings
from cellclr.cli import main
from cellclr.errors import CellclrError
from tests.helpers import sets


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


def test_embedding_writer_takes_metadata_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "ROWS_PER_GROUP", 4)
    meta = pd.DataFrame({"Metadata_Cell": np.arange(16), "Metadata_Well": list("AABBCCDDEEFFGGHH")})
    feats = np.arange(32, dtype=np.float32).reshape(16, 2)
    pulled = []

    def blocks():  # sizes unrelated to the row groups, an empty one, odd indexes
        for start, stop in [(0, 3), (3, 8), (8, 9), (9, 9), (9, 16)]:
            pulled.append(stop)
            yield meta.iloc[start:stop].set_axis(range(100 + start, 100 + stop))

    path = tmp_path / embeddings.EMBEDDINGS
    with embeddings.EmbeddingWriter(path, blocks(), ["f0", "f1"]) as writer:
        writer.append(feats[:6])
        assert pulled == [3, 8]  # one group written: the metadata is read as it is needed
        writer.append(feats[6:])
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back[meta.columns], meta)
    np.testing.assert_array_equal(back[["f0", "f1"]].to_numpy(), feats)
    assert [len(g) for g in embeddings.iter_embeddings(tmp_path)] == [4, 4, 4, 4]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [(5, "5 feature rows for 6 cells"), (7, "at least 7 feature rows for 6 cells")],
)
def test_embedding_writer_refuses_blocks_of_another_count(tmp_path, monkeypatch, rows, problem):
    monkeypatch.setattr(embeddings, "ROWS_PER_GROUP", 4)
    blocks = (pd.DataFrame({"Metadata_A": [i, i]}) for i in range(3))
    writer = embeddings.EmbeddingWriter(tmp_path / "e.parquet", blocks, ["f"])
    with pytest.raises(RuntimeError, match=problem):
        writer.append(np.zeros((rows, 1)))
        writer.close()


def test_embedding_writer_refuses_a_row_count_mismatch(tmp_path):
    writer = embeddings.EmbeddingWriter(
        tmp_path / "e.parquet", pd.DataFrame({"Metadata_A": [1, 2]}), ["f"]
    )
    writer.append(np.zeros((1, 1)))
    with pytest.raises(RuntimeError, match="1 feature rows for 2 cells"):
        writer.close()


@pytest.mark.parametrize(
    "read", [embeddings.load_embeddings, lambda folder: list(embeddings.iter_embeddings(folder))]
)
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("no folder", "no such folder"),
        ("no file", "missing embeddings.parquet"),
        ("empty", "the embeddings.parquet is an empty file"),
        ("truncated", "cannot read the embeddings.parquet: "),
    ],
)
def test_read_embeddings_of_an_unfinished_folder(tmp_path, damage, problem, read):
    folder = tmp_path / "embeddings"
    if damage != "no folder":
        folder.mkdir()
    if damage == "empty":
        (folder / embeddings.EMBEDDINGS).write_bytes(b"")
    if damage == "truncated":
        pd.DataFrame({"Metadata_A": [1], "emb_0000": [0.5]}).to_parquet(folder / "e.parquet")
        (folder / embeddings.EMBEDDINGS).write_bytes((folder / "e.parquet").read_bytes()[:50])
    with pytest.raises(CellclrError, match=f"{folder} is not a finished `embed` output: {problem}"):
        read(folder)


# ---- issue 18 item 8: a full disk names the file ---------------------------------------------


def test_a_full_disk_while_embedding_names_the_file(tmp_path, store, monkeypatch, capsys):
    assert main(["train", "--crops", str(store), "--out", str(tmp_path / "m"), *sets()]) == 0
    capsys.readouterr()

    def full(self, *args, **kwargs):  # what pyarrow raises: errno 28, no file name
        raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    out = tmp_path / "e"
    args = ["embed", "--model", str(tmp_path / "m"), "--crops", str(store), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"cellclr: error: {out}.partial/embeddings.parquet: Error writing bytes to file. "
        "Detail: [errno 28] No space left on device"
    ]
    assert not out.exists() and not (tmp_path / "e.partial").exists()
