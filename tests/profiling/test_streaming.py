"""Well profiles streamed a block at a time equal the in-memory ``well_profiles``: numbers,
columns, dtypes, row order and errors."""

import numpy as np
import pandas as pd
import pytest

import cellclr
import cellclr.embeddings as embeddings
from cellclr.config import Config
from cellclr.errors import CellclrError
from cellclr.outputs import write_manifest
from cellclr.profiling.profiles import (
    WELLS,
    embedded_well_profiles,
    stream_well_profiles,
    well_profiles,
    write_profiles,
)
from cellclr.stages import Stage

WELL_LIST = [  # plate, well, compound, concentration, moa, batch
    ("P2", "B01", "x", 1.0, "M1", "W1"),
    ("P1", "A02", "x", 3.0, "M1", "W1"),
    ("P1", "A01", "DMSO", 0.0, "DMSO", "W1"),
    ("P10", "A01", "y", 1.0, "M2", "W2"),
    ("P10", "A02", "DMSO", 0.0, "DMSO", "W2"),
    ("P2", "A01", "DMSO", 0.0, "DMSO", "W1"),
]


def cells_table(kind: str = "text", seed: int = 0) -> pd.DataFrame:
    """Cells of six wells, shuffled (so every well is split across blocks): a site that varies
    within wells, a note constant per well (missing in one), float32 features of which f2 has
    a NaN cell and f3 an infinite one, and an integer feature. ``kind``: the metadata as text
    (concentrations too) or as categoricals."""
    rng = np.random.default_rng(seed)
    well = rng.integers(0, len(WELL_LIST), 200)
    meta = pd.DataFrame([WELL_LIST[w] for w in well])
    cells = pd.DataFrame(
        {
            "Metadata_Plate": meta[0],
            "Metadata_Well": meta[1],
            "Metadata_Site": rng.integers(1, 4, len(well)),
            "Metadata_Compound": meta[2],
            "Metadata_Concentration": meta[3],
            "Metadata_MoA": meta[4],
            "Metadata_Batch": meta[5],
            "Metadata_Note": np.where(well == 3, None, np.take(list("abcdef"), well)),
        }
    )
    if kind == "text":
        cells["Metadata_Concentration"] = cells["Metadata_Concentration"].map(str)
    else:
        for column in cells:
            cells[column] = cells[column].astype("category")
    features = rng.normal(size=(len(cells), 4)).astype(np.float32)
    features[17, 2], features[150, 3] = np.nan, np.inf
    cells[[f"f{i}" for i in range(4)]] = features
    cells["n"] = rng.integers(0, 100, len(cells))
    return cells


def blocks_of(table: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [table.iloc[start : start + size] for start in range(0, len(table), size)]


def assert_same(streamed: pd.DataFrame, in_memory: pd.DataFrame) -> None:
    """Equal frames; means of float32 features to float32's precision (pandas sums them in
    float32, the streamed sums are float64)."""
    pd.testing.assert_frame_equal(streamed, in_memory, check_exact=False, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["text", "categorical"])
@pytest.mark.parametrize("size", [3, 16, 64, 200])
def test_streamed_wells_equal_the_in_memory_ones(kind, size):
    cells = cells_table(kind)
    streamed = stream_well_profiles(blocks_of(cells, size))
    in_memory = well_profiles(cells)
    assert_same(streamed, in_memory)
    assert "Metadata_Site" not in streamed and streamed["Metadata_Note"].isna().sum() == 1
    assert streamed[["f2", "f3"]].isna().all().all()  # a NaN or inf cell: NaN in every well
    assert streamed[["Metadata_Plate", "Metadata_Well"]].values.tolist()[:2] == [
        ["P1", "A01"],
        ["P1", "A02"],
    ]


@pytest.mark.parametrize("kind", ["text", "categorical"])
def test_embeddings_file_streamed_by_row_groups(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(embeddings, "ROWS_PER_GROUP", 16)
    cells = cells_table(kind, seed=1)
    names = [c for c in cells if not c.startswith("Metadata_")]
    meta = cells[[c for c in cells if c.startswith("Metadata_")]]
    with embeddings.EmbeddingWriter(tmp_path / embeddings.EMBEDDINGS, meta, names) as writer:
        writer.append(cells[names].to_numpy(np.float32))
    groups = list(embeddings.iter_embeddings(tmp_path))
    assert [len(g) for g in groups] == [16] * 12 + [8]
    in_memory = well_profiles(embeddings.load_embeddings(tmp_path), "e")
    assert_same(embedded_well_profiles(tmp_path), in_memory)


def test_profile_stage_streams_the_same_profiles(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "ROWS_PER_GROUP", 10)
    cells = cells_table(seed=2).drop(columns=["f2", "f3"])
    folder = tmp_path / "embeddings"
    folder.mkdir()
    names = ["f0", "f1", "n"]
    meta = cells.drop(columns=names)
    with embeddings.EmbeddingWriter(folder / embeddings.EMBEDDINGS, meta, names) as writer:
        writer.append(cells[names].to_numpy())
    write_manifest(folder, "embed", "0")
    cfg = Config.model_validate({"profile": {"postprocess": "dmso"}})
    cellclr.profile(folder, tmp_path / "streamed", cfg)
    wells = well_profiles(embeddings.load_embeddings(folder))
    write_profiles(wells, tmp_path / "in_memory", Stage("profile", "0", cfg), False)
    for name in (WELLS, "treatments.parquet"):
        streamed = pd.read_parquet(tmp_path / "streamed" / name)
        assert_same(streamed, pd.read_parquet(tmp_path / "in_memory" / name))


_C = "Metadata_Concentration"


def damaged(damage: str) -> pd.DataFrame:
    cells = cells_table()
    if damage == "empty plate":
        cells.loc[[3, 40, 41, 150], "Metadata_Plate"] = None
    elif damage == "text concentration":
        cells.loc[[90, 120], "Metadata_Concentration"] = "0.3 uM"
    elif damage == "infinite concentration":  # issue 18: a whole well at x inf, a new dose
        cells.loc[cells.Metadata_Well.eq("A02") & cells.Metadata_Plate.eq("P1"), _C] = "inf"
    elif damage == "negative concentration":
        cells.loc[cells.Metadata_Well.eq("B01") & cells.Metadata_Plate.eq("P2"), _C] = "-1.0"
    elif damage == "moa within a well":  # a well's first cells say M1, its later ones M9
        first = cells.index[(cells.Metadata_Well == "B01") & (cells.Metadata_Plate == "P2")]
        cells.loc[first[len(first) // 2 :], "Metadata_MoA"] = "M9"
    elif damage == "moa within a treatment":
        cells.loc[cells.Metadata_Plate == "P2", "Metadata_MoA"] = "M9"
    elif damage == "no features":
        cells = cells[[c for c in cells if c.startswith("Metadata_")]]
    elif damage == "text feature":
        cells["f1"] = "a"
    elif damage == "empty compound":  # treatments are optional, but then every cell has one
        cells.loc[[7, 130], "Metadata_Compound"] = None
    elif damage == "no rows":
        cells = cells.iloc[:0]
    return cells


@pytest.mark.parametrize(
    "damage",
    [
        "empty plate",
        "text concentration",
        "infinite concentration",
        "negative concentration",
        "moa within a well",
        "moa within a treatment",
        "no features",
        "text feature",
        "empty compound",
        "no rows",
    ],
)
def test_streamed_errors_equal_the_in_memory_ones(damage):
    cells = damaged(damage)
    with pytest.raises(CellclrError) as in_memory:
        well_profiles(cells, "t.parquet")
    with pytest.raises(type(in_memory.value)) as streamed:
        stream_well_profiles(blocks_of(cells, 32), "t.parquet")
    assert str(streamed.value) == str(in_memory.value)
    assert str(in_memory.value).startswith("t.parquet: ")


def test_cells_without_treatments_give_the_same_wells_streamed():
    cells = cells_table().drop(columns=["Metadata_Compound", "Metadata_Concentration"])
    cells = cells.drop(columns="Metadata_MoA")
    in_memory = well_profiles(cells, "t.parquet")
    streamed = stream_well_profiles(blocks_of(cells, 32), "t.parquet")
    assert (
        "Metadata_Compound" not in in_memory
        and len(in_memory) == cells.groupby(["Metadata_Plate", "Metadata_Well"]).ngroups
    )
    assert_same(streamed, in_memory)


def test_damaged_embeddings_are_named(tmp_path):
    (tmp_path / embeddings.EMBEDDINGS).write_bytes(b"")
    with pytest.raises(CellclrError, match=r"the embeddings\.parquet is an empty file"):
        embedded_well_profiles(tmp_path)
