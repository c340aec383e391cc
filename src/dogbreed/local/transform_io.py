"""What a transform job sends and keeps: records into requests, answers into outputs.

As SageMaker's Batch Transform does it: every file under the input is an object;
SplitType None sends it whole, SplitType Line splits it at newlines into records,
sent one a request (SingleRecord) or packed up to MaxPayloadInMB (MultiRecord); a
record over the limit fails its object. Each object's answers, stripped and in
order, make NAME.out (AssembleWith Line: one a line). And the HTTP side: POST
/invocations on keep-alive connections, GET /execution-parameters.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dogbreed.core.errors import EndpointError

log = logging.getLogger("dogbreed.local")


class InvocationError(EndpointError):
    """The container answered an invocation with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status, self.reason = status, reason


# ---- the input: objects, records, requests ------------------------------------------------


def input_files(root: Path) -> list[Path]:
    """Every regular file under root (as every object under an S3 prefix), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Request:
    """One invocation: its body and which records (line numbers; [0] for a whole file)."""

    body: bytes
    lines: tuple[int, ...]


class RecordTooLargeError(EndpointError):
    """A record over MaxPayloadInMB: SageMaker fails the job before sending it."""


def split_lines(data: bytes) -> list[tuple[int, bytes]]:
    """SplitType Line: (line number from 1, the line with its newline), blank lines
    dropped. Lines end at b"\\n" alone, as SageMaker splits them."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def requests_for(data: bytes, split_type: str, strategy: str, limit: int) -> list[Request]:
    """One file's invocations, in order. RecordTooLargeError for a record over the limit."""
    if split_type == "None":
        if len(data) > limit:
            raise RecordTooLargeError(f"{len(data)} bytes, over MaxPayloadInMB ({limit} bytes)")
        return [Request(data, (0,))]
    out: list[Request] = []
    body: list[bytes] = []
    lines: list[int] = []
    size = 0
    for number, line in split_lines(data):
        if len(line) > limit:
            raise RecordTooLargeError(
                f"line {number}: {len(line)} bytes, over MaxPayloadInMB ({limit} bytes)"
            )
        if body and (strategy == "SingleRecord" or size + len(line) > limit):
            out.append(Request(b"".join(body), tuple(lines)))
            body, lines, size = [], [], 0
        body.append(line)
        lines.append(number)
        size += len(line)
    if body:
        out.append(Request(b"".join(body), tuple(lines)))
    return out


# ---- answers: NAME.out and predictions.csv ------------------------------------------------


def answers_in(body: bytes) -> list[dict]:
    """The per-image answers in one response (JSON, or JSON Lines); [] if neither."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
        docs = doc.get("predictions", [doc]) if isinstance(doc, dict) else []
    except ValueError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return []
    return [d for d in docs if isinstance(d, dict)]


def csv_rows(name: str, request: Request, body: bytes) -> list[list[str]]:
    """predictions.csv rows for one answered request: file (FILE or FILE:LINE), breed,
    score, and the top k as `label score; ...`."""
    answers = answers_in(body)
    rows = []
    for line, answer in zip(request.lines, answers, strict=False):
        where = name if line == 0 else f"{name}:{line}"
        top = answer.get("top_k") or []
        top_text = "; ".join(
            f"{t.get('label')} {t.get('score')}" for t in top if isinstance(t, dict)
        )
        rows.append([where, str(answer.get("label", "")), str(answer.get("score", "")), top_text])
    return rows


def assemble(bodies: Iterable[bytes], assemble_with: str) -> bytes:
    """NAME.out from a file's answers, as SageMaker assembles them (each one stripped)."""
    parts = [b.strip() for b in bodies]
    if assemble_with == "Line":
        return b"".join(p + b"\n" for p in parts)
    return b"".join(parts)


# ---- talking to the container -------------------------------------------------------------


class Invoker:
    """POST /invocations over one keep-alive connection per thread."""

    def __init__(self, url: str, content_type: str, accept: str | None, timeout_s: float):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Content-Type": content_type}
        if accept:
            self.headers["Accept"] = accept
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def invoke(self, body: bytes) -> bytes:
        """The answer's body; EndpointError with the server's own reason otherwise."""
        for attempt in (1, 2):  # a keep-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.request("POST", "/invocations", body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise EndpointError(f"no answer: {exc}") from None
                continue
            except OSError as exc:  # a timeout or an unreachable server: not retried
                conn.close()
                self._local.conn = None
                raise EndpointError(f"no answer: {exc}") from None
            if resp.status != 200:
                raise InvocationError(resp.status, _reason(data))
            return data
        raise AssertionError("unreachable")


_LINE = re.compile(r"line (\d+): (.*)", re.DOTALL)


def in_file_terms(exc: EndpointError, request: Request) -> str:
    """The error, its `line N:` (a line of the request's body, as the container counts)
    turned into the line of the input file."""
    if isinstance(exc, InvocationError) and request.lines != (0,):
        found = _LINE.fullmatch(exc.reason)
        if found and 1 <= int(found.group(1)) <= len(request.lines):
            line = request.lines[int(found.group(1)) - 1]
            return f"HTTP {exc.status}: line {line}: {found.group(2)}"
    return str(exc)


def _reason(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "error" in doc:
            text = str(doc["error"])
    except ValueError:
        pass
    return " ".join(text.split())[:500] or "(empty body)"


def execution_parameters(url: str) -> dict | None:
    """GET /execution-parameters: the container's answer, or None (404, no JSON, no answer)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request("GET", "/execution-parameters")
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            log.info("transform: GET /execution-parameters answered %d: defaults", resp.status)
            return None
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.info("transform: GET /execution-parameters failed (%s): defaults", exc)
        return None
    finally:
        conn.close()


def write_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "breed", "score", "top_k"])
    writer.writerows(rows)
    path.write_text(buf.getvalue())
