"""A local twin of a Lambda function URL, on loopback.

Each HTTP request becomes the event a function URL hands the function (payload
format 2.0: method, lower-case headers, raw path and query, the body as text
when it is text and base64-encoded otherwise), and the function's proxy answer
becomes the HTTP response. `dogbreed lambda-local` serves the Lambda handler
through it: the page on GET, a classification on POST, as on AWS.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from dogbreed.aws.invoke_twin import LoopbackServer, QuietHandler, discard

# Lambda's synchronous invocation limit: a function URL refuses a request whose event,
# body base64-encoded when binary, is larger (an upload of about 4.5 MB at most).
MAX_EVENT_BYTES = 6 * 1024 * 1024
TOO_LARGE = b"Request Entity Too Large"
TEXT_TYPES = ("application/json", "application/xml", "application/x-www-form-urlencoded")

Handler = Callable[[dict[str, Any], object], dict[str, Any]]


def _body(media: str, body: bytes) -> tuple[str, bool]:
    """(body, isBase64Encoded) as a function URL passes them: text as is, the rest encoded."""
    if media.startswith("text/") or media in TEXT_TYPES:
        with contextlib.suppress(UnicodeDecodeError):
            return body.decode("utf-8"), False
    return base64.b64encode(body).decode(), True


def to_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The function URL event of one HTTP request."""
    path, _, query = target.partition("?")
    lower = {k.lower(): v for k, v in headers.items()}
    shown, encoded = _body(lower.get("content-type", "").split(";")[0].strip().lower(), body)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lower,
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "127.0.0.1"}},
        "body": shown,
        "isBase64Encoded": encoded,
    }


def event_bytes(event: dict[str, Any]) -> int:
    """The size of the invocation payload, as Lambda counts it: the event as JSON."""
    return len(json.dumps(event).encode())


class _Request(QuietHandler):
    server: FunctionUrlTwin

    def _call(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_EVENT_BYTES:  # too large even before encoding: read, not kept
            discard(self.rfile, length)
            self._reply(413, TOO_LARGE, {"Content-Type": "text/plain"})
            return
        event = to_event(self.command, self.path, dict(self.headers), self.rfile.read(length))
        if event_bytes(event) > MAX_EVENT_BYTES:
            self._reply(413, TOO_LARGE, {"Content-Type": "text/plain"})
            return
        with self.server.lock:  # a Lambda environment runs one request at a time
            answer = self.server.handler(event, None)
        body = answer.get("body") or ""
        data = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()
        self._reply(int(answer.get("statusCode", 200)), data, answer.get("headers") or {})

    do_GET = do_POST = _call


class FunctionUrlTwin(LoopbackServer):
    """Serves `handler` as a function URL would, one request at a time as Lambda runs them."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        super().__init__(port, _Request)
        self.handler = handler
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return super().url + "/"  # the page is at the root
