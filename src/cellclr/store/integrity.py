"""Whether a crop store's plate arrays are still what was finalised.

Two checks, for stores of any size (terabytes):

- cheap, whenever a plate is opened: its size and modification time (ns) against those that
  ``finalize_store`` recorded in ``store.json`` (``plate_files``). A plate changed in place
  (pixels zeroed, another array written over it) is refused, naming the file.
- thorough, on demand (``cellclr verify STORE``): every plate's SHA-256 recomputed and compared
  with the one kept beside it when it was written (``plates/<plate>.npy.sha256``). When every
  plate matches, the sizes and times are recorded again: a store copied without its file times
  (``cp -r``) is accepted from then on, and a store written before they were recorded gets them.

Stores written before sizes and times were recorded are opened as before, unchecked.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cellclr.outputs import write_json
from cellclr.progress import progress_bar
from cellclr.store.format import StoreError

RECORD = "plate_files"  # key of store.json: {crop file: [size in bytes, mtime in ns]}
CHUNK_BYTES = 64 * 2**20  # read and hashed at a time by verify


def file_record(path: Path) -> list[int]:
    """What the cheap check compares: the file's size in bytes and modification time in ns."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def plate_records(folder: Path, files: list[str]) -> dict[str, list[int]]:
    """The record of each crop file (``plates/<stem>.npy``, relative to the store)."""
    return {f: file_record(folder / f) for f in sorted(files)}


def _when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="seconds")


def check_plate_file(store: Path, name: str, record: dict | None) -> None:
    """Refuse a plate file whose size or modification time differ from ``record`` (store.json's
    ``plate_files``; None for a store written before they were recorded: nothing to check)."""
    if record is None:
        return
    path = store / name
    now, then = file_record(path), record.get(name)
    if now == then:
        return
    was = f"{then[0]} bytes, modified {_when(then[1])}" if then else "nothing recorded"
    raise StoreError(
        f"{path}: changed after the store was finalised (now {now[0]} bytes, modified "
        f"{_when(now[1])}; recorded: {was}): its crops may not be those the store's id and "
        f"statistics describe; `cellclr verify {store}` compares every plate with its recorded "
        "hash (and accepts a store copied without its file times), or make the store again"
    )


@dataclass
class Verification:
    """What ``verify_store`` found."""

    plates: int = 0
    bytes: int = 0
    differ: list[str] = field(default_factory=list)  # crop files whose hash differs
    unrecorded: list[str] = field(default_factory=list)  # crop files without a .sha256
    notes: list[str] = field(default_factory=list)


def plate_hash(path: Path, bar: tqdm | None = None) -> str:
    """The SHA-256 of a plate's crops as the writer computes it (``NpyAppender``): the pixels
    in C order, then the repr of the array's shape."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise StoreError(f"{path}: truncated or corrupt crop file ({e})") from None
    h = hashlib.sha256()
    rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        block = np.ascontiguousarray(array[start : start + rows])
        h.update(block.tobytes())
        if bar is not None:
            bar.update(block.nbytes)
    h.update(repr(array.shape).encode())
    return h.hexdigest()


def verify_store(store: str | Path) -> Verification:
    """Recompute the hash of every plate of the store and compare it with the recorded one.
    When all match, record the plates' sizes and times again (see the module docstring)."""
    from cellclr.store.reader import CropStore  # the reader checks records with this module

    store = Path(store)
    files = CropStore(store).files
    result = Verification(plates=len(files))
    missing = [f for f in files if not (store / f).is_file()]
    if missing:
        raise StoreError(f"the store at {store} is incomplete: missing {missing[0]}")
    result.bytes = sum((store / f).stat().st_size for f in files)
    with progress_bar(total=result.bytes, desc="verify", unit="B", unit_scale=True) as bar:
        for name in files:
            recorded = store / (name + ".sha256")
            if not recorded.is_file():
                result.unrecorded.append(name)
                bar.update((store / name).stat().st_size)
                continue
            if plate_hash(store / name, bar) != recorded.read_text().strip():
                result.differ.append(name)
    if not result.differ:
        _record_again(store, files, result)
    return result


def _record_again(store: Path, files: list[str], result: Verification) -> None:
    """Record the plates' sizes and times in store.json when they are not those recorded."""
    path = store / "store.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    now = plate_records(store, files)
    if meta.get(RECORD) == now:
        return
    if RECORD not in meta:
        what = "no sizes and times of the plate files were recorded (a store written before"
        what += " they were)"
    else:
        what = "the plate files' sizes or times differ from those recorded (a copy?)"
    if result.unrecorded:
        result.notes.append(f"{what}: left as they are, as not every plate has a hash")
        return
    try:
        write_json({**meta, RECORD: now}, path)
    except OSError as e:
        result.notes.append(f"{what}: could not record them ({os.strerror(e.errno or 0)})")
        return
    result.notes.append(f"{what}: recorded now; opening the store checks them from now on")
