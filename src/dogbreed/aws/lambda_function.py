"""The Lambda front door: a client's request in, the breed out.

Standard library + boto3 only (the zip is this one file). Input, direct invoke:
    {"image_base64": "..."} | {"s3_uri": "s3://bucket/key"} | {"url": "https://..."}
plus optional "top_k"; or an API Gateway / function URL proxy event whose body
is the image (base64-encoded by the gateway) or such a JSON document. A proxy
GET answers a small HTML page that posts a photo back to the same URL.
Output: {"breed", "index", "score", "top_k"}; proxy events get statusCode,
JSON headers and a JSON body. Errors: 400 bad input, 403 an s3_uri outside the
allowed prefix, 413 too large, 502 endpoint failure, 504 endpoint timeout, each
{"error": message}.

Configuration (environment): ENDPOINT_NAME (required), ALLOW_URL_FETCH ("true"
turns URL fetching on; off otherwise), S3_PREFIX (s3://bucket/prefix/: where
s3_uri may read; unset, s3_uri is refused), MAX_IMAGE_BYTES (6 MiB: the largest
InvokeEndpoint body, counted after encoding; 4 MiB for a serverless endpoint),
URL_TIMEOUT_S (5: one deadline for a whole fetch, redirects included),
ENDPOINT_TIMEOUT_S (20).

Time: the endpoint is called once (a read timeout is never retried: a slow request
would reach the endpoint again and outlast the function), and never for longer than
the invocation has left, so a slow endpoint is a 504, not Lambda's own timeout error.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

log = logging.getLogger("dogbreed.lambda")
_clients: dict[tuple[str, float], object] = {}  # (service, read timeout) -> client

HTTPS_PORT = 443  # the only port fetched (tests aim it at a loopback server)
CA_FILE: str | None = None  # None: the system's trust store (tests trust their own)
MAX_REDIRECTS = 3
FETCH_FAILED = "cannot fetch the URL"  # one message: the cause goes to the log only
_REDIRECTS = (301, 302, 303, 307, 308)
# A failed fetch: network or TLS error or timeout (OSError), a malformed answer, a lookup
# abandoned at the deadline (no OSError before Python 3.11), a name the resolver refuses.
FETCH_ERRORS = (OSError, http.client.HTTPException, concurrent.futures.TimeoutError, ValueError)
# IPv6 ranges that carry an IPv4 address in their last 32 bits (NAT64, IPv4-compatible):
# judged as that IPv4 address, like IPv4-mapped and 6to4 ones.
_V4_IN_LAST_32 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: site-local by definition
# getaddrinfo has no timeout of its own: a thread lets a lookup be abandoned at the deadline.
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _setting(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _max_bytes() -> int:
    return int(_setting("MAX_IMAGE_BYTES", str(6 * 1024 * 1024)))


CONNECT_TIMEOUT_S = 3
ANSWER_S = 1  # kept back from the invocation's time to answer after giving up on the endpoint
S3_READ_TIMEOUT_S = 5


def _client(service: str, read_timeout: float = S3_READ_TIMEOUT_S):
    """boto3 clients, created once per container and read timeout, each call sent once
    (botocore's retries would repeat a timed-out request: several times the time)."""
    key = (service, read_timeout)
    if key not in _clients:
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        _clients[key] = boto3.client(service, config=config)
    return _clients[key]


def endpoint_timeout_s(context: object) -> float:
    """Seconds to wait for the endpoint: ENDPOINT_TIMEOUT_S, or less when the invocation
    has less time left (connect and answer included); 0: no time left."""
    wanted = float(_setting("ENDPOINT_TIMEOUT_S", "20"))
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        left = remaining() / 1000 - CONNECT_TIMEOUT_S - ANSWER_S
        if left < wanted:
            wanted = float(max(0, int(left)))  # whole seconds: few clients per container
    return wanted


# ---- input: base64 and S3 -----------------------------------------------------------------


def _b64(text: object, field: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise RequestError(400, f"{field} must be a non-empty base64 string")
    if len(text) > _max_bytes() * 4 // 3 + 4:
        raise RequestError(413, f"image is over the {_max_bytes()}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{field} is not valid base64") from None


def s3_prefix() -> tuple[str, str] | None:
    """(bucket, key prefix ending in '/') that s3_uri may read, from S3_PREFIX; None: unset."""
    setting = _setting("S3_PREFIX", "").strip()
    if not setting:
        return None
    bucket, _, prefix = setting.removeprefix("s3://").partition("/")
    if not setting.startswith("s3://") or not bucket or not prefix.strip("/"):
        # A whole bucket is refused: the function would read anything its role can reach.
        raise ValueError(f"S3_PREFIX {setting!r} must be s3://bucket/prefix/, not a whole bucket")
    return bucket, prefix.strip("/") + "/"


def _s3_location(uri: object) -> tuple[str, str]:
    """(bucket, key) of an s3_uri inside S3_PREFIX, or the client's mistake as a RequestError."""
    bucket, _, key = uri[5:].partition("/") if isinstance(uri, str) else ("", "", "")
    if not str(uri).startswith("s3://") or not bucket or not key:  # s3:///key, s3://bucket
        raise RequestError(400, "s3_uri must look like s3://bucket/key")
    allowed = s3_prefix()
    if allowed is None:
        raise RequestError(400, "s3_uri is switched off (no S3 input prefix); send image_base64")
    inside = bucket == allowed[0] and key.startswith(allowed[1])
    if not inside or {".", ".."} & set(key.split("/")):
        raise RequestError(403, f"s3_uri must be under s3://{allowed[0]}/{allowed[1]}")
    return bucket, key


def _from_s3(uri: object) -> bytes:
    bucket, key = _s3_location(uri)
    try:
        obj = _client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise RequestError(400, f"cannot read {uri}: {code or 'error'}") from None
    if obj.get("ContentLength", 0) > _max_bytes():
        raise RequestError(413, f"{uri} is over the {_max_bytes()}-byte limit")
    return obj["Body"].read(_max_bytes() + 1)


# ---- input: URL fetch, under one deadline ------------------------------------------------


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch deadline passed")
    return left


def _check_url(url: object) -> tuple[str, str]:
    """(ASCII host name, path and query) of an https URL; a 400 names the client's mistake."""
    if not isinstance(url, str):
        raise RequestError(400, "url must be a string")
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a port out of range
    except ValueError:
        raise RequestError(400, "url is malformed") from None
    if parts.scheme != "https" or not host:
        raise RequestError(400, "only https:// URLs are fetched")
    if port not in (None, 443):
        raise RequestError(400, "only the standard https port is allowed")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or over-long label, a character IDNA forbids
        raise RequestError(400, "url has an invalid host name") from None
    return ascii_host, urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))


def is_public(address: str) -> bool:
    """Whether an address is globally reachable; an IPv6 one carrying an IPv4 address
    (IPv4-mapped, NAT64, IPv4-compatible, 6to4) is judged as the IPv4 address it reaches."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip in _LOCAL_NAT64:
            return False
        if any(ip in net for net in _V4_IN_LAST_32):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        else:
            ip = ip.ipv4_mapped or ip.sixtofour or ip
    return ip.is_global and not ip.is_multicast


def _public_addresses(host: str, deadline: float) -> list[str]:
    """The host's addresses, IPv4 first; a 400 when any of them is not public."""
    lookup = _resolver.submit(socket.getaddrinfo, host, HTTPS_PORT, type=socket.SOCK_STREAM)
    infos = lookup.result(timeout=_remaining(deadline))
    addresses = sorted({info[4][0] for info in infos}, key=lambda a: (":" in a, a))
    if not addresses or not all(is_public(a) for a in addresses):
        raise RequestError(400, f"refusing to fetch from {host}: not a public address")
    return addresses


class _DeadlineSocket(ssl.SSLSocket):
    """TLS whose every read waits only until the fetch's deadline: a server that drips one
    byte at a time cannot stretch a fetch, since each read's timeout shrinks."""

    deadline = 0.0

    def recv_into(self, *args, **kwargs) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(*args, **kwargs)


def _connect(
    context: ssl.SSLContext, host: str, addresses: list[str], deadline: float
) -> ssl.SSLSocket:
    """TLS (for the name) to the first checked address that accepts, in turn: no second
    DNS answer is ever used."""
    error: OSError = ConnectionError("no address")
    for address in addresses:
        try:
            raw = socket.create_connection((address, HTTPS_PORT), timeout=_remaining(deadline))
            break
        except OSError as exc:
            error = exc
    else:
        raise error
    try:
        raw.settimeout(_remaining(deadline))  # the handshake's own limit
        tls = context.wrap_socket(raw, server_hostname=host)
    except OSError:
        raw.close()
        raise
    tls.deadline = deadline
    return tls


def _get(host: str, path: str, deadline: float) -> tuple[int, str, bytes]:
    """(status, Location, body up to the size limit + 1) of one GET."""
    context = ssl.create_default_context(cafile=CA_FILE)
    context.sslsocket_class = _DeadlineSocket
    conn = http.client.HTTPSConnection(host, HTTPS_PORT, context=context)
    conn.sock = _connect(context, host, _public_addresses(host, deadline), deadline)
    try:
        conn.request("GET", path, headers={"User-Agent": "dogbreed-lambda", "Accept": "image/*"})
        response = conn.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location", ""), b""
        chunks, size = [], 0
        while size <= _max_bytes():
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return 200, "", b"".join(chunks)
    finally:
        conn.close()


def _from_url(url: object) -> bytes:
    if _setting("ALLOW_URL_FETCH", "false").lower() != "true":
        raise RequestError(400, "fetching URLs is switched off; send image_base64 or s3_uri")
    deadline = time.monotonic() + float(_setting("URL_TIMEOUT_S", "5"))
    for _ in range(MAX_REDIRECTS + 1):
        host, path = _check_url(url)
        try:
            status, location, data = _get(host, path, deadline)
        except FETCH_ERRORS as exc:
            log.warning("URL fetch from %s failed: %s", host, type(exc).__name__)
            raise RequestError(400, FETCH_FAILED) from None
        if status == 200:
            return data
        if status not in _REDIRECTS:
            break
        url = urllib.parse.urljoin(url, location)  # checked again at the loop's top
    log.warning("URL fetch from %s ended with HTTP %s", host, status)  # or too many redirects
    raise RequestError(400, FETCH_FAILED)


# ---- request parsing ------------------------------------------------------------------------


def _parse_json(doc: object) -> tuple[bytes, int | None, str]:
    if not isinstance(doc, dict):
        raise RequestError(400, "expected a JSON object with image_base64, s3_uri or url")
    top_k = doc.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise RequestError(400, "top_k must be a positive integer")
    if "image_base64" in doc:
        return _b64(doc["image_base64"], "image_base64"), top_k, "base64"
    if "s3_uri" in doc:
        return _from_s3(doc["s3_uri"]), top_k, "s3"
    if "url" in doc:
        return _from_url(doc["url"]), top_k, "url"
    raise RequestError(400, "give one of image_base64, s3_uri or url")


def is_proxy_event(event: object) -> bool:
    return isinstance(event, dict) and ("requestContext" in event or "httpMethod" in event)


def _method(event: dict) -> str:
    """The HTTP method of a proxy event: payload 2.0 (function URL, HTTP API) or 1.0 (REST)."""
    http_context = (event.get("requestContext") or {}).get("http") or {}
    return str(http_context.get("method") or event.get("httpMethod") or "POST").upper()


def _parse_proxy(event: dict) -> tuple[bytes, int | None, str]:
    body = event.get("body") or ""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if event.get("isBase64Encoded"):
        raw = _b64(body, "body")
        if media != "application/json":
            return raw, None, "proxy-image"
        body = raw.decode("utf-8", errors="replace")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: a deeply nested document
        raise RequestError(
            400, "body must be an image (base64-encoded by the gateway) or a JSON object"
        ) from None
    return _parse_json(doc)


# ---- endpoint -------------------------------------------------------------------------------


def _body(image: bytes, top_k: int | None) -> tuple[bytes, str]:
    """(InvokeEndpoint body, content type); a 413 when the body, as sent, is over the
    endpoint's limit (top_k sends the image base64-encoded in JSON: 4/3 of its size)."""
    if top_k is None:
        body, content_type = image, "application/x-image"
    else:
        doc = {"image": base64.b64encode(image).decode(), "top_k": top_k}
        body, content_type = json.dumps(doc).encode(), "application/json"
    if len(body) > _max_bytes():
        encoded = " (base64 in JSON, for top_k)" if top_k is not None else ""
        raise RequestError(
            413, f"the request to the endpoint is over its {_max_bytes()}-byte limit{encoded}"
        )
    return body, content_type


def _invoke(image: bytes, top_k: int | None, timeout_s: float) -> dict:
    if not image:
        raise RequestError(400, "the image is empty")
    if len(image) > _max_bytes():
        raise RequestError(413, f"image is over the {_max_bytes()}-byte limit")
    endpoint = os.environ.get("ENDPOINT_NAME")
    if not endpoint:
        raise RequestError(502, "ENDPOINT_NAME is not configured")
    body, content_type = _body(image, top_k)
    if timeout_s <= 0:
        raise RequestError(504, "no time left to call the endpoint")
    try:
        response = _client("sagemaker-runtime", timeout_s).invoke_endpoint(
            EndpointName=endpoint, ContentType=content_type, Accept="application/json", Body=body
        )
    except (ReadTimeoutError, ConnectTimeoutError):
        raise RequestError(504, "the endpoint did not answer in time") from None
    except ClientError as exc:
        original = exc.response.get("OriginalStatusCode")
        model_error = exc.response.get("Error", {}).get("Code") == "ModelError"
        if model_error and original in (400, 413, 415):
            message = exc.response.get("OriginalMessage", "")
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(message).get("error", message)
            raise RequestError(413 if original == 413 else 400, str(message)) from None
        raise RequestError(502, "the endpoint failed to classify the image") from None
    except BotoCoreError:
        raise RequestError(502, "the endpoint could not be reached") from None
    answer = json.loads(response["Body"].read())
    return {"breed": answer["label"], **{k: answer[k] for k in ("index", "score", "top_k")}}


# ---- the page a browser gets on GET ---------------------------------------------------------

_STYLE = (
    "body{font:16px system-ui,sans-serif;max-width:36em;margin:2em auto;padding:0 1em}"
    "label{display:block;border:2px dashed #888;border-radius:8px;padding:2em;text-align:center}"
    "label.over{background:#eef}img{max-width:100%;margin-top:1em}li{margin:.2em 0}"
)
# The photo goes as the raw body (the gateway base64-encodes it); answers render as text.
_SCRIPT = """
const $ = (id) => document.getElementById(id), say = (t) => { $("status").textContent = t; };
async function classify(file) {
  if (!file) return;
  $("photo").src = URL.createObjectURL(file);
  $("top").replaceChildren(); $("breed").textContent = ""; say("Classifying " + file.name);
  try {
    const headers = {"Content-Type": file.type || "application/octet-stream"};
    const r = await fetch(location.href, {method: "POST", body: file, headers});
    const a = await r.json().catch(() => ({}));
    if (!r.ok || !a.breed) throw new Error(a.error || "HTTP " + r.status);
    say(""); $("breed").textContent = a.breed;
    for (const t of a.top_k) {
      const li = document.createElement("li");
      li.textContent = t.label + ": " + (100 * t.score).toFixed(1) + "%";
      $("top").append(li);
    }
  } catch (e) { say("Error: " + e.message); }
}
const hover = (on) => { $("drop").className = on ? "over" : ""; };
$("file").onchange = (e) => classify(e.target.files[0]);
document.ondragover = (e) => { e.preventDefault(); hover(true); };
document.ondragleave = () => hover(false);
document.ondrop = (e) => { e.preventDefault(); hover(false); classify(e.dataTransfer.files[0]); };
"""
PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Which dog breed?</title><style>{_STYLE}</style></head>
<body><h1>Which dog breed?</h1>
<label id="drop">Choose or drop a photo <input id="file" type="file" accept="image/*"></label>
<p id="status" role="status"></p><h2 id="breed"></h2><ol id="top"></ol><img id="photo" alt="">
<script>{_SCRIPT}</script></body></html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own script and style run; it talks to its own origin only.
CSP = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _proxy_answer(status: int, body: str, headers: dict[str, str]) -> dict:
    headers = {**headers, "X-Content-Type-Options": "nosniff"}
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _page() -> dict:
    html = {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP}
    return _proxy_answer(200, PAGE, {**html, "Referrer-Policy": "no-referrer"})


# ---- handler ------------------------------------------------------------------------------


def lambda_handler(event: dict, context: object) -> dict:
    proxy = is_proxy_event(event)
    if proxy and _method(event) == "GET":
        return _page()
    start = time.monotonic()
    source, size, error_type = "unknown", 0, None
    try:
        image, top_k, source = _parse_proxy(event) if proxy else _parse_json(event)
        size = len(image)
        status, body = 200, _invoke(image, top_k, endpoint_timeout_s(context))
    except RequestError as exc:
        status, body = exc.status, {"error": exc.message}
    except Exception as exc:  # never leak internals: log the type, answer a generic 502
        error_type = type(exc).__name__
        log.exception("unexpected %s", error_type)
        status, body = 502, {"error": "internal error"}
    record = {"request_id": getattr(context, "aws_request_id", None), "status": status}
    record.update(source=source, bytes=size, ms=round((time.monotonic() - start) * 1000, 1))
    record.update(breed=body.get("breed"), error=body.get("error"), error_type=error_type)
    print(json.dumps(record))
    if proxy:
        return _proxy_answer(status, json.dumps(body), {"Content-Type": "application/json"})
    return body if status == 200 else {**body, "statusCode": status}


s3_prefix()  # a malformed or whole-bucket S3_PREFIX fails the cold start, not each request
