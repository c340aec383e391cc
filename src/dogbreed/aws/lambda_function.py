"""The Lambda front door: a client's request in, the breed out.

Standard library + boto3 only (the zip is this one file). Input, direct invoke:
    {"image_base64": "..."} | {"s3_uri": "s3://bucket/key"} | {"url": "https://..."}
plus optional "top_k"; or an API Gateway / function URL proxy event whose body
is the image (base64-encoded by the gateway) or such a JSON document.
Output: {"breed", "index", "score", "top_k"}; proxy events get statusCode,
JSON headers and a JSON body. Errors: 400 bad input, 413 too large, 502
endpoint failure, 504 endpoint timeout, each {"error": message}.

Configuration (environment): ENDPOINT_NAME (required), ALLOW_URL_FETCH
("true"), MAX_IMAGE_BYTES (6 MB), URL_TIMEOUT_S (5), ENDPOINT_TIMEOUT_S (20).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import time
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

_clients: dict[str, object] = {}


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _setting(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _max_bytes() -> int:
    return int(_setting("MAX_IMAGE_BYTES", str(6 * 1024 * 1024)))


def _client(service: str):
    """boto3 clients, created once per container, with explicit timeouts and retries."""
    if service not in _clients:
        read = float(_setting("ENDPOINT_TIMEOUT_S", "20"))
        config = Config(
            connect_timeout=3, read_timeout=read, retries={"max_attempts": 3, "mode": "standard"}
        )
        _clients[service] = boto3.client(service, config=config)
    return _clients[service]


# ---- input -------------------------------------------------------------------------------


def _b64(text: object, field: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise RequestError(400, f"{field} must be a non-empty base64 string")
    if len(text) > _max_bytes() * 4 // 3 + 4:
        raise RequestError(413, f"image is over the {_max_bytes()}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{field} is not valid base64") from None


def _from_s3(uri: object) -> bytes:
    if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RequestError(400, "s3_uri must look like s3://bucket/key")
    bucket, key = uri[5:].split("/", 1)
    try:
        obj = _client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise RequestError(400, f"cannot read {uri}: {code or 'error'}") from None
    if obj.get("ContentLength", 0) > _max_bytes():
        raise RequestError(413, f"{uri} is over the {_max_bytes()}-byte limit")
    return obj["Body"].read(_max_bytes() + 1)


def _public_addresses(host: str) -> list[str]:
    """The host's addresses, refusing any private, loopback, link-local or reserved one."""
    try:
        infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except OSError:
        raise RequestError(400, f"cannot resolve {host}") from None
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise RequestError(
                400,
                f"refusing to fetch from {host}: it resolves to a "
                "private, loopback, link-local or reserved address",
            )
    return addresses


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand (no second DNS answer), TLS for the name."""

    def __init__(self, host: str, address: str, timeout: float) -> None:
        super().__init__(host, 443, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _from_url(url: object, redirects: int = 3) -> bytes:
    if _setting("ALLOW_URL_FETCH", "true").lower() != "true":
        raise RequestError(400, "fetching URLs is switched off; send image_base64 or s3_uri")
    if not isinstance(url, str):
        raise RequestError(400, "url must be a string")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RequestError(400, "only https:// URLs are fetched")
    if parts.port not in (None, 443):
        raise RequestError(400, "only the standard https port is allowed")
    address = _public_addresses(parts.hostname)[0]
    timeout = float(_setting("URL_TIMEOUT_S", "5"))
    conn = _PinnedHTTPSConnection(parts.hostname, address, timeout)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        conn.request("GET", path, headers={"User-Agent": "dogbreed-lambda", "Accept": "image/*"})
        response = conn.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location", "")
            if redirects == 0:
                raise RequestError(400, "too many redirects")
            return _from_url(urllib.parse.urljoin(url, location), redirects - 1)
        if response.status != 200:
            raise RequestError(400, f"{parts.hostname} answered HTTP {response.status}")
        data = response.read(_max_bytes() + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise RequestError(400, f"cannot fetch the URL: {exc.__class__.__name__}") from None
    finally:
        conn.close()
    return data


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
    except ValueError:
        raise RequestError(
            400, "body must be an image (base64-encoded by the gateway) or a JSON object"
        ) from None
    return _parse_json(doc)


# ---- endpoint -------------------------------------------------------------------------------


def _invoke(image: bytes, top_k: int | None) -> dict:
    if not image:
        raise RequestError(400, "the image is empty")
    if len(image) > _max_bytes():
        raise RequestError(413, f"image is over the {_max_bytes()}-byte limit")
    endpoint = os.environ.get("ENDPOINT_NAME")
    if not endpoint:
        raise RequestError(502, "ENDPOINT_NAME is not configured")
    if top_k is None:
        body, content_type = image, "application/x-image"
    else:
        body = json.dumps({"image": base64.b64encode(image).decode(), "top_k": top_k})
        content_type = "application/json"
    try:
        response = _client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, ContentType=content_type, Accept="application/json", Body=body
        )
    except (ReadTimeoutError, ConnectTimeoutError):
        raise RequestError(504, "the endpoint did not answer in time") from None
    except ClientError as exc:
        original = exc.response.get("OriginalStatusCode")
        if exc.response.get("Error", {}).get("Code") == "ModelError" and original in (
            400,
            413,
            415,
        ):
            message = exc.response.get("OriginalMessage", "")
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(message).get("error", message)
            raise RequestError(413 if original == 413 else 400, str(message)) from None
        raise RequestError(502, "the endpoint failed to classify the image") from None
    except BotoCoreError:
        raise RequestError(502, "the endpoint could not be reached") from None
    answer = json.loads(response["Body"].read())
    return {
        "breed": answer["label"],
        "index": answer["index"],
        "score": answer["score"],
        "top_k": answer["top_k"],
    }


# ---- handler ------------------------------------------------------------------------------


def lambda_handler(event: dict, context: object) -> dict:
    start = time.monotonic()
    proxy = is_proxy_event(event)
    source, size = "unknown", 0
    try:
        image, top_k, source = _parse_proxy(event) if proxy else _parse_json(event)
        size = len(image)
        status, body = 200, _invoke(image, top_k)
    except RequestError as exc:
        status, body = exc.status, {"error": exc.message}
    except Exception:  # never leak internals: log the type, answer a generic 502
        status, body = 502, {"error": "internal error"}
    print(
        json.dumps(
            {
                "request_id": getattr(context, "aws_request_id", None),
                "status": status,
                "source": source,
                "bytes": size,
                "ms": round((time.monotonic() - start) * 1000, 1),
                "breed": body.get("breed"),
                "error": body.get("error"),
            }
        )
    )
    if proxy:
        return {
            "statusCode": status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body),
            "isBase64Encoded": False,
        }
    return body if status == 200 else {**body, "statusCode": status}
