"""Downloading BBBC021 from the Broad: resumable HTTPS transfers and safe zip extraction.

``download_bbbc021`` fetches the metadata CSVs into ``<out>/metadata/`` and each plate's zip,
extracted so that the images sit where the image CSV's ``Image_PathName_*`` columns say
(``<out>/Week1/Week1_22123/<file>.tif``). A plate counts as done once its ``.complete`` marker
is written, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import stat
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.error import HTTPError
from urllib.parse import quote

import pandas as pd

from cellclr.datasets.bbbc021 import IMAGE_CSV, METADATA_FILES, plate_zip
from cellclr.datasets.bbbc021 import IMAGE_PLATE as PLATE_COLUMN
from cellclr.errors import CellclrError
from cellclr.progress import progress_bar

BBBC021_URL = "https://data.broadinstitute.org/bbbc/BBBC021/"
COMPLETE_MARKER = ".complete"

_CHUNK = 1 << 20
_RETRY_STATUSES = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_PLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DownloadError(CellclrError):
    """A download or an extraction failed; the message names the URL or file and the problem."""


class _Retry(Exception):
    """The server answered in a way that calls for starting the attempt again."""


_TRANSIENT = (OSError, http.client.HTTPException, _Retry)


def fetch(
    url: str,
    dest: Path,
    *,
    retries: int = 5,
    timeout: float = 60,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``.part`` file and retrying transient failures.

    ``dest`` appears (atomically) only once it holds every byte the server announced; an
    existing ``dest`` is taken as already downloaded.
    """
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total: int | None = None
    problem = ""
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            received, total = _transfer(url, part, timeout, progress)
        except HTTPError as e:
            if e.code < 500 and e.code not in _RETRY_STATUSES:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            problem = f"HTTP {e.code} {e.reason}"
            continue
        except _TRANSIENT as e:
            problem = f"{type(e).__name__}: {e}"
            continue
        if total is None or received == total:
            os.replace(part, dest)
            return dest
        problem = "the connection closed early"
    received = part.stat().st_size if part.exists() else 0
    expected = "an unknown number of" if total is None else str(total)
    raise DownloadError(
        f"could not download {url} after {retries} attempts: received {received} of "
        f"{expected} bytes (last problem: {problem})"
    )


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> tuple[int, int | None]:
    """One attempt: add the rest of ``url`` to ``part``; the bytes it then holds and the total."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except HTTPError as e:
        e.close()
        if e.code != 416 or not offset:
            raise
        if _parse_content_range(e.headers.get("Content-Range"))[1] == offset:
            return offset, offset  # the .part already holds the whole file
        part.unlink()
        return _transfer(url, part, timeout, progress)
    with response:
        offset, total = _resume_point(response, part, offset)
        with (
            part.open("ab" if offset else "wb") as f,
            progress_bar(
                total=total,
                initial=offset,
                desc=part.name.removesuffix(".part"),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                disable=None if progress else True,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    return part.stat().st_size, total


def _resume_point(
    response: http.client.HTTPResponse, part: Path, offset: int
) -> tuple[int, int | None]:
    """Where the response body starts in the file (0 unless resumed) and the file's total size."""
    length = response.headers.get("Content-Length")
    length_value = int(length) if length and length.isdigit() else None
    if response.status != 206:
        return 0, length_value  # a full answer, even if we asked for a range: start again
    start, total = _parse_content_range(response.headers.get("Content-Range"))
    if start != offset:
        part.unlink()
        raise _Retry(f"asked to resume at byte {offset}, the server sent byte {start} on")
    if total is None and length_value is not None:
        total = offset + length_value
    return offset, total


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """The first byte and the total size of a ``Content-Range`` header (None where unknown)."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None, None
    start, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(total) if total.isdigit() else None,
    )


def safe_extract(zip_path: Path, target: Path) -> list[Path]:
    """Extract ``zip_path`` into ``target`` after checking that every member stays inside it.

    Absolute names, drive letters, names that lead outside ``target`` and symlinks are refused
    before anything is written. Each file is written under a temporary name and renamed into
    place. Returns the extracted files.
    """
    zip_path, target = Path(zip_path), Path(target)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            target.mkdir(parents=True, exist_ok=True)
            root = target.resolve()
            plan = [(info, _member_destination(zip_path, info, root)) for info in zf.infolist()]
            return [path for info, path in plan if _extract_member(zf, info, path)]
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DownloadError(f"{zip_path}: not a readable zip file ({e})") from None


def _member_destination(zip_path: Path, info: zipfile.ZipInfo, root: Path) -> Path:
    """Where a member would land under ``root``; DownloadError for an unsafe member."""
    name = info.filename

    def refuse(why: str) -> DownloadError:
        return DownloadError(f"{zip_path}: unsafe member {name!r}: {why}; nothing was extracted")

    if stat.S_ISLNK(info.external_attr >> 16):
        raise refuse("it is a symbolic link")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(name).drive:
        raise refuse("it is an absolute path")
    destination = (root / PurePosixPath(posix)).resolve()
    if root not in destination.parents:
        raise refuse(f"it would land outside {root}")
    return destination


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bool:
    """Write one member to ``path`` via a ``.tmp`` file; False for a folder entry."""
    if info.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zf.open(info) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def download_bbbc021(
    out: Path,
    plates: list[str] | None = None,
    *,
    base_url: str = BBBC021_URL,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[str]:
    """Download the BBBC021 metadata and plates (all, or ``plates``) into ``out``.

    Plates already marked complete are skipped. Returns the requested plates, all now complete.
    """
    out = Path(out)
    base_url = base_url.rstrip("/") + "/"
    for name in METADATA_FILES:
        fetch(base_url + name, out / "metadata" / name, retries=retries, backoff=backoff)
    wanted = _select_plates(out / "metadata" / IMAGE_CSV, plates)
    for plate in progress_bar(wanted, desc="BBBC021 plates", unit="plate"):
        _download_plate(plate, out, base_url, retries, backoff)
    return wanted


def _select_plates(image_csv: Path, plates: list[str] | None) -> list[str]:
    """The plates of the image CSV, or the requested ones after checking they are among them."""
    known = _plates_in(image_csv)
    if plates is None:
        return known
    unknown = [p for p in plates if p not in known]
    if unknown:
        raise DownloadError(
            f"unknown plate(s) {', '.join(unknown)}: {image_csv} lists {len(known)} plates, "
            f"such as {', '.join(known[:5])}"
        )
    return list(dict.fromkeys(plates))


def _plates_in(image_csv: Path) -> list[str]:
    """The distinct plate names of the image CSV, in order of first appearance."""
    try:
        column = pd.read_csv(image_csv, usecols=[PLATE_COLUMN])[PLATE_COLUMN]
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DownloadError(
            f"{image_csv}: cannot read the plate column {PLATE_COLUMN}: {e}"
        ) from None
    plates = list(dict.fromkeys(column.dropna().astype(str)))
    bad = [p for p in plates if not _PLATE_NAME.fullmatch(p)]
    if bad or not plates:
        raise DownloadError(f"{image_csv}: bad or missing plate names in {PLATE_COLUMN}: {bad}")
    return plates


def _download_plate(plate: str, out: Path, base_url: str, retries: int, backoff: float) -> None:
    """Fetch, extract and mark one plate, unless its ``.complete`` marker exists."""
    week_dir = out / plate.split("_", 1)[0]
    marker = week_dir / plate / COMPLETE_MARKER
    if marker.exists():
        return
    name = plate_zip(plate)
    zip_path = fetch(base_url + quote(name), out / "zips" / name, retries=retries, backoff=backoff)
    try:
        safe_extract(zip_path, week_dir)
    except DownloadError as e:
        zip_path.unlink()
        raise DownloadError(f"{e} (the zip was deleted: rerun to download it again)") from None
    if not (week_dir / plate).is_dir():
        raise DownloadError(f"{zip_path}: holds no folder {plate}/ (kept for inspection)")
    marker.touch()
    zip_path.unlink()
