"""Plate files changed after the store was finalised, and ``cellclr verify``
(cellclr.store.integrity)."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from cellclr.cli import main
from cellclr.store import CropStore, StoreError


def zero_pixels(store, later_ns: int = 10**9):
    """Zero the pixels of the store's first plate in place (the file keeps its size) and date
    it ``later_ns`` after what was recorded (a test runs faster than the file system's clock
    may tick); return its path and the recorded (size, mtime)."""
    name = CropStore(store).files[0]
    recorded = json.loads((store / "store.json").read_text())["plate_files"][name]
    array = np.load(store / name, mmap_mode="r+")
    array[:] = 0
    array.flush()
    del array
    os.utime(store / name, ns=(recorded[1] + later_ns, recorded[1] + later_ns))
    return store / name, recorded


def verify(store, capsys):
    code = main(["verify", str(store)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_plate_changed_in_place_is_refused_when_opened(store, capsys):
    s = CropStore(store)
    assert (s.read(np.arange(len(s))) > 0).any()
    assert verify(store, capsys)[0] == 0  # an intact store verifies
    path, recorded = zero_pixels(store)
    assert path.stat().st_size == recorded[0]  # the size alone would not tell
    s = CropStore(store)
    with pytest.raises(StoreError, match=f"{re.escape(str(path))}: changed after the store"):
        s.read(np.arange(len(s)))
    # the full hashes tell even when the time is put back as it was
    os.utime(path, ns=(recorded[1], recorded[1]))
    s = CropStore(store)
    assert (s.read(np.arange(len(s))) == 0).any()  # the cheap check cannot see it
    code, out, err = verify(store, capsys)
    assert code == 2
    assert f"{path}: differs from its recorded hash" in out
    name = path.relative_to(store)
    assert f"{store}: 1 of 2 plates differ from their recorded hash, first {name}" in err
    assert err.startswith(f"cellclr: error: {store}: 1 of 2 plates differ") and str(name) in err


def test_a_store_copied_without_its_file_times_is_accepted_after_verify(store, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, copy_function=shutil.copyfile)  # as cp -r: times not kept
    for npy in (copy / "plates").glob("*.npy"):
        st = npy.stat()
        os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    s = CropStore(copy)
    with pytest.raises(StoreError, match=f"cellclr verify {re.escape(str(copy))}"):
        s.read(np.arange(len(s)))
    code, out, _ = verify(copy, capsys)
    assert code == 0
    assert "differ from those recorded (a copy?): recorded now" in out
    assert "2 of 2 match their recorded hash" in out
    s = CropStore(copy)
    np.testing.assert_array_equal(
        s.read(np.arange(len(s))), CropStore(store).read(np.arange(len(s)))
    )


def test_a_store_written_before_records_opens_and_verify_records_them(store, capsys):
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "plate_files"})
    )
    s = CropStore(store)
    assert len(s.read(np.arange(len(s)))) == len(s)  # opened as before, unchecked
    code, out, _ = verify(store, capsys)
    assert code == 0 and "no sizes and times of the plate files were recorded" in out
    assert json.loads((store / "store.json").read_text()) == meta  # now they are
    zero_pixels(store)
    s = CropStore(store)
    with pytest.raises(StoreError, match="changed after the store was finalised"):
        s.read(np.arange(len(s)))
