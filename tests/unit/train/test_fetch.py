"""`dogbreed data fetch` against local HTTP(S) servers: resume, retry, verification,
plain http refused unless asked for, bounded unpacking."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import ssl
import threading
import zipfile
from pathlib import Path

import pytest

from dogbreed.core.errors import ConfigError, DownloadError
from dogbreed.train.fetch import Limits, download, fetch
from dogbreed.train.synth import synthesize
from support.cli import run_cli


class ZipHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.payload at /dogImages.zip; may cut the first responses short."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.headers.get("Range"))
        if self.path == "/moved.zip":
            self.send_response(302)
            self.send_header("Location", server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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


def start(payload: bytes, context: ssl.SSLContext | None = None):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ZipHandler)
    scheme = "http"
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    httpd.payload = payload
    httpd.requests, httpd.truncate_first, httpd.ranges = [], 0, True
    httpd.redirect_to = ""
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.base = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    httpd.url = f"{httpd.base}/dogImages.zip"
    return httpd


def stop(httpd) -> None:
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("zip")
    data = tmp / "src"
    synthesize(data / "dogImages", classes=2, per_class=3, seed=3)
    archive = tmp / "dogImages.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*")):
            zf.write(path, path.relative_to(data))
        zf.writestr("__MACOSX/._junk", b"junk")
    return archive.read_bytes()


@pytest.fixture
def server(payload):
    """Plain http on loopback: download() is asked to accept it (allow_http=True)."""
    httpd = start(payload)
    yield httpd
    stop(httpd)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the CA file that trusts it (SSL_CERT_FILE)."""
    pytest.importorskip("cryptography")  # moto's dependency: there with the dev extras
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", ca_key, "test CA", ca_key, ca=True)
    leaf = cert("127.0.0.1", key, "test CA", ca_key, ca=False)
    tmp = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "leaf.pem", tmp / "key.pem")
    return context, tmp / "ca.pem"


@pytest.fixture
def secure(payload, tls, monkeypatch):
    """https on loopback, trusted through SSL_CERT_FILE (here and in `dogbreed` children)."""
    context, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    httpd = start(payload, context)
    httpd.ca = ca
    yield httpd
    stop(httpd)


def test_fetch_unpacks_the_three_splits(server, tmp_path):
    out = tmp_path / "out"
    counts = fetch(
        out,
        server.url,
        sha256=hashlib.sha256(server.payload).hexdigest(),
        progress=False,
        allow_http=True,
    )
    assert counts == {"train": 2, "valid": 2, "test": 2}
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "001.Affenpinscher",
        "002.Afghan_hound",
    ]
    assert not (out / "dogImages.zip").exists() and not (out / ".unpack").exists()


def test_truncated_download_resumes_with_range(server, tmp_path):
    server.truncate_first = 1
    dest = download(server.url, tmp_path / "a.zip", progress=False, allow_http=True)
    assert dest.read_bytes() == server.payload
    assert server.requests[0] is None and server.requests[1].startswith("bytes=")


def test_server_without_ranges_restarts_cleanly(server, tmp_path):
    server.truncate_first, server.ranges = 2, False
    dest = download(server.url, tmp_path / "a.zip", progress=False, allow_http=True)
    assert dest.read_bytes() == server.payload and len(server.requests) == 3


def test_gives_up_after_bounded_retries(server, tmp_path):
    server.truncate_first, server.ranges = 100, False
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download(server.url, tmp_path / "a.zip", retries=3, progress=False, allow_http=True)
    assert len(server.requests) == 3


def test_checksum_mismatch_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download(server.url, tmp_path / "a.zip", sha256="0" * 64, progress=False, allow_http=True)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_not_a_zip_is_refused(server, tmp_path):
    server.payload = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="not a valid zip"):
        download(server.url, tmp_path / "a.zip", progress=False, allow_http=True)


def test_cli_reports_counts_and_errors(secure, tmp_path):
    env = {"SSL_CERT_FILE": str(secure.ca)}
    ok = run_cli("data", "fetch", "--out", tmp_path / "o", "--url", secure.url, env=env, check=True)
    assert "2 train, 2 valid, 2 test images" in ok.stdout
    bad = run_cli("data", "fetch", "--out", tmp_path / "p", "--url", secure.url + "x", env=env)
    assert bad.returncode == 5 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "HTTP 404" in bad.stderr
    assert len(secure.requests) == 2  # a 404 is not retried


def test_plain_http_is_refused_unless_asked_for(server, tmp_path):
    for call in (
        lambda: fetch(tmp_path / "o", server.url, progress=False),
        lambda: download(server.url, tmp_path / "a.zip", progress=False),
    ):
        with pytest.raises(ConfigError, match="--allow-http"):
            call()
    assert server.requests == [] and not (tmp_path / "o" / "train").exists()


def test_cli_refuses_plain_http_in_one_line(server, tmp_path):
    proc = run_cli("data", "fetch", "--out", tmp_path / "o", "--url", server.url)
    assert proc.returncode == 2 and "--allow-http" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert server.requests == []


def test_a_redirect_down_to_plain_http_is_refused(secure, server, tmp_path):
    secure.redirect_to = server.url
    with pytest.raises(DownloadError, match="redirects to plain http"):
        download(f"{secure.base}/moved.zip", tmp_path / "a.zip", progress=False)
    assert server.requests == []
    dest = download(f"{secure.base}/moved.zip", tmp_path / "b.zip", progress=False, allow_http=True)
    assert dest.read_bytes() == server.payload


def test_an_archive_already_there_is_verified_before_unpacking(secure, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "dogImages.zip").write_bytes(secure.payload[: len(secure.payload) // 2])
    with pytest.raises(DownloadError, match="not a valid zip"):
        fetch(out, secure.url, progress=False)
    (out / "dogImages.zip").write_bytes(secure.payload)
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch(out, secure.url, sha256="0" * 64, progress=False)
    assert not (out / "train").exists() and secure.requests == []
    (out / "dogImages.zip").write_bytes(secure.payload)
    digest = hashlib.sha256(secure.payload).hexdigest()
    assert fetch(out, secure.url, sha256=digest, progress=False)["train"] == 2
    assert secure.requests == []  # verified, not downloaded again


def test_a_malformed_sha256_is_a_config_error(secure, tmp_path):
    with pytest.raises(ConfigError, match="64 hexadecimal"):
        fetch(tmp_path / "o", secure.url, sha256="abc", progress=False)


def bomb(payload: bytes, claimed: int = 0xF000_0000) -> bytes:
    """The archive with every member's size in its central directory set to `claimed`
    (3.75 GiB each): what a zip bomb's directory promises."""
    data = bytearray(payload)
    at = data.find(b"PK\x01\x02")
    while at != -1:
        data[at + 24 : at + 28] = claimed.to_bytes(4, "little")  # uncompressed size
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def test_a_zip_bomb_is_refused_in_one_line_before_anything_is_unpacked(secure, tmp_path):
    secure.payload = bomb(secure.payload)
    env = {"SSL_CERT_FILE": str(secure.ca)}
    proc = run_cli("data", "fetch", "--out", tmp_path / "o", "--url", secure.url, env=env)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "zip bomb" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "train").exists() and not (tmp_path / "o" / ".unpack").exists()


@pytest.mark.parametrize(
    "limits", [Limits(max_members=3), Limits(max_bytes=1000)], ids=["members", "bytes"]
)
def test_unpacking_is_bounded(secure, tmp_path, limits):
    out = tmp_path / "o"
    with pytest.raises(DownloadError, match="zip bomb"):
        fetch(out, secure.url, progress=False, limits=limits)
    assert not (out / "train").exists() and not (out / ".unpack").exists()
