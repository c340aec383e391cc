"""`dogbreed data fetch` against a local HTTP server: resume, retry, verification."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile

import pytest

from dogbreed.core.errors import DownloadError
from dogbreed.train.fetch import download, fetch
from dogbreed.train.synth import synthesize
from support.cli import run_cli


class ZipHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.payload at /dogImages.zip; may cut the first responses short."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.headers.get("Range"))
        if self.path != "/dogImages.zip":
            self.send_error(404)
            return
        payload = server.payload
        start = 0
        rng = self.headers.get("Range")
        if rng and server.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.truncate_first > 0:
            server.truncate_first -= 1
            body = body[: len(body) // 3]  # the connection drops part-way
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "src"
    synthesize(data / "dogImages", classes=2, per_class=3, seed=3)
    archive = tmp_path / "dogImages.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*")):
            zf.write(path, path.relative_to(data))
        zf.writestr("__MACOSX/._junk", b"junk")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ZipHandler)
    httpd.payload = archive.read_bytes()
    httpd.requests, httpd.truncate_first, httpd.ranges = [], 0, True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/dogImages.zip"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_fetch_unpacks_the_three_splits(server, tmp_path):
    out = tmp_path / "out"
    counts = fetch(
        out, server.url, sha256=hashlib.sha256(server.payload).hexdigest(), progress=False
    )
    assert counts == {"train": 2, "valid": 2, "test": 2}
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "001.Affenpinscher",
        "002.Afghan_hound",
    ]
    assert not (out / "dogImages.zip").exists() and not (out / ".unpack").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    server.truncate_first = 1
    dest = download(server.url, tmp_path / "a.zip", progress=False)
    assert dest.read_bytes() == server.payload
    assert server.requests[0] is None and server.requests[1].startswith("bytes=")


def test_server_without_ranges_restarts_cleanly(server, tmp_path):
    server.truncate_first, server.ranges = 2, False
    dest = download(server.url, tmp_path / "a.zip", progress=False)
    assert dest.read_bytes() == server.payload and len(server.requests) == 3


def test_gives_up_after_bounded_retries(server, tmp_path):
    server.truncate_first, server.ranges = 100, False
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download(server.url, tmp_path / "a.zip", retries=3, progress=False)
    assert len(server.requests) == 3


def test_checksum_mismatch_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download(server.url, tmp_path / "a.zip", sha256="0" * 64, progress=False)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_not_a_zip_is_refused(server, tmp_path):
    server.payload = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="not a valid zip"):
        download(server.url, tmp_path / "a.zip", progress=False)


def test_cli_reports_counts_and_errors(server, tmp_path):
    ok = run_cli("data", "fetch", "--out", tmp_path / "o", "--url", server.url, check=True)
    assert "2 train, 2 valid, 2 test images" in ok.stdout
    bad = run_cli("data", "fetch", "--out", tmp_path / "p", "--url", server.url + "x")
    assert bad.returncode == 5 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "HTTP 404" in bad.stderr
    assert len(server.requests) == 2  # a 404 is not retried
