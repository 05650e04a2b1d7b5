"""Shared fixtures: tiny synthetic crop sets and profile outputs, and the real data (BBBC021's
crops, a Cell Painting field) when they are present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cellclr.outputs import write_manifest
from cellclr.profiling.feature_tables import profile_table
from cellclr.store.import_crops import import_crops
from tests.helpers import (
    FIELD,
    MISSING_DATA,
    SHARED,
    TABLE,
    make_crop_files,
    tiny_config,
    wells_table,
    write_csv,
)


@pytest.fixture
def crop_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_crop_files(tmp_path / "input")


@pytest.fixture
def store(tmp_path: Path, crop_files: tuple[Path, Path]) -> Path:
    images, cells = crop_files
    return import_crops(images, cells, tmp_path / "store", ["DNA", "Tubulin", "Actin"])


@pytest.fixture
def shared_singlecell() -> Path:
    folder = SHARED / "singlecell"
    if not (folder / "crops.npz").is_file():
        pytest.skip(f"real BBBC021 crops not found at {folder} ({MISSING_DATA})")
    return folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With CELLCLR_REQUIRE_DATA=1 (set by .ci/run, where ../shared holds the real data), a test
    skipped because the real data are missing (its reason says MISSING_DATA) fails instead; in a
    clone without ../shared it stays skipped, with its reason."""
    report = yield
    if report.skipped and os.environ.get("CELLCLR_REQUIRE_DATA") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if MISSING_DATA in reason:
            report.outcome = "failed"
            required = "CELLCLR_REQUIRE_DATA=1 (.ci/run): the real data must be there"
            report.longrepr = f"{reason}\n{required}"
    return report


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """tmp_path with t.csv (wells), moa.csv, R and Q (profile outputs), E (an embed output)."""
    table = wells_table()
    write_csv(table, tmp_path / "t.csv")
    moa = table[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]]
    moa = moa.drop_duplicates().set_axis(["compound", "concentration", "moa"], axis=1)
    write_csv(moa, tmp_path / "moa.csv")
    cfg = tiny_config()
    profile_table(tmp_path / "t.csv", tmp_path / "R", cfg)
    profile_table(write_csv(wells_table(1), tmp_path / "q.csv"), tmp_path / "Q", cfg)
    (tmp_path / "E").mkdir()
    table.to_parquet(tmp_path / "E" / "embeddings.parquet", index=False)
    write_manifest(tmp_path / "E", "embed", "0")
    return tmp_path


@pytest.fixture(scope="module")
def field() -> Path:
    if not TABLE.is_file() or not (FIELD / "images").is_dir():
        pytest.skip(
            f"the Cell Painting field BR00143976 is not at {FIELD} ({MISSING_DATA}; "
            "CELLCLR_CELLPAINTING may point at it)"
        )
    return FIELD
