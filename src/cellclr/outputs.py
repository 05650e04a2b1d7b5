"""Writing outputs safely: staged folders renamed into place, atomic files, stage manifests.

Every stage writes into ``<out>.partial`` and renames it to ``<out>`` when it has finished, so a
folder named ``<out>`` is always complete. An existing ``<out>`` is replaced only with
``overwrite=True``. A ``stage.json`` manifest in each output records the fingerprint of the
inputs and config it was made from, so ``cellclr run`` can skip work that is already done.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellclr.errors import CellclrError, naming

MANIFEST = "stage.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputExistsError(CellclrError, FileExistsError):
    """The output folder exists and ``--overwrite`` was not given."""


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


class NotAnOutputError(CellclrError, FileNotFoundError):
    """A folder given as a stage's input that is not a finished cellclr output."""


class OutputError(CellclrError, ValueError):
    """An output that would overlap an input, or replace what is not a cellclr output."""


class OutputLockedError(CellclrError, BlockingIOError):
    """Another process is writing the same output."""


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


@contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold ``OUT.lock`` (``flock``, which the kernel releases when the process ends, however it
    ends) while a stage writes ``out``: a second process writing the same output meanwhile (a
    second ``--overwrite`` or ``--resume``) is refused, naming the process that holds it, whose
    pid and host the file holds. File systems without ``flock`` go unlocked."""
    out = Path(out)
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"{out}: another process is writing it ({holder}, holding {path}): wait for "
                "it to end, or stop it first"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            yield  # no locks on this file system
            return
        if _same_file(fd, path):  # not a lock file its last holder has just removed
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: a waiting opener sees a new file
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


Inputs = Sequence[str | Path | None]
# a folder holding one of these is a cellclr output (crop.json: a crop store being filled)
MARKERS = (MANIFEST, "store.json", "crop.json")


def check_apart(out: str | Path, inputs: Inputs) -> None:
    """Refuse an output that is, contains, or lies inside one of the stage's inputs; the
    output's staging folder (``OUT.partial``) counts as the output."""
    out = Path(out)
    for where in (out.resolve(), partial_path(out).resolve()):
        for given in inputs:
            if given is None or str(given) == "":
                continue
            source = Path(given).resolve()
            if where == source or source.is_relative_to(where) or where.is_relative_to(source):
                raise OutputError(
                    f"output {out} overlaps the input {given}: write the output outside its inputs"
                )


def check_new_output(out: str | Path, overwrite: bool, inputs: Inputs = ()) -> None:
    """Before any work: refuse an output that overlaps an input, an existing output (unless
    ``overwrite``), and with ``overwrite`` anything but a finished cellclr output folder (or an
    empty folder): ``--overwrite`` never deletes a folder cellclr did not make."""
    out = Path(out)
    check_apart(out, inputs)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"output {out} exists and is a file, not a folder")
    if not overwrite:
        raise OutputExistsError(f"output exists: {out} (pass --overwrite to replace it)")
    if any(out.iterdir()) and not any((out / m).is_file() for m in MARKERS):
        raise OutputError(
            f"output {out} exists and is not a cellclr output: refusing to replace it "
            "(choose another --out, or empty it yourself)"
        )


def check_new_file(out: str | Path, overwrite: bool, inputs: Inputs = ()) -> None:
    """``check_new_output`` for an output that is one file (a report)."""
    out = Path(out)
    check_apart(out, inputs)
    if out.is_dir():
        raise OutputError(f"output {out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output exists: {out} (pass --overwrite to replace it)")


@contextmanager
def staged_dir(
    out: str | Path,
    *,
    overwrite: bool = False,
    resumable: bool = False,
    inputs: Inputs = (),
) -> Iterator[Path]:
    """Yield a work folder that becomes ``out`` only if the block finishes without error.
    While it runs, the process holds ``OUT.lock`` (``output_lock``).

    A ``resumable`` stage (training) keeps its work folder on error, and is handed a leftover
    one to continue, or to clear when it was made with other settings (the stage decides and
    says so). Other stages' leftovers are scratch and are replaced. A failed stage so never
    blocks its retry. ``inputs``: what the stage reads, which the output may not overlap (see
    ``check_new_output``).
    """
    out = Path(out)
    work = partial_path(out)
    check_apart(out, inputs)  # before the lock file is made beside the output
    with output_lock(out):
        check_new_output(out, overwrite, inputs)
        if work.exists() and not resumable:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        try:
            yield work
        except BaseException:
            if not resumable:
                shutil.rmtree(work, ignore_errors=True)
            raise
        swap_in(work, out)


def swap_in(work: Path, out: Path) -> None:
    """Rename the finished ``work`` folder to ``out``; an old ``out`` goes only once the new one
    is in place (moved aside under a fresh name, so no stray file is in the way)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder that replaces ``path`` on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
    try:
        with naming(path):
            yield Path(tmp)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def _plain(obj: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python ones."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    """Strict JSON (NaN written as null), atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_manifest(folder: Path, stage: str, fingerprint: str, **extra: Any) -> None:
    write_json({"stage": stage, "fingerprint": fingerprint, **extra}, folder / MANIFEST)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object (``metrics.json``, ``compare.json``); a damaged one is
    one error naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotAnOutputError(
            f"{path}: not valid JSON ({e}): truncated? run the stage that wrote it again"
        ) from None
    if not isinstance(value, dict):
        raise NotAnOutputError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise NotAnOutputError(f"{folder} is not a finished cellclr output (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotAnOutputError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest:
        raise NotAnOutputError(f"{path}: not a cellclr manifest (no fingerprint)")
    return manifest


COMPARE = "compare.json"  # in a `cellclr compare` folder: the methods compared, in order


def compared_runs(folder: str | Path) -> list[tuple[str, Path]]:
    """The method runs of a ``cellclr compare`` folder (name, run folder), in order; [] for an
    ordinary run folder."""
    path = Path(folder) / COMPARE
    if not path.is_file():
        return []
    return [(name, Path(folder) / name) for name in read_json_object(path).get("methods", [])]


def compared_crops(folder: str | Path) -> Path | None:
    """The crop store a ``cellclr compare`` folder was made from (so that ``cellclr baseline
    --out FOLDER`` adds a baseline without ``--crops``); None for any other folder."""
    path = Path(folder) / COMPARE
    crops = read_json_object(path).get("crops") if path.is_file() else None
    return Path(crops) if crops else None


def current_baselines(run: str | Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The baselines of a run folder (``baselines/<name>/``) made from the run's own crop store,
    and the names of those left out (made from other crops, or unfinished)."""
    run = Path(run)
    own = _store_of(run / "embeddings")
    kept, stale = [], []
    for folder in sorted(p for p in (run / "baselines").glob("*") if p.is_dir()):
        finished = (folder / "eval" / "metrics.json").is_file()
        if finished and (own is None or _store_of(folder / "embeddings") in (own, None)):
            kept.append((folder.name, folder))
        else:
            stale.append(folder.name)
    return kept, stale


def _store_of(embeddings: Path) -> str | None:
    path = embeddings / MANIFEST
    return read_json_object(path).get("store") if path.is_file() else None
