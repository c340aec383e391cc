"""`aws deploy --async`, `--notify` and `--capture-percent`: what they add to a deploy.

An asynchronous endpoint queues its requests in SageMaker: a client puts its image
in S3 and calls InvokeEndpointAsync; the answer lands under N's async/output prefix
(a failure's text under async/failure) and, with --notify, SageMaker publishes to
N's two SNS topics. SageMaker hands each instance at most
MaxConcurrentInvocationsPerInstance requests at once: set to the serve container's
workers, every request the container sees has a worker, so its own queue is that
small. Data capture (--capture-percent) stores a share of the requests and answers
under N's capture prefix. Both are settings of the endpoint config, whose name is a
digest of its request: a change makes a new config and the endpoint is updated.
endpoint.py calls `prepare` before any request and the rest as it deploys. Here too:
`aws invoke --async`. async_ops.py has scaling to zero, and status and teardown.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.aws.context import Ctx, Request, aws_error, error_code
from dogbreed.aws.policies import deployment_uri, split_s3
from dogbreed.core import settings
from dogbreed.core.errors import AwsError, ConfigError
from dogbreed.core.serve_settings import BATCH_PAYLOAD_CAP_MB

ASYNC_PREFIX = "async"  # below N's output prefix: input/, output/, failure/
CAPTURE_PREFIX = "capture"  # below N's output prefix
# The serve image's worker count when nothing sets it (serve.server.DEFAULT_WORKERS; a
# test checks the two agree): an async model sets it explicitly, and SageMaker's
# MaxConcurrentInvocationsPerInstance is the same number.
ASYNC_WORKERS = 2
# The largest request the serve image takes: the cap it puts on Batch Transform's
# payload, which async (up to 1 GB in S3) would otherwise exceed.
PAYLOAD_MB = int(BATCH_PAYLOAD_CAP_MB)
MAX_TIMEOUT_S = 3600  # InvokeEndpointAsync's InvocationTimeoutSeconds at most
# The Java front end holds each body it has taken, up to its max_request_size (twice the
# payload limit and 1 MB: serve.mms.front_end_limit; a test checks). While it hands a body
# to a worker it holds two copies on its heap: the request's byte[] and the buffer MMS's
# ModelRequestEncoder writes it into (with one copy, two 200 MB bodies at once ran the heap
# out under load: a 500 "Worker died"). It gets room for ASYNC_WORKERS of those above a
# base for itself, in whole steps.
FRONT_END_BODY_MB = 2 * PAYLOAD_MB + 1
HEAP_COPIES_PER_BODY = 2
HEAP_BASE_MB = 256
HEAP_STEP_MB = 128
SIZED_VMARGS = ("-Xmx", "-XX:MaxDirectMemorySize=")  # the flags heap_vmargs replaces
# Captured answers of these types are stored as they are; other bodies (images) base64.
CAPTURE_JSON_TYPES = ["application/json"]
SNS_TOPIC = "arn:aws:sns:{region}:{account}:{topic}"
# HeadObject's codes (its HTTP status: a HEAD answer has no body) for an object not there.
NOT_YET = ("403", "404", "NoSuchKey")
POLL_S = 5  # between HeadObject calls on the answer's two places
PROGRESS_S = 30  # between `waiting` lines
IMAGE_TYPES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))
OTHER_IMAGE = "application/x-image"  # the serve image tells the format itself
MB = 1024 * 1024
# Where a dry run's reads look for an answer: SageMaker names it after the request's
# InferenceId, which only a real invocation gets.
STAND_IN_ANSWER = {"output": "<inference id>.out", "failure": "<inference id>-error.out"}


@dataclass(frozen=True)
class Extras:
    """What --async, --notify and --capture-percent add to a deploy (nothing when off)."""

    asynchronous: bool = False
    notify: bool = False
    capture_percent: int = 0
    environment: dict[str, str] = field(default_factory=dict)  # the model's, added
    config: dict[str, Any] = field(default_factory=dict)  # CreateEndpointConfig's, added

    def named(self, variants: list[dict[str, Any]]) -> Any:
        """What the endpoint config's name digests: the variants alone when nothing is
        added (the names of earlier deploys), else the whole request."""
        return {"ProductionVariants": variants, **self.config} if self.config else variants


def _pick(flag: Any, setting: Any) -> Any:
    return setting if flag is None else flag


def prepare(ctx: Ctx, opts: Any, serverless: bool) -> Extras:
    """Flags over the config (`opts`: endpoint.DeployOptions), checked before any request
    (ConfigError, one line)."""
    cfg = ctx.config["deploy"]
    asynchronous = bool(_pick(opts.asynchronous, cfg["async"]))
    notify = bool(_pick(opts.notify, ctx.config["async"]["notify"]))
    percent = _pick(opts.capture_percent, cfg["capture_percent"])
    if asynchronous and serverless:
        raise ConfigError(
            "--async (deploy.async) needs instances: a serverless endpoint cannot be "
            "asynchronous; drop --serverless or --async"
        )
    if notify and not asynchronous:
        raise ConfigError("--notify (async.notify) is for an asynchronous endpoint: add --async")
    if not 0 <= percent <= 100:
        raise ConfigError(
            "--capture-percent (deploy.capture_percent) must be from 1 to 100, or 0 for no "
            f"data capture, got {percent}"
        )
    if percent and serverless:
        raise ConfigError(
            "--capture-percent (deploy.capture_percent): a serverless endpoint has no data "
            "capture; drop --serverless or --capture-percent"
        )
    config: dict[str, Any] = {}
    environment: dict[str, str] = {}
    if asynchronous:
        timeout_s = check_timeout(ctx.config["async"]["timeout_s"])
        config["AsyncInferenceConfig"] = async_config(ctx, notify)
        environment = async_environment(timeout_s)
    if percent:
        config["DataCaptureConfig"] = capture_config(ctx, percent)
    return Extras(asynchronous, notify, percent, environment, config)


def check_timeout(timeout_s: int) -> int:
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise ConfigError(
            f"async.timeout_s must be from 1 to {MAX_TIMEOUT_S} s (the longest an "
            f"asynchronous invocation may run), got {timeout_s}"
        )
    return timeout_s


# ---- the requests ---------------------------------------------------------------------------


def async_uri(ctx: Ctx, part: str = "") -> str:
    """N's async prefix, or one of its parts (input, output, failure)."""
    base = f"{deployment_uri(ctx.config['output'], ctx.names.name)}/{ASYNC_PREFIX}"
    return f"{base}/{part}" if part else base


def capture_uri(ctx: Ctx) -> str:
    return f"{deployment_uri(ctx.config['output'], ctx.names.name)}/{CAPTURE_PREFIX}"


def topic_arns(ctx: Ctx) -> list[str]:
    """N's two topics: success, then error (context.Names.async_topics)."""
    return [
        SNS_TOPIC.format(region=ctx.region, account=ctx.account, topic=topic)
        for topic in ctx.names.async_topics
    ]


def async_config(ctx: Ctx, notify: bool) -> dict[str, Any]:
    """CreateEndpointConfig's AsyncInferenceConfig."""
    output: dict[str, Any] = {
        "S3OutputPath": async_uri(ctx, "output"),
        "S3FailurePath": async_uri(ctx, "failure"),
    }
    if notify:
        success, error = topic_arns(ctx)
        output["NotificationConfig"] = {"SuccessTopic": success, "ErrorTopic": error}
    return {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": ASYNC_WORKERS},
        "OutputConfig": output,
    }


def capture_config(ctx: Ctx, percent: int) -> dict[str, Any]:
    """CreateEndpointConfig's DataCaptureConfig: requests and answers, `percent` of them."""
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": percent,
        "DestinationS3Uri": capture_uri(ctx),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": CAPTURE_JSON_TYPES},
    }


def async_environment(timeout_s: int) -> dict[str, str]:
    """The serve container's variables for async requests: larger and slower ones, a queue
    no longer than what SageMaker hands it at once, and a Java heap that holds them."""
    return {
        settings.MODEL_SERVER_WORKERS: str(ASYNC_WORKERS),
        settings.MODEL_SERVER_TIMEOUT_SECONDS: str(timeout_s),
        settings.MAX_PAYLOAD_MB: str(PAYLOAD_MB),
        settings.JOB_QUEUE: str(ASYNC_WORKERS),
        settings.MODEL_SERVER_VMARGS: heap_vmargs(ASYNC_WORKERS),
    }


def heap_mb(bodies: int) -> int:
    """Heap (and direct memory) for `bodies` maximum-size requests held at once."""
    need = HEAP_BASE_MB + bodies * HEAP_COPIES_PER_BODY * FRONT_END_BODY_MB
    return -(-need // HEAP_STEP_MB) * HEAP_STEP_MB


def heap_vmargs(bodies: int) -> str:
    """settings.DEFAULT_VMARGS with its heap and direct-memory sizes for `bodies` requests."""
    size = f"{heap_mb(bodies)}m"
    return " ".join(_sized(flag, size) for flag in shlex.split(settings.DEFAULT_VMARGS))


def _sized(flag: str, size: str) -> str:
    for prefix in SIZED_VMARGS:
        if flag.startswith(prefix):
            return f"{prefix}{size}"
    return flag


# ---- the topics -----------------------------------------------------------------------------


def claim_topics(ctx: Ctx, extras: Extras) -> list[str]:
    """With --notify: N's topics that exist (their ARNs); each must carry N's tag, or
    --adopt tags it (a ConfigError before any change otherwise)."""
    if not extras.notify:
        return []
    found = []
    for arn in topic_arns(ctx):
        exists = ctx.find("sns", "get_topic_attributes", TopicArn=arn)
        ctx.would_read("sns", "list_tags_for_resource", ResourceArn=arn)
        if exists is None:
            continue
        tags = ctx.read("sns", "list_tags_for_resource", ResourceArn=arn)
        tag = {"ResourceArn": arn, "Tags": ctx.names.tags}
        ctx.claim("SNS topic", arn, tags.get("Tags"), lambda t=tag: _tag(ctx, t))
        found.append(arn)
    return found


def _tag(ctx: Ctx, request: dict[str, Any]) -> None:
    ctx.write("sns", "tag_resource", **request)


def ensure_topics(ctx: Ctx, extras: Extras, found: list[str]) -> None:
    """Create N's topics that `claim_topics` did not find (CreateTopic with tags); say
    what the endpoint does beyond InvokeEndpoint."""
    line = describe(extras)
    if line:
        ctx.say(line)
    if not extras.notify:
        return
    for topic, arn in zip(ctx.names.async_topics, topic_arns(ctx), strict=True):
        if arn in found:
            ctx.say(f"SNS topic {topic} unchanged")
            continue
        ctx.write("sns", "create_topic", Name=topic, Tags=ctx.names.tags)
        ctx.say(f"created SNS topic {topic}")


def describe(extras: Extras) -> str | None:
    """One line on what the endpoint does beyond answering InvokeEndpoint."""
    parts = []
    if extras.asynchronous:
        output = extras.config["AsyncInferenceConfig"]["OutputConfig"]
        notified = " and notified on SNS" if extras.notify else ""
        parts.append(f"asynchronous: answers in {output['S3OutputPath']}{notified}")
    if extras.capture_percent:
        where = extras.config["DataCaptureConfig"]["DestinationS3Uri"]
        parts.append(f"captures {extras.capture_percent}% of requests in {where}")
    return "; ".join(parts) or None


# ---- invoke --async -------------------------------------------------------------------------


def image_type(data: bytes) -> str:
    return next((kind for magic, kind in IMAGE_TYPES if data.startswith(magic)), OTHER_IMAGE)


def cmd_invoke_async(ctx: Ctx, image: Path, timeout_s: float) -> dict[str, Any] | None:
    """Put the image under N's async input prefix (named by its SHA-256: a rerun sends no
    upload), InvokeEndpointAsync, then wait for the answer or the failure: the answer as
    `aws invoke` gives it ({"breed", "index", "score"}); None in a dry run."""
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ConfigError(f"image {image}: cannot read: {exc.strerror}") from None
    if len(data) > PAYLOAD_MB * MB:
        raise ConfigError(
            f"{image}: {len(data)} bytes, over the {PAYLOAD_MB} MB the serve image takes"
        )
    check_timeout(ctx.config["async"]["timeout_s"])  # before any request
    digest = hashlib.sha256(data).hexdigest()
    location = f"{async_uri(ctx, 'input')}/{digest}{image.suffix.lower()}"
    bucket, key = split_s3(location)
    kind = image_type(data)
    if not present(ctx, bucket, key):
        ctx.write("s3", "put_object", Bucket=bucket, Key=key, Body=data, ContentType=kind)
    answer = ctx.write(
        "sagemaker-runtime",
        "invoke_endpoint_async",
        EndpointName=ctx.names.endpoint,
        InputLocation=location,
        ContentType=kind,
        Accept="application/json",
        InvocationTimeoutSeconds=ctx.config["async"]["timeout_s"],
    )
    if ctx.dry_run:
        for part, name in STAND_IN_ANSWER.items():
            bucket, key = split_s3(f"{async_uri(ctx, part)}/{name}")
            where = {"Bucket": bucket, "Key": key}
            ctx.would_read("s3", "head_object", **where)
            ctx.would_read("s3", "get_object", **where)
        return None
    ctx.say(f"queued {image}: the answer will be {answer['OutputLocation']}")
    return await_answer(ctx, image, answer, timeout_s)


def present(ctx: Ctx, bucket: str, key: str) -> bool:
    """HeadObject of an object under N's async prefix. The operator may get objects there
    but not list the bucket, so S3 answers 403, not 404, for one not written yet: here
    (and only here) both mean missing. False in a dry run."""
    if ctx.dry_run:
        ctx.find("s3", "head_object", Bucket=bucket, Key=key)  # recorded
        return False
    ctx.requests.append(Request("s3", "head_object", {"Bucket": bucket, "Key": key}))
    try:
        ctx.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in NOT_YET:
            return False
        raise aws_error("s3", "head_object", exc) from None
    except BotoCoreError as exc:
        raise aws_error("s3", "head_object", exc) from None
    return True


def await_answer(ctx: Ctx, image: Path, answer: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll the answer's place and the failure's (InvokeEndpointAsync's answer) until one
    is written or `timeout_s` has passed."""
    places = [(answer["OutputLocation"], False)]
    if answer.get("FailureLocation"):
        places.append((answer["FailureLocation"], True))
    start, shown = time.monotonic(), -float(PROGRESS_S)  # a line at the first wait
    for _ in range(math.ceil(timeout_s / POLL_S) + 1):  # the clock bounds it too
        for uri, failed in places:
            bucket, key = split_s3(uri)
            if not present(ctx, bucket, key):
                continue
            body = ctx.read("s3", "get_object", Bucket=bucket, Key=key)["Body"].read()
            if failed:
                text = " ".join(body.decode(errors="replace").split())[:500]
                raise AwsError(f"{image}: the endpoint failed ({uri}): {text}")
            return parse_answer(body)
        waited = time.monotonic() - start
        if waited >= timeout_s:
            break
        if waited - shown >= PROGRESS_S:
            ctx.say(f"waiting for the answer: {waited:.0f} s of {timeout_s:g} s (--timeout)")
            shown = waited
        time.sleep(min(POLL_S, timeout_s - waited))
    raise AwsError(
        f"{image}: no answer at {answer['OutputLocation']} within {timeout_s:g} s (--timeout); "
        "the request may still wait for an instance (an endpoint scaled to zero takes "
        "minutes to start one): its answer lands there later"
    )


def parse_answer(body: bytes) -> dict[str, Any]:
    """The serve container's JSON answer as `aws invoke` prints it."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not {"label", "index", "score"} <= set(answer):
        raise AwsError(f"the endpoint answered something other than a prediction: {body[:200]!r}")
    return {"breed": answer["label"], "index": answer["index"], "score": answer["score"]}
