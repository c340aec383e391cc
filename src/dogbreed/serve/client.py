"""A small HTTP client for a running endpoint server (standard library only)."""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogbreed.core.errors import EndpointError


def wait_until_healthy(
    url: str, timeout_s: float, alive: Callable[[], bool] | None = None
) -> float:
    """Poll GET /ping until it answers 200; seconds waited. Bounded by timeout_s.

    `alive` (e.g. "the server process is still running") ends the wait early.
    """
    start = time.monotonic()
    while True:
        if alive is not None and not alive():
            raise EndpointError(f"the server behind {url} exited before /ping answered")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - start > timeout_s:
            raise EndpointError(f"{url}/ping did not answer 200 within {timeout_s:.0f}s")
        time.sleep(0.3)


def classify(url: str, image: Path, timeout_s: float = 60) -> dict[str, Any]:
    """POST the image's bytes to /invocations; the server's JSON answer."""
    content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    request = urllib.request.Request(
        f"{url}/invocations",
        data=image.read_bytes(),
        headers={"Content-Type": content_type},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            body = json.loads(body).get("error", body)
        raise EndpointError(f"{image}: HTTP {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointError(f"{url}: {exc}") from None
