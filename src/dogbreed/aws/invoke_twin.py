"""A local twin of SageMaker's InvokeEndpoint front door, on loopback.

boto3's sagemaker-runtime client, aimed here with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME,
sends `POST /endpoints/NAME/invocations`; the gateway forwards the body to a
model server's `/invocations` and answers as SageMaker does: the model's reply on
200, a `ModelError` (HTTP 424, with OriginalStatusCode and OriginalMessage) when
the model answered an error, `ValidationError` for an unknown endpoint, HTTP 413
for a body over InvokeEndpoint's 6 MB (read to its end, never forwarded), and
`ServiceUnavailable` (503) naming the model server when it cannot be reached. That
last failure is also kept (`last_failure`) and passed to `on_failure`, for the
operator: the Lambda handler answers its client a generic 502. Tests and `make demo`
use it so that the Lambda handler reaches the endpoint as on AWS.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from dogbreed.core.errors import ServerError

MODEL_ERROR_TYPE = "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/"
PATH_RE = re.compile(r"^/endpoints/([^/]+)/invocations$")
# InvokeEndpoint's payload limit (instance endpoints); SageMaker answers a larger body 413
# with this text and no error type (botocore then reports the code "413").
MAX_BODY_BYTES = 6 * 1024 * 1024
TOO_LARGE = "HTTP content length exceeded {limit} bytes."


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A twin's request handler: no access log, one way to answer."""

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


JSON = {"Content-Type": "application/json"}


class _Handler(QuietHandler):
    server: InvokeEndpointGateway

    def _error(self, status: int, error_type: str, doc: dict) -> None:
        self._reply(
            status,
            json.dumps(doc).encode(),
            {"Content-Type": "application/json", "x-amzn-ErrorType": error_type},
        )

    def do_POST(self) -> None:
        match = PATH_RE.match(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            discard(self.rfile, length)  # so the client reads the 413 rather than a reset
            message = TOO_LARGE.format(limit=MAX_BODY_BYTES)
            self._reply(413, json.dumps({"message": message}).encode(), JSON)
            return
        body = self.rfile.read(length)
        if not match or match.group(1) not in self.server.endpoints:
            name = match.group(1) if match else "?"
            self._error(400, "ValidationError", {"message": f"Endpoint {name} not found."})
            return
        upstream = self.server.endpoints[match.group(1)]
        request = urllib.request.Request(
            f"{upstream}/invocations",
            data=body,
            method="POST",
            headers={
                "Content-Type": self.headers.get("Content-Type", "application/octet-stream"),
                "Accept": self.headers.get("Accept", "application/json"),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.server.timeout_s) as r:
                self._reply(
                    200,
                    r.read(),
                    {
                        "Content-Type": r.headers.get("Content-Type", "application/json"),
                        "x-Amzn-Invoked-Production-Variant": "AllTraffic",
                    },
                )
        except urllib.error.HTTPError as exc:
            original = exc.read().decode(errors="replace")
            self._error(
                424,
                MODEL_ERROR_TYPE,
                {
                    "ErrorCode": "CLIENT_ERROR_FROM_MODEL"
                    if exc.code < 500
                    else "SERVER_ERROR_FROM_MODEL",
                    "Message": f"Received {'client' if exc.code < 500 else 'server'} error "
                    f'({exc.code}) from primary with message "{original}".',
                    "OriginalMessage": original,
                    "OriginalStatusCode": exc.code,
                    "LogStreamArn": f"arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/"
                    f"Endpoints/{match.group(1)}",
                },
            )
        except (urllib.error.URLError, OSError) as exc:
            failure = unreachable(upstream, exc)
            self.server.failed(failure)
            self._error(503, "ServiceUnavailable", {"message": failure})


def unreachable(url: str, exc: Exception) -> str:
    """One line: the model server at `url` could not be reached, and why ("refused the
    connection" when nothing listens there)."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket's error
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"the model server {url} refused the connection (Connection refused): is a "
            "server running there?"
        )
    if isinstance(reason, TimeoutError):
        return f"the model server {url} did not answer in time ({reason})"
    return f"the model server {url} could not be reached: {reason}"


def discard(stream, length: int, chunk: int = 1 << 16) -> None:
    """Read a refused body to its end, so the client reads the answer rather than a reset."""
    while length > 0:
        got = stream.read(min(chunk, length))
        if not got:
            return
        length -= len(got)


class LoopbackServer(http.server.ThreadingHTTPServer):
    """An HTTP twin of an AWS front door on 127.0.0.1:port (0: any free port), served
    from a daemon thread."""

    daemon_threads = True

    def __init__(self, port: int, handler_class: type[http.server.BaseHTTPRequestHandler]) -> None:
        try:
            super().__init__(("127.0.0.1", port), handler_class)
        except OSError as exc:
            raise ServerError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self):
        threading.Thread(target=self.serve_forever, name=type(self).__name__, daemon=True).start()
        return self


class InvokeEndpointGateway(LoopbackServer):
    """Serves endpoint names -> model server base URLs. `on_failure` is called with the
    line of each failure to reach a model server (an operator's log)."""

    def __init__(
        self,
        endpoints: dict[str, str],
        port: int = 0,
        timeout_s: float = 60,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(port, _Handler)
        self.endpoints = {k: v.rstrip("/") for k, v in endpoints.items()}
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.last_failure: str | None = None

    def failed(self, failure: str) -> None:
        self.last_failure = failure
        if self.on_failure is not None:
            self.on_failure(failure)
