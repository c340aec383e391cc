"""The Lambda's URL fetch: which addresses it refuses, and one deadline for the whole fetch.

A TLS server on loopback plays the remote host: the fetch is aimed at it by
pointing the function's checked addresses, port and trust store there (its own
checks refuse loopback, as they must). No traffic leaves loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from dogbreed.aws import lambda_function as lf

HOST = "dogs.test"
DRIP_S = 0.3
DEADLINE_S = 1.0
MARGIN_S = 1.5  # a busy machine's set-up; the drip alone would hold about 18 s


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.8",
        "169.254.169.254",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.1.2.3",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::808:808",  # local-use NAT64 (RFC 8215)
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::a00:1",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not lf.is_public(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"],
)
def test_public_addresses_pass(address):
    assert lf.is_public(address)


def fake_dns(monkeypatch, *addresses: str) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_ipv4_comes_first_and_one_private_address_refuses_the_host(monkeypatch):
    fake_dns(monkeypatch, "2606:4700:4700::1111", "8.8.8.8", "1.1.1.1")
    addresses = lf._public_addresses(HOST, time.monotonic() + 5)
    assert addresses == ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"]
    fake_dns(monkeypatch, "8.8.8.8", "64:ff9b::a00:1")
    with pytest.raises(lf.RequestError, match="not a public address"):
        lf._public_addresses(HOST, time.monotonic() + 5)


# ---- a TLS server on loopback -------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for HOST, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("dogbreed test CA", ca_key, "dogbreed test CA", ca_key, ca=True)
    leaf = cert(HOST, key, "dogbreed test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = out / "ca.pem", out / "cert.pem", out / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class Remote:
    """One connection at a time on 127.0.0.1: `script(server, socket, request)` answers it.
    Every loop is bounded in time and count; `close` stops it."""

    def __init__(self, files: tuple[Path, Path, Path], tls: bool = True) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(files[1], files[2])
        self.tls, self.script = tls, None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _ in range(50):
            if self.stop.is_set():
                return
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):  # OSError: the client hung up
                conn.settimeout(5)
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        if not self.tls:
            self.script(self, conn, "")
            return
        with self.context.wrap_socket(conn, server_side=True) as tls:
            request = tls.recv(4096).decode(errors="replace")
            self.requests.append(request.split("\r\n")[0])
            self.script(self, tls, request)

    def drip(self, sock: socket.socket, data: bytes) -> None:
        for byte in data[:60]:  # 60 x 0.3 s at most
            if self.stop.wait(DRIP_S):
                return
            sock.sendall(bytes([byte]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def remote(tls_files, monkeypatch):
    """A Remote that the function believes is HOST's only (public) address, on its port."""
    made: list[Remote] = []

    def make(script, tls: bool = True, addresses: tuple[str, ...] = ("127.0.0.1",)) -> Remote:
        server = Remote(tls_files, tls)
        server.script = script
        made.append(server)
        monkeypatch.setattr(lf, "HTTPS_PORT", server.port)
        monkeypatch.setattr(lf, "CA_FILE", str(tls_files[0]))
        monkeypatch.setattr(lf, "_public_addresses", lambda host, deadline: list(addresses))
        return server

    monkeypatch.setenv("ALLOW_URL_FETCH", "true")
    monkeypatch.setenv("URL_TIMEOUT_S", str(DEADLINE_S))
    yield make
    for server in made:
        server.close()


def ok(body: bytes):
    def script(server, sock, request):
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode() + body)

    return script


def test_a_fetch_reads_the_image(remote):
    server = remote(ok(b"\xff\xd8 a jpeg"))
    assert lf._from_url(f"https://{HOST}/dogs/1.jpg?size=big") == b"\xff\xd8 a jpeg"
    assert server.requests == ["GET /dogs/1.jpg?size=big HTTP/1.1"]


def test_each_checked_address_is_tried_in_turn(remote):
    # Nothing listens on 127.0.0.2 at that port: refused, then the next address answers.
    remote(ok(b"jpeg"), addresses=("127.0.0.2", "127.0.0.1"))
    assert lf._from_url(f"https://{HOST}/dog.jpg") == b"jpeg"


def redirects(server, sock, request):
    """/final.jpg answers; /loopN redirects to /loopN+1; anything else to /final.jpg."""
    path = request.split(" ")[1]
    if path == "/final.jpg":
        ok(b"jpeg")(server, sock, request)
        return
    hop = int(path[5:]) + 1 if path.startswith("/loop") else None
    location = f"loop{hop}" if hop else "/final.jpg"  # relative, then absolute-path
    sock.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n\r\n".encode())


def test_redirects_are_followed_then_bounded(remote):
    server = remote(redirects)
    assert lf._from_url(f"https://{HOST}/start") == b"jpeg"
    assert server.requests == ["GET /start HTTP/1.1", "GET /final.jpg HTTP/1.1"]
    server.requests.clear()
    with pytest.raises(lf.RequestError) as err:
        lf._from_url(f"https://{HOST}/loop0")
    assert err.value.message == lf.FETCH_FAILED
    assert len(server.requests) == lf.MAX_REDIRECTS + 1


def handshake_drip(server, sock, request):
    # A TLS record header announcing a long handshake message, then a byte at a time.
    server.drip(sock, b"\x16\x03\x03\x40\x00" + bytes(55))


def headers_drip(server, sock, request):
    server.drip(sock, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 50)


def body_drip(server, sock, request):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n")
    server.drip(sock, b"b" * 60)


@pytest.mark.parametrize(
    ("script", "tls"), [(handshake_drip, False), (headers_drip, True), (body_drip, True)]
)
def test_a_slow_drip_server_cannot_hold_a_fetch_past_the_deadline(remote, caplog, script, tls):
    remote(script, tls=tls)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dogbreed.lambda"):
        out = lf.lambda_handler({"url": f"https://{HOST}/dog.jpg"}, None)
    took = time.monotonic() - start
    assert out == {"statusCode": 400, "error": lf.FETCH_FAILED}  # the cause is not told
    assert took < DEADLINE_S + MARGIN_S, f"the fetch took {took:.2f} s"
    assert any("TimeoutError" in r.getMessage() for r in caplog.records), caplog.text


def test_fetch_failures_answer_one_message_and_log_the_cause(remote, caplog, monkeypatch):
    remote(ok(b"jpeg"))
    monkeypatch.setattr(lf, "CA_FILE", None)  # the system's trust store: the test CA is unknown
    with caplog.at_level(logging.WARNING, logger="dogbreed.lambda"):
        out = lf.lambda_handler({"url": f"https://{HOST}/dog.jpg"}, None)
    assert out == {"statusCode": 400, "error": "cannot fetch the URL"}
    assert "SSLCertVerificationError" in caplog.text and "SSL" not in out["error"]
