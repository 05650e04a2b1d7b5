"""Downloads against a local HTTP server that supports ranges and misbehaves on request."""

from __future__ import annotations

import csv
import itertools
import re
import stat
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from cellclr.datasets.download import DownloadError, download_bbbc021, fetch, safe_extract
from tests.helpers import SAFETY

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes


class FakeServer:
    """Serves ``root`` over HTTP; ``faults[name]`` yields one fault per request for that file.

    A fault is an HTTP status to answer with, ``("cut", n)`` to announce the whole body but send
    only ``n`` bytes, or ``"ignore-range"`` to answer 200 with the whole file despite a Range.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, Iterator[object]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.url = ""

    def fail(self, name: str, *faults: object) -> None:
        self.faults[name] = iter(faults)

    def fail_always(self, name: str, fault: object) -> None:
        self.faults[name] = itertools.repeat(fault)

    def requested(self, name: str) -> list[str | None]:
        """The Range headers of the requests for ``name`` (None where there was none)."""
        return [rng for path, rng in self.requests if path == name]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state: FakeServer = self.server.state  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        state.requests.append((name, rng))
        fault = next(state.faults.get(name, iter(())), None)
        path = state.root / name
        if isinstance(fault, int) or not path.is_file():
            self.send_error(fault if isinstance(fault, int) else 404)
            return
        data = path.read_bytes()
        start = int(rng.removeprefix("bytes=").removesuffix("-")) if rng else 0
        if fault == "ignore-range":
            start = 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if isinstance(fault, tuple):
            body = body[: fault[1]]
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    state = FakeServer(tmp_path / "served")
    state.root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _serve(server: FakeServer, name: str, data: bytes = PAYLOAD) -> str:
    (server.root / name).write_bytes(data)
    return server.url + name


def _fetch(url: str, dest: Path, retries: int = 5) -> Path:
    return fetch(url, dest, retries=retries, backoff=0, timeout=SAFETY, progress=False)


# --- fetch -------------------------------------------------------------------------------


def test_fetch_plain(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    dest = tmp_path / "out" / "a.bin"
    assert _fetch(url, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("a.bin.part").exists()
    assert server.requested("a.bin") == [None]


def test_fetch_existing_dest_is_not_downloaded_again(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")
    _fetch(url, dest)
    assert dest.read_bytes() == b"old"
    assert server.requests == []


def test_fetch_resumes_an_interrupted_transfer(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail("a.bin", ("cut", 3000))
    dest = tmp_path / "a.bin"
    _fetch(url, dest)
    assert server.requested("a.bin") == [None, "bytes=3000-"]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_resumes_an_existing_part_file(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(PAYLOAD[:100])
    _fetch(url, dest)
    assert server.requested("a.bin") == ["bytes=100-"]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_complete_part_file_is_finished_on_416(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(PAYLOAD)
    _fetch(url, dest)
    assert server.requested("a.bin") == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_oversized_part_file_restarts(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(PAYLOAD + b"junk")
    _fetch(url, dest)
    assert server.requested("a.bin") == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_restarts_when_the_server_ignores_range(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail("a.bin", "ignore-range")
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(b"x" * 100)  # not the file's first bytes
    _fetch(url, dest)
    assert server.requested("a.bin") == ["bytes=100-"]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_retries_a_server_error(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail("a.bin", 500, 503)
    dest = tmp_path / "a.bin"
    _fetch(url, dest)
    assert len(server.requested("a.bin")) == 3
    assert dest.read_bytes() == PAYLOAD


def test_fetch_404_fails_at_once(server: FakeServer, tmp_path: Path) -> None:
    url = server.url + "missing.bin"
    with pytest.raises(DownloadError, match=re.escape(url)) as info:
        _fetch(url, tmp_path / "missing.bin")
    assert "404" in str(info.value)
    assert server.requested("missing.bin") == [None]
    assert list(tmp_path.iterdir()) == [server.root]


def test_fetch_403_fails_at_once(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail_always("a.bin", 403)
    with pytest.raises(DownloadError, match="403"):
        _fetch(url, tmp_path / "a.bin")
    assert len(server.requested("a.bin")) == 1


def test_fetch_persistent_server_error_gives_up(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail_always("a.bin", 500)
    with pytest.raises(DownloadError, match=r"after 3 attempts.*HTTP 500"):
        _fetch(url, tmp_path / "a.bin", retries=3)
    assert len(server.requested("a.bin")) == 3


def test_fetch_persistent_truncation_gives_up(server: FakeServer, tmp_path: Path) -> None:
    url = _serve(server, "a.bin")
    server.fail_always("a.bin", ("cut", 1000))
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match=re.escape(url)) as info:
        _fetch(url, dest, retries=3)
    assert f"received 3000 of {len(PAYLOAD)} bytes" in str(info.value)
    assert server.requested("a.bin") == [None, "bytes=1000-", "bytes=2000-"]
    assert not dest.exists()
    # The part file is kept, so a later call resumes from where this one stopped.
    server.fail("a.bin")
    _fetch(url, dest)
    assert server.requested("a.bin")[-1] == "bytes=3000-"
    assert dest.read_bytes() == PAYLOAD


def test_fetch_unreachable_server_gives_up(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"after 2 attempts: received 0 of an unknown"):
        _fetch("http://127.0.0.1:1/a.bin", tmp_path / "a.bin", retries=2)


# --- safe_extract ----------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, pointee in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, pointee)
    return path


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def test_safe_extract_good_zip(tmp_path: Path) -> None:
    zip_path = _zip(tmp_path / "good.zip", {"P/a.tif": b"aa", "P/sub/b.tif": b"bb", "P/e/": b""})
    target = tmp_path / "target"
    extracted = safe_extract(zip_path, target)
    assert sorted(extracted) == [(target / "P/a.tif").resolve(), (target / "P/sub/b.tif").resolve()]
    assert (target / "P/a.tif").read_bytes() == b"aa"
    assert (target / "P/sub/b.tif").read_bytes() == b"bb"
    assert (target / "P/e").is_dir()
    assert _all_files(target) == sorted(extracted)  # no .tmp files left


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("../evil.txt", "outside"),
        ("a/../../evil.txt", "outside"),
        ("..\\evil.txt", "outside"),
        ("/tmp/evil.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
    ],
)
def test_safe_extract_refuses_escaping_members(tmp_path: Path, bad: str, why: str) -> None:
    zip_path = _zip(tmp_path / "bad.zip", {"ok.txt": b"ok", bad: b"evil"})
    target = tmp_path / "sub" / "target"
    with pytest.raises(DownloadError, match=why) as info:
        safe_extract(zip_path, target)
    assert str(zip_path) in str(info.value) and repr(bad) in str(info.value)
    assert _all_files(tmp_path) == [zip_path]


def test_safe_extract_absolute_member_writes_nothing_there(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    zip_path = _zip(tmp_path / "bad.zip", {str(outside): b"evil"})
    with pytest.raises(DownloadError, match="absolute"):
        safe_extract(zip_path, tmp_path / "target")
    assert not outside.exists()


def test_safe_extract_refuses_symlinks(tmp_path: Path) -> None:
    zip_path = _zip(tmp_path / "bad.zip", {"ok.txt": b"ok"}, symlinks={"link": "/etc/passwd"})
    target = tmp_path / "target"
    with pytest.raises(DownloadError, match="symbolic link"):
        safe_extract(zip_path, target)
    assert _all_files(tmp_path) == [zip_path]
    assert not (target / "link").is_symlink()


def test_safe_extract_corrupt_zip(tmp_path: Path) -> None:
    zip_path = tmp_path / "corrupt.zip"
    zip_path.write_bytes(b"this is not a zip")
    with pytest.raises(DownloadError, match=re.escape(str(zip_path))):
        safe_extract(zip_path, tmp_path / "target")


# --- download_bbbc021 ------------------------------------------------------------------------

PLATES = ["Week1_11111", "Week2_22222"]


@pytest.fixture
def bbbc021(server: FakeServer, tmp_path: Path) -> FakeServer:
    """The server, holding a two-plate fake of BBBC021."""
    rows = [
        {
            "TableNumber": i,
            "Image_FileName_DAPI": f"{plate}_{i}_w1.tif",
            "Image_PathName_DAPI": f"{plate.split('_')[0]}/{plate}",
            "Image_Metadata_Plate_DAPI": plate,
        }
        for plate in PLATES
        for i in range(3)
    ]
    pd.DataFrame(rows).to_csv(
        server.root / "BBBC021_v1_image.csv", index=False, quoting=csv.QUOTE_ALL
    )
    (server.root / "BBBC021_v1_moa.csv").write_text('"compound","concentration","moa"\n')
    (server.root / "BBBC021_v1_compound.csv").write_text('"compound","smiles"\n')
    for plate in PLATES:
        _zip(
            server.root / f"BBBC021_v1_images_{plate}.zip",
            {f"{plate}/x.tif": plate.encode(), f"{plate}/y.tif": b"y"},
        )
    return server


def _zip_requests(server: FakeServer) -> list[str]:
    return [path for path, _ in server.requests if path.endswith(".zip")]


def test_download_bbbc021_end_to_end(bbbc021: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert download_bbbc021(out, base_url=bbbc021.url, backoff=0) == PLATES
    assert (out / "Week1/Week1_11111/x.tif").read_bytes() == b"Week1_11111"
    assert (out / "Week2/Week2_22222/x.tif").read_bytes() == b"Week2_22222"
    assert (out / "Week1/Week1_11111/.complete").exists()
    assert (out / "Week2/Week2_22222/.complete").exists()
    for name in ["BBBC021_v1_image.csv", "BBBC021_v1_compound.csv", "BBBC021_v1_moa.csv"]:
        assert (out / "metadata" / name).read_bytes() == (bbbc021.root / name).read_bytes()
    assert list((out / "zips").iterdir()) == []
    image_csv = pd.read_csv(out / "metadata/BBBC021_v1_image.csv")
    for folder in image_csv.Image_PathName_DAPI:
        assert (out / folder / "x.tif").is_file()

    bbbc021.requests.clear()
    assert download_bbbc021(out, base_url=bbbc021.url, backoff=0) == PLATES
    assert _zip_requests(bbbc021) == []


def test_download_bbbc021_one_plate(bbbc021: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "data"
    base = bbbc021.url.rstrip("/")  # a base URL without its trailing slash works too
    assert download_bbbc021(out, ["Week2_22222"], base_url=base, backoff=0) == ["Week2_22222"]
    assert (out / "Week2/Week2_22222/x.tif").is_file()
    assert not (out / "Week1").exists()
    assert _zip_requests(bbbc021) == ["BBBC021_v1_images_Week2_22222.zip"]


def test_download_bbbc021_unknown_plate(bbbc021: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"Week9_99999.*Week1_11111, Week2_22222"):
        download_bbbc021(tmp_path / "data", ["Week9_99999"], base_url=bbbc021.url, backoff=0)
    assert _zip_requests(bbbc021) == []


def test_download_bbbc021_resumes_after_a_failed_plate(bbbc021: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "data"
    bbbc021.fail_always("BBBC021_v1_images_Week2_22222.zip", 404)
    with pytest.raises(DownloadError, match="404"):
        download_bbbc021(out, base_url=bbbc021.url, retries=2, backoff=0)
    assert (out / "Week1/Week1_11111/.complete").exists()
    assert not (out / "Week2").exists()

    bbbc021.fail("BBBC021_v1_images_Week2_22222.zip")
    bbbc021.requests.clear()
    assert download_bbbc021(out, base_url=bbbc021.url, backoff=0) == PLATES
    assert _zip_requests(bbbc021) == ["BBBC021_v1_images_Week2_22222.zip"]
    assert (out / "Week2/Week2_22222/x.tif").read_bytes() == b"Week2_22222"


def test_download_bbbc021_corrupt_zip_is_deleted(bbbc021: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "data"
    (bbbc021.root / "BBBC021_v1_images_Week1_11111.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        download_bbbc021(out, ["Week1_11111"], base_url=bbbc021.url, backoff=0)
    assert not (out / "zips/BBBC021_v1_images_Week1_11111.zip").exists()
    assert not (out / "Week1/Week1_11111/.complete").exists()
