"""Downloads against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from kit.core.errors import ChecksumError, DownloadError, KitError
from kit.upstreams import download as dl

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/truncated":  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "w.pt").write_bytes(PAYLOAD)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.02), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/w.pt"


def test_downloads_to_part_then_renames_and_writes_the_sidecar(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "weights" / "w.pt"
    seen: dict[str, object] = {}
    real_replace = os.replace

    def spy(src: Path, dst: Path) -> None:  # the state of the disk just before the rename
        seen.update(src=Path(src).name, data=Path(src).read_bytes() == PAYLOAD, dest=Path(dst).exists())
        real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", spy)
    assert dl.download(f"{server}/w.pt", dest, sha256=SHA.upper(), progress=False) == dest
    assert seen == {"src": "w.pt.part", "data": True, "dest": False}
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "weights" / "w.pt.part").exists()
    assert dl.sidecar(dest).read_text() == f"{SHA}  w.pt\n"


def test_existing_file_is_reused_without_the_network(tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    dest.write_bytes(PAYLOAD)
    assert dl.download(_closed_port_url(), dest, sha256=SHA) == dest
    assert dl.download(_closed_port_url(), dest) == dest


def test_existing_file_with_the_wrong_digest_is_downloaded_again(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    dest.write_bytes(b"stale")
    dl.download(f"{server}/w.pt", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_no_file(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=f"SHA-256 is {SHA}, expected {'0' * 64}") as info:
        dl.download(f"{server}/w.pt", out / "w.pt", sha256="0" * 64, progress=False)
    assert isinstance(info.value, DownloadError)
    assert list(out.iterdir()) == []


def test_unreachable_url_says_how_to_pass_a_local_file(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(DownloadError, match="WEIGHTS=path") as info:
        dl.download(url, tmp_path / "w.pt", timeout=5, progress=False)
    assert url in str(info.value) and "--weights PATH" in str(info.value)
    assert isinstance(info.value, KitError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "reason"), [("/missing.pt", "answered 404"), ("/truncated", "stopped after 10 of 1000 bytes")]
)
def test_http_errors_and_truncated_transfers_leave_no_file(
    server: str, tmp_path: Path, path: str, reason: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=reason):
        dl.download(server + path, out / "w.pt", progress=False)
    assert list(out.iterdir()) == []


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = dl.download(src.as_uri(), tmp_path / "copy" / "w.pt", sha256=SHA, progress=False)
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="could not reach"):
        dl.download((tmp_path / "nope.bin").as_uri(), tmp_path / "x.pt", progress=False)
