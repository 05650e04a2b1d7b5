"""Shared fixtures: tiny synthetic crop sets, and the real BBBC021 data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellclr.store.import_crops import import_crops
from tests.helpers import SHARED, make_crop_files


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
        pytest.skip(f"real BBBC021 crops not found at {folder} (only present in CI and dev)")
    return folder
