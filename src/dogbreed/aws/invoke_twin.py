"""A local twin of SageMaker's InvokeEndpoint front door, on loopback.

boto3's sagemaker-runtime client, aimed here with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME,
sends `POST /endpoints/NAME/invocations`; the gateway forwards the body to a
model server's `/invocations` and answers as SageMaker does: the model's reply on
200, a `ModelError` (HTTP 424, with OriginalStatusCode and OriginalMessage) when
the model answered an error, `ValidationError` for an unknown endpoint. Tests
and `make demo` use it so that the Lambda handler reaches the endpoint as on AWS.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.error
import urllib.request

from dogbreed.core.errors import ServerError

MODEL_ERROR_TYPE = "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/"
PATH_RE = re.compile(r"^/endpoints/([^/]+)/invocations$")


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
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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
            self._error(503, "ServiceUnavailable", {"message": f"model unreachable: {exc}"})


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
    """Serves endpoint names -> model server base URLs."""

    def __init__(self, endpoints: dict[str, str], port: int = 0, timeout_s: float = 60) -> None:
        super().__init__(port, _Handler)
        self.endpoints = {k: v.rstrip("/") for k, v in endpoints.items()}
        self.timeout_s = timeout_s
