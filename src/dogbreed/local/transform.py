"""`dogbreed local transform`: a SageMaker Batch Transform job on this machine.

The serve image runs as `dogbreed local serve` runs it (model read-only at
/opt/ml/model, reachable on 127.0.0.1 only) with the variables a transform job
sets: SAGEMAKER_BATCH=True and the job's own MaxPayloadInMB, BatchStrategy and
MaxConcurrentTransforms where given. Then, as SageMaker does:

- GET /ping, then GET /execution-parameters (optional): the job's values win, then
  the container's answer, then SageMaker's defaults (MultiRecord, 6 MB, 1);
- every file under --input is an object: SplitType None sends each file whole,
  SplitType Line splits it into lines, one a request (SingleRecord) or as many as
  fit the payload limit (MultiRecord); a record over the limit fails its file;
- MaxConcurrentTransforms requests at a time; each file's answers, in order, make
  OUTPUT/NAME.out (AssembleWith Line: one answer a line).

Beyond SageMaker: OUTPUT/predictions.csv (file, breed, score, top-k) for a
person to open, the container's log in OUTPUT/container.log, a progress bar and
a summary with images/s. SageMaker fails the whole job on one failed invocation;
here every file is tried, each failure is named with its reason, and the command
exits non-zero if any failed (no NAME.out for a failed file).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dogbreed.core.errors import ConfigError, EndpointError, ServerError
from dogbreed.local import docker_engine as engine
from dogbreed.local.serve import (
    STOP_TIMEOUT_S,
    ServeJob,
    container_spec,
    mounted_model,
    wait_for_ping,
)
from dogbreed.local.transform_io import (
    Invoker,
    RecordTooLargeError,
    Request,
    assemble,
    csv_rows,
    execution_parameters,
    in_file_terms,
    input_files,
    requests_for,
    write_csv,
)

log = logging.getLogger("dogbreed.local")

SPLIT_TYPES = ("None", "Line")
BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")
ASSEMBLE_WITH = ("None", "Line")
# SageMaker's defaults when neither the job nor the container gives a value.
DEFAULT_STRATEGY = "MultiRecord"
DEFAULT_PAYLOAD_MB = 6
DEFAULT_CONCURRENCY = 1
MAX_PAYLOAD_MB = 100  # CreateTransformJob's own bound
CONTENT_TYPES = {"None": "application/x-image", "Line": "application/jsonlines"}
# The container variables of a transform job, and the API's names for the strategies.
STRATEGY_ENV = {"SingleRecord": "SINGLE_RECORD", "MultiRecord": "MULTI_RECORD"}
CSV_NAME = "predictions.csv"
LOG_NAME = "container.log"


class TransformFailedError(EndpointError):
    """Some files of a transform job were not transformed (each is named)."""


@dataclass
class TransformJob:
    image: str
    model: Path
    input: Path
    output: Path
    split_type: str = "None"
    batch_strategy: str | None = None  # None: the container's answer, else MultiRecord
    max_payload_mb: int | None = None  # None: the container's answer, else 6
    max_concurrent: int | None = None  # None: the container's answer, else 1
    content_type: str | None = None  # None: by split type (CONTENT_TYPES)
    accept: str | None = None
    assemble_with: str | None = None  # None: Line for SplitType Line, else None
    invocation_timeout_s: float = 600.0  # SageMaker's InvocationsTimeoutInSeconds default
    network: str = "auto"
    wait_s: float = 240.0
    env: dict[str, str] = field(default_factory=dict)
    run_id: str = ""

    def check(self) -> None:
        if self.split_type not in SPLIT_TYPES:
            raise ConfigError(f"--split-type {self.split_type}: one of {', '.join(SPLIT_TYPES)}")
        if self.batch_strategy is not None and self.batch_strategy not in BATCH_STRATEGIES:
            raise ConfigError(
                f"--batch-strategy {self.batch_strategy}: one of {', '.join(BATCH_STRATEGIES)}"
            )
        if self.assemble_with is not None and self.assemble_with not in ASSEMBLE_WITH:
            raise ConfigError(f"--assemble-with {self.assemble_with}: one of None, Line")
        if self.max_payload_mb is not None and not 1 <= self.max_payload_mb <= MAX_PAYLOAD_MB:
            raise ConfigError(f"--max-payload {self.max_payload_mb}: 1-{MAX_PAYLOAD_MB} (MB)")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent {self.max_concurrent}: at least 1")
        if not self.input.is_dir():
            raise ConfigError(f"--input {self.input}: not a directory")
        if self.output.resolve().is_relative_to(self.input.resolve()):
            raise ConfigError(f"--output {self.output}: must not lie inside --input")

    def container_env(self) -> dict[str, str]:
        """What SageMaker sets for a transform job's container: the job's own values only."""
        env = {**self.env, "SAGEMAKER_BATCH": "True"}
        if self.max_payload_mb is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.max_payload_mb)
        if self.batch_strategy is not None:
            env["SAGEMAKER_BATCH_STRATEGY"] = STRATEGY_ENV[self.batch_strategy]
        if self.max_concurrent is not None:
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.max_concurrent)
        return env


@dataclass(frozen=True)
class Parameters:
    """The values the job runs with, resolved as SageMaker resolves them."""

    strategy: str
    payload_mb: int
    concurrency: int

    @property
    def payload_bytes(self) -> int:
        return self.payload_mb * 1024 * 1024


def resolve(job: TransformJob, answer: dict | None) -> Parameters:
    """The job's values win, then the container's /execution-parameters, then defaults.
    A malformed answer is ignored value by value (SageMaker would not run on it)."""
    answer = answer if isinstance(answer, dict) else {}
    strategy = job.batch_strategy
    if strategy is None:
        named = {v: k for k, v in STRATEGY_ENV.items()}
        strategy = named.get(str(answer.get("BatchStrategy", "")).upper(), DEFAULT_STRATEGY)
    payload = job.max_payload_mb
    if payload is None:
        payload = _whole(answer.get("MaxPayloadInMB"), 1, MAX_PAYLOAD_MB) or DEFAULT_PAYLOAD_MB
    concurrency = job.max_concurrent
    if concurrency is None:
        concurrency = _whole(answer.get("MaxConcurrentTransforms"), 1, 1024) or DEFAULT_CONCURRENCY
    return Parameters(strategy, payload, concurrency)


def _whole(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


# ---- the job over a running server --------------------------------------------------------


@dataclass
class Report:
    files: int = 0
    images: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # file -> reason

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _File:
    name: str
    path: Path
    requests: list[Request] = field(default_factory=list)
    bodies: dict[int, bytes] = field(default_factory=dict)
    error: str | None = None


def transform(
    url: str,
    job: TransformJob,
    params: Parameters,
    alive=None,
    progress: bool = True,
) -> Report:
    """Run the job's requests against a server at `url`; write OUTPUT/*.out and the CSV.

    `alive` (e.g. "the container still runs") is checked between requests: once it
    is false the remaining files fail at once instead of waiting on timeouts.
    """
    from tqdm import tqdm

    split = job.split_type
    content_type = job.content_type or CONTENT_TYPES[split]
    assemble_with = job.assemble_with or ("Line" if split == "Line" else "None")
    invoker = Invoker(url, content_type, job.accept, job.invocation_timeout_s)
    job.output.mkdir(parents=True, exist_ok=True)
    files = [_File(p.relative_to(job.input).as_posix(), p) for p in input_files(job.input)]
    report = Report(files=len(files))
    rows: list[list[str]] = []
    start = time.perf_counter()
    bar = tqdm(total=len(files), unit="file", disable=not progress or None, file=sys.stderr)

    def send(f: _File, index: int) -> tuple[_File, int, bytes | None, str | None]:
        if f.error is not None:  # an earlier request of the file failed: SageMaker stops
            return f, index, None, None
        if alive is not None and not alive():
            return f, index, None, "the serve container is no longer running"
        request = f.requests[index]
        try:
            return f, index, invoker.invoke(request.body), None
        except EndpointError as exc:
            return f, index, None, in_file_terms(exc, request)

    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(params.concurrency, thread_name_prefix="transform") as pool:
        try:
            for f, index in _plan(files, split, params):
                if index < 0:  # nothing to send: the file failed when it was read
                    _finish(f, job, assemble_with, rows, report, bar)
                    continue
                pending.append(pool.submit(send, f, index))
                while len(pending) >= 2 * params.concurrency:
                    _collect(pending.popleft().result(), job, assemble_with, rows, report, bar)
            while pending:
                _collect(pending.popleft().result(), job, assemble_with, rows, report, bar)
        except BaseException:  # Ctrl-C: what has not started yet is not sent
            for future in pending:
                future.cancel()
            raise
    bar.close()
    report.seconds = time.perf_counter() - start
    write_csv(job.output / CSV_NAME, rows)
    return report


def _plan(files: list[_File], split: str, params: Parameters) -> Iterator[tuple[_File, int]]:
    """(file, request index) in order; (file, -1) for a file that cannot be sent at all.
    A file is read when its turn comes, so that memory holds a few files, not all."""
    for f in files:
        try:
            f.requests = requests_for(f.path.read_bytes(), split, params.strategy,
                                      params.payload_bytes)  # fmt: skip
        except (RecordTooLargeError, OSError) as exc:
            f.error = str(exc)
        if f.error is not None or not f.requests:
            f.error = f.error or "no records (an empty file)"
            yield f, -1
            continue
        for index in range(len(f.requests)):
            yield f, index


def _collect(result, job: TransformJob, assemble_with: str, rows, report: Report, bar) -> None:
    f, index, body, error = result
    if error is not None and f.error is None:
        f.error = error if index == 0 and len(f.requests) == 1 else f"request {index + 1}: {error}"
    if body is not None:
        f.bodies[index] = body
    if index == len(f.requests) - 1:  # futures are collected in order: the file is complete
        _finish(f, job, assemble_with, rows, report, bar)


def _finish(f: _File, job: TransformJob, assemble_with: str, rows, report: Report, bar) -> None:
    if f.error is None and len(f.bodies) == len(f.requests):
        target = job.output / (f.name + ".out")
        target.parent.mkdir(parents=True, exist_ok=True)
        bodies = [f.bodies[i] for i in range(len(f.requests))]
        target.write_bytes(assemble(bodies, assemble_with))
        for request, body in zip(f.requests, bodies, strict=True):
            rows.extend(csv_rows(f.name, request, body))
            report.images += len(request.lines)
    else:
        report.failed[f.name] = f.error or "not answered"
        (job.output / (f.name + ".out")).unlink(missing_ok=True)  # no output from an older run
    f.requests, f.bodies = [], {}  # the file's memory goes
    bar.update(1)


def summary(report: Report, params: Parameters, split: str) -> str:
    ok = report.files - len(report.failed)
    return (
        f"transform: {ok} of {report.files} files, {report.images} images in "
        f"{report.seconds:.1f} s ({report.images_per_s:.1f} images/s); SplitType {split}, "
        f"{params.strategy}, MaxPayloadInMB {params.payload_mb}, "
        f"MaxConcurrentTransforms {params.concurrency}"
    )


def check_report(report: Report) -> None:
    """Each failed file with its reason, then TransformFailedError (exit non-zero)."""
    if not report.failed:
        return
    for name, reason in sorted(report.failed.items()):
        print(f"transform: FAILED {name}: {reason}", file=sys.stderr, flush=True)
    raise TransformFailedError(
        f"{len(report.failed)} of {report.files} files failed (a SageMaker transform job "
        "fails on the first): see the lines above"
    )


# ---- the container ------------------------------------------------------------------------


def loopback_port(low: int = 20000, high: int = 32000) -> int:
    """A free port on 127.0.0.1 the model server takes (it refuses ports above 32767)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        if engine.port_is_free(port):
            return port
    raise ConfigError(f"no free port on 127.0.0.1 in {low}-{high}")


def run_transform(job: TransformJob) -> int:
    """Start the serve container, run the job over --input, stop and remove it."""
    job.check()
    job.output.mkdir(parents=True, exist_ok=True)
    with mounted_model(job.model, job.image) as (client, mount):
        run_id = job.run_id or engine.new_run_id("transform")
        with engine.Run(client, run_id, "transform", STOP_TIMEOUT_S) as run:
            report, params = _transform_in(run, job, mount)
    print(summary(report, params, job.split_type), flush=True)
    print(f"transform: outputs in {job.output} ({CSV_NAME}, {LOG_NAME})", flush=True)
    check_report(report)
    return 0


def _transform_in(run: engine.Run, job: TransformJob, mount: Path) -> tuple[Report, Parameters]:
    serve = ServeJob(job.image, job.model, loopback_port(), job.network, job.wait_s,
                     job.container_env(), run.run_id)  # fmt: skip
    network = run.choose_network(serve.network)
    command, options = container_spec(serve, network, mount)
    container = run.create(job.image, command, "transform", network, **options)
    with (job.output / LOG_NAME).open("w") as log_file:
        run.start(container)
        follower = engine.Follower(container, "transform", out=log_file)
        follower.start()
        url = f"http://127.0.0.1:{serve.port}"
        try:
            wait_for_ping(url, follower, job.wait_s)
        except ServerError:
            print("\n".join(follower.tail), file=sys.stderr)
            raise
        answer = execution_parameters(url)
        params = resolve(job, answer)
        log.info(
            "transform: /execution-parameters %s; running with %s",
            json.dumps(answer) if answer is not None else "absent",
            params,
        )
        report = transform(url, job, params, alive=follower.is_alive)
        if not follower.is_alive():
            print("\n".join(follower.tail), file=sys.stderr)
    return report, params
