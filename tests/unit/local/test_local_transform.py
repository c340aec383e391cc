"""`dogbreed local transform` without an engine: parameters, records, requests, outputs.

The job itself runs against a small stand-in server on loopback that answers as the
endpoint does (JSON, JSON Lines, a JSON 400 for a bad record).
"""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dogbreed.cli.main import build_parser
from dogbreed.core.errors import ConfigError, exit_code
from dogbreed.local.transform import (
    CSV_NAME,
    Parameters,
    TransformFailedError,
    TransformJob,
    check_report,
    resolve,
    transform,
)
from dogbreed.local.transform_io import (
    RecordTooLargeError,
    assemble,
    csv_rows,
    requests_for,
    split_lines,
)


def job(tmp_path: Path, **kw) -> TransformJob:
    (tmp_path / "in").mkdir(exist_ok=True)
    return TransformJob(
        image="img", model=tmp_path / "m", input=tmp_path / "in", output=tmp_path / "out", **kw
    )


# ---- parameters ---------------------------------------------------------------------------


def test_the_jobs_values_win_then_the_containers_answer_then_the_defaults(tmp_path):
    answer = {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20}
    assert resolve(job(tmp_path), answer) == Parameters("SingleRecord", 20, 4)
    mine = job(tmp_path, batch_strategy="MultiRecord", max_payload_mb=8, max_concurrent=2)
    assert resolve(mine, answer) == Parameters("MultiRecord", 8, 2)
    assert resolve(job(tmp_path), None) == Parameters("MultiRecord", 6, 1)


@pytest.mark.parametrize(
    "answer",
    [
        {"MaxConcurrentTransforms": 0, "BatchStrategy": "ALL", "MaxPayloadInMB": 500},
        {"MaxConcurrentTransforms": "4", "BatchStrategy": 3, "MaxPayloadInMB": True},
        [],
        "not an object",
    ],
)
def test_a_malformed_answer_is_ignored_value_by_value(tmp_path, answer):
    assert resolve(job(tmp_path), answer) == Parameters("MultiRecord", 6, 1)


def test_the_container_gets_the_variables_a_transform_job_sets(tmp_path):
    env = job(tmp_path, max_payload_mb=20, batch_strategy="SingleRecord").container_env()
    assert env["SAGEMAKER_BATCH"] == "True"
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "20"
    assert env["SAGEMAKER_BATCH_STRATEGY"] == "SINGLE_RECORD"
    assert "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS" not in env  # the job did not set it
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" not in job(tmp_path).container_env()


def test_bad_job_values_are_config_errors(tmp_path):
    for bad in (
        job(tmp_path, split_type="RecordIO"),
        job(tmp_path, max_payload_mb=0),
        job(tmp_path, max_concurrent=0),
        TransformJob(image="i", model=tmp_path, input=tmp_path, output=tmp_path / "out"),
    ):
        with pytest.raises(ConfigError):
            bad.check()


def test_the_cli_parses_a_transform_job():
    args = build_parser().parse_args(
        ["local", "transform", "--image", "i", "--model", "m", "--input", "a", "--output", "b",
         "--split-type", "Line", "--batch-strategy", "MultiRecord", "--max-payload", "20"]
    )  # fmt: skip
    assert (args.split_type, args.batch_strategy, args.max_payload) == ("Line", "MultiRecord", 20)
    assert args.max_concurrent is None


@pytest.mark.parametrize("value", ["0", "101", "6.5", "x"])
def test_the_cli_refuses_a_payload_sagemaker_refuses(value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["local", "transform", "--image", "i", "--model", "m", "--input", "a",
             "--output", "b", "--max-payload", value]
        )  # fmt: skip


# ---- records and requests -----------------------------------------------------------------


def test_split_type_none_sends_each_file_whole_within_the_limit():
    assert [r.body for r in requests_for(b"\xff\xd8photo", "None", "MultiRecord", 100)] == [
        b"\xff\xd8photo"
    ]
    with pytest.raises(RecordTooLargeError, match="over MaxPayloadInMB"):
        requests_for(b"x" * 101, "None", "SingleRecord", 100)


def test_lines_split_at_newlines_alone_keeping_numbers_and_dropping_blank_ones():
    data = b'{"a": 1}\r\n\n  \n{"b": 2}\x0c\n{"c": 3}'
    assert split_lines(data) == [(1, b'{"a": 1}\r\n'), (4, b'{"b": 2}\x0c\n'), (5, b'{"c": 3}')]


def test_single_record_sends_one_line_a_request_multi_record_packs_to_the_limit():
    data = b"".join(b"%d" % i + b"x" * 8 + b"\n" for i in range(10))  # 10-11 bytes a line
    single = requests_for(data, "Line", "SingleRecord", 1000)
    assert [r.lines for r in single] == [(i,) for i in range(1, 11)]
    multi = requests_for(data, "Line", "MultiRecord", 35)
    assert [r.lines for r in multi] == [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10,)]
    assert b"".join(r.body for r in multi) == data
    with pytest.raises(RecordTooLargeError, match=r"^line 2: "):
        requests_for(b"a\n" + b"b" * 50 + b"\n", "Line", "MultiRecord", 20)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    limit=st.integers(31, 200),
    strategy=st.sampled_from(["SingleRecord", "MultiRecord"]),
)
def test_requests_keep_every_record_in_order_and_within_the_limit(lines, limit, strategy):
    data = b"".join(line + b"\n" for line in lines)
    requests = requests_for(data, "Line", strategy, limit)
    assert all(len(r.body) <= limit for r in requests)
    kept = [line + b"\n" for line in lines if line.strip()]
    assert b"".join(r.body for r in requests) == b"".join(kept)
    numbers = [n for r in requests for n in r.lines]
    assert len(numbers) == len(kept) and numbers == sorted(set(numbers))
    if strategy == "SingleRecord":
        assert all(len(r.lines) == 1 for r in requests)


# ---- answers ------------------------------------------------------------------------------

ANSWER = {"label": "Red", "index": 0, "score": 0.9,
          "top_k": [{"label": "Red", "index": 0, "score": 0.9},
                    {"label": "Blue", "index": 2, "score": 0.1}]}  # fmt: skip


def test_csv_rows_name_the_file_or_its_line():
    (request,) = requests_for(b"photo", "None", "MultiRecord", 100)
    assert csv_rows("a/b.jpg", request, json.dumps(ANSWER).encode()) == [
        ["a/b.jpg", "Red", "0.9", "Red 0.9; Blue 0.1"]
    ]
    (lines,) = requests_for(b"x\n\ny\n", "Line", "MultiRecord", 100)
    body = (json.dumps(ANSWER) + "\n" + json.dumps({**ANSWER, "label": "Blue"})).encode()
    assert [row[:2] for row in csv_rows("f.jsonl", lines, body)] == [
        ["f.jsonl:1", "Red"],
        ["f.jsonl:3", "Blue"],
    ]
    assert csv_rows("f", request, b"<html>") == []


def test_a_files_answers_are_assembled_as_sagemaker_does():
    assert assemble([b"a\n", b" b"], "Line") == b"a\nb\n"
    assert assemble([b"a\n", b" b"], "None") == b"ab"


def test_a_failed_file_fails_the_command_naming_it(capsys):
    from dogbreed.local.transform import Report

    check_report(Report(files=2))
    with pytest.raises(TransformFailedError) as info:
        check_report(Report(files=2, failed={"x.jpg": "HTTP 400: cannot decode image"}))
    assert exit_code(info.value) != 0
    assert "FAILED x.jpg: HTTP 400: cannot decode image" in capsys.readouterr().err


# ---- the job against a stand-in endpoint --------------------------------------------------


class Endpoint(BaseHTTPRequestHandler):
    """Answers like the serve image: a record `bad` is a 400 naming its line."""

    seen: ClassVar[list[tuple[str, int]]] = []
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        kind = self.headers["Content-Type"]
        with self.lock:
            self.seen.append((kind, len(body)))
        if kind == "application/jsonlines":
            records = [r for r in body.split(b"\n") if r.strip()]
            for number, record in enumerate(body.split(b"\n"), start=1):
                if record.strip() == b"bad":
                    return self._send(400, {"error": f"line {number}: cannot decode image"})
            text = "\n".join(json.dumps({**ANSWER, "label": r.decode()}) for r in records)
            return self._send(200, text, "application/jsonlines")
        if body.startswith(b"bad"):
            return self._send(400, {"error": "cannot decode image"})
        return self._send(200, {**ANSWER, "label": body.decode()[:10]})

    def _send(self, status: int, doc, kind: str = "application/json") -> None:
        data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Endpoint.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_each_file_makes_name_out_and_csv_rows_and_a_failure_is_named(tmp_path, endpoint):
    j = job(tmp_path)
    (j.input / "sub").mkdir()
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (j.input / name).write_bytes(name.encode())
    (j.input / "broken.jpg").write_bytes(b"bad bytes")
    report = transform(endpoint, j, Parameters("MultiRecord", 1, 3), progress=False)
    assert report.files == 4 and report.images == 3
    assert report.failed == {"broken.jpg": "HTTP 400: cannot decode image"}
    assert json.loads((j.output / "sub/c.jpg.out").read_bytes())["label"] == "sub/c.jpg"
    assert not (j.output / "broken.jpg.out").exists()
    with (j.output / CSV_NAME).open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "breed", "score", "top_k"]
    assert sorted(r[0] for r in rows[1:]) == ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert {kind for kind, _ in Endpoint.seen} == {"application/x-image"}


def test_multi_record_json_lines_are_packed_and_answered_line_for_line(tmp_path, endpoint):
    j = job(tmp_path, split_type="Line")
    records = [b"r%03d" % i + b"x" * 200 for i in range(60)]
    (j.input / "many.jsonl").write_bytes(b"".join(r + b"\n" for r in records))
    (j.input / "one-bad.jsonl").write_bytes(b"ok\n\nbad\n")
    report = transform(endpoint, j, Parameters("MultiRecord", 1, 2), progress=False)
    # The container counts the lines of its request; the report, those of the file.
    assert report.failed == {"one-bad.jsonl": "HTTP 400: line 3: cannot decode image"}
    out = (j.output / "many.jsonl.out").read_text().splitlines()
    assert [json.loads(line)["label"] for line in out] == [r.decode() for r in records]
    assert report.images == 60
    # 60 records of 205 bytes fit one 1 MB request; the bad file was one more.
    assert len(Endpoint.seen) == 2


def test_a_record_over_the_limit_fails_its_file_without_a_request(tmp_path, endpoint):
    j = job(tmp_path)
    (j.input / "big.jpg").write_bytes(b"x" * (1024 * 1024 + 1))
    report = transform(endpoint, j, Parameters("MultiRecord", 1, 1), progress=False)
    assert "over MaxPayloadInMB" in report.failed["big.jpg"]
    assert Endpoint.seen == []
