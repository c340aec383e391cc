"""`dogbreed aws transform`: a SageMaker Batch Transform job on N's model.

The job runs the model N's endpoint runs now, or with --model-data and --image the
model `aws deploy` makes of them (found, or created the same way and named the same).
It is named after a digest of its request, N-<digest>, as training jobs are: rerunning
the same command finds the job instead of starting a second one. --again starts the
request's next attempt, N-<digest of the first name and the attempt> (as `aws up
--retrain` does), after a failure or for objects added under --input since; without it
a Failed or Stopped latest attempt is an error carrying SageMaker's reason.

Its input is an S3 prefix under the setting transform.input, the one prefix N's
execution role reads for transform jobs (granted by `aws iam`); its output lies under
N's own output prefix, the only one that role writes: by default
OUTPUT/N/transform/<job>. Both are checked before any request.

The request leaves MaxConcurrentTransforms and MaxPayloadInMB out (and BatchStrategy
when each object is one record): SageMaker then asks the serve container's
GET /execution-parameters, which answers what its workers and request limit take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dogbreed.aws.config import digest
from dogbreed.aws.context import Ctx
from dogbreed.aws.endpoint import claim_model, ensure_model
from dogbreed.aws.policies import (
    READ_TRANSFORM_SID,
    TRANSFORM_INPUT,
    deployment_uri,
    input_prefix,
    objects_arn,
    role_grants,
    split_s3,
)
from dogbreed.core.errors import AwsError, ConfigError

# What the serve container takes and answers (serve/codec.py): one image an object, or
# JSON Lines of {"image": "<base64>"}, one record a line.
IMAGE = "application/x-image"
JSON = "application/json"
JSON_LINES = "application/jsonlines"
TRANSFORM_DIR = "transform"  # default output: OUTPUT/N/transform/<job>
ENDED = ("Completed", "Failed", "Stopped")
POLL_S = 15
MAX_ATTEMPTS = 10  # jobs of one request: the first and up to 9 --again runs
RUNNING = ("InProgress", "Stopping")


@dataclass(frozen=True)
class TransformOptions:
    """One transform job; None falls back to the config's `transform` section (and, for
    the model, to the one N's endpoint runs)."""

    input: str
    output: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    jsonlines: bool = False
    model_data: str | None = None
    image: str | None = None
    wait: bool = False
    timeout_s: float = 86400
    again: bool = False  # start the request's next job even though one exists


def cmd_transform(ctx: Ctx, opts: TransformOptions) -> str:
    """Create the job (or find the request's latest: same request, same name; --again
    creates its next attempt); its name."""
    _check_model_flags(ctx, opts)
    source = job_input(ctx, opts.input)
    output = job_output(ctx, opts.output)
    resources = _resources(ctx, opts)
    _check_role_reads(ctx)
    model = job_model(ctx, opts)
    first = transform_request(ctx, model, source, output, resources, opts.jsonlines)
    latest, attempt = _latest(ctx, first)
    if latest is not None and not opts.again:
        name = _found(ctx, latest)
    else:
        if latest is not None and latest["TransformJobStatus"] in RUNNING:
            raise ConfigError(
                f"--again: transform job {latest['TransformJobName']} of this request is "
                f"{latest['TransformJobStatus']}; let it end first (or stop it)"
            )
        name = _create(ctx, attempt_request(ctx, first, attempt, output is None))
    if opts.wait and not ctx.dry_run:
        wait_transform(ctx, name, opts.timeout_s)
    return name


# ---- the request's attempts ------------------------------------------------------------------


def attempt_name(ctx: Ctx, first: str, attempt: int) -> str:
    """Attempt `attempt`'s job name: the first is the request's own N-<digest>."""
    return first if attempt == 0 else f"{ctx.names.name}-{digest([first, attempt])}"


def attempt_request(
    ctx: Ctx, first: dict[str, Any], attempt: int, default_output: bool
) -> dict[str, Any]:
    """The request of attempt `attempt`: its name and, with the default output, its own
    folder there (OUTPUT/N/transform/<job>)."""
    name = first["TransformJobName"]
    if attempt == 0:
        return first
    own = attempt_name(ctx, name, attempt)
    out = dict(first["TransformOutput"])
    if default_output:
        out["S3OutputPath"] = f"{out['S3OutputPath'].removesuffix(f'/{name}')}/{own}"
    return {**first, "TransformJobName": own, "TransformOutput": out}


def _latest(ctx: Ctx, first: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """The request's latest job (its description) or None, and the next attempt's number."""
    latest = None
    for attempt in range(MAX_ATTEMPTS):
        name = attempt_name(ctx, first["TransformJobName"], attempt)
        found = ctx.find("sagemaker", "describe_transform_job", TransformJobName=name)
        if found is None:
            return latest, attempt
        latest = found
    raise AwsError(
        f"{MAX_ATTEMPTS} transform jobs of this request exist "
        f"({(latest or {}).get('TransformJobName', '')} the last): change the request "
        "(--input, --output, the model) or look at why they fail"
    )


def _create(ctx: Ctx, request: dict[str, Any]) -> str:
    name, model = request["TransformJobName"], request["ModelName"]
    source = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    where = f"{source} -> {request['TransformOutput']['S3OutputPath']}"
    ctx.write("sagemaker", "create_transform_job", **request)
    ctx.say(f"created transform job {name} on model {model}: {where}")
    return name


def _found(ctx: Ctx, job: dict[str, Any]) -> str:
    """Report the request's latest job, found without --again: an error when it failed."""
    name, status = job["TransformJobName"], job["TransformJobStatus"]
    if status in ("Failed", "Stopped"):
        reason = job.get("FailureReason") or "no reason given"
        raise AwsError(
            f"transform job {name} {status}: {reason}. Fix the cause, then rerun with --again "
            "to start the next job of this request"
        )
    ctx.say(
        f"transform job {name} exists (same request): unchanged, {status} (--again starts "
        "the next job, e.g. for objects added under --input since)"
    )
    return name


# ---- where it reads and writes -------------------------------------------------------------


def _setting_fix(ctx: Ctx) -> str:
    n = ctx.names.name
    return (
        f"set {TRANSFORM_INPUT} to a prefix that holds it (dogbreed-aws.json or --config), "
        f"then an administrator reruns `dogbreed aws iam --name {n}` so that the role "
        f"{ctx.names.sagemaker_role} may read it"
    )


def job_input(ctx: Ctx, uri: str) -> str:
    """The job's S3Prefix: --input, which must lie under transform.input. An S3Prefix
    matches keys by their leading characters, so the prefix itself is sent with its
    trailing slash (s3://b/in would also match s3://b/in2/...)."""
    split_s3(uri, "--input")
    setting = ctx.config["transform"]["input"]
    if setting is None:
        raise ConfigError(
            f"--input {uri}: the setting {TRANSFORM_INPUT} is not set, and transform jobs "
            f"read only there: {_setting_fix(ctx)}"
        )
    prefix = input_prefix(setting, TRANSFORM_INPUT)
    if f"{uri.rstrip('/')}/" == prefix:
        return prefix
    if not uri.startswith(prefix):
        raise ConfigError(
            f"--input {uri} lies outside {TRANSFORM_INPUT} {prefix}, the only transform "
            f"input the execution role reads: give a prefix under it, or {_setting_fix(ctx)}"
        )
    return uri


def job_output(ctx: Ctx, uri: str | None) -> str | None:
    """--output, checked to lie under N's output prefix (None: the default there)."""
    own = deployment_uri(ctx.config["output"], ctx.names.name)
    if uri is None:
        return None
    split_s3(uri, "--output")
    output = uri.rstrip("/")
    if output != own and not output.startswith(f"{own}/"):
        raise ConfigError(
            f"--output {uri} lies outside {own}/, {ctx.names.name}'s output prefix: the "
            f"execution role {ctx.names.sagemaker_role} may write only there (leave --output "
            f"out for {own}/{TRANSFORM_DIR}/<job>)"
        )
    return output


def _resources(ctx: Ctx, opts: TransformOptions) -> dict[str, Any]:
    cfg = ctx.config["transform"]
    count = cfg["instance_count"] if opts.instance_count is None else opts.instance_count
    if count < 1:
        raise ConfigError(
            "instance count (--instance-count, transform.instance_count) must be 1 or more, "
            f"got {count}"
        )
    return {"InstanceType": opts.instance_type or cfg["instance_type"], "InstanceCount": count}


def _check_role_reads(ctx: Ctx) -> None:
    """The execution role's policy (GetRolePolicy) grants the read of transform.input:
    `aws iam` ran since the setting was set. Checked here, not minutes into the job."""
    role, prefix = ctx.names.sagemaker_role, ctx.config["transform"]["input"]
    # transform.input is set and an S3 prefix here: job_input checked it first.
    if role_grants(ctx, READ_TRANSFORM_SID, objects_arn(prefix)):
        return
    raise ConfigError(
        f"the role {role} may not read {TRANSFORM_INPUT} {prefix} yet: an administrator "
        f"reruns `dogbreed aws iam --name {ctx.names.name}` with this setting, then rerun "
        "this command"
    )


# ---- the model ------------------------------------------------------------------------------


def _check_model_flags(ctx: Ctx, opts: TransformOptions) -> None:
    if (opts.model_data is None) != (opts.image is None):
        raise ConfigError(
            "--model-data and --image go together (the model `aws deploy` would make of "
            f"them); without both the job runs the model {ctx.names.endpoint}'s endpoint runs"
        )


def job_model(ctx: Ctx, opts: TransformOptions) -> str:
    """The model's name: --model-data with --image as `aws deploy` makes it, else the one
    N's endpoint runs now."""
    if opts.image is not None and opts.model_data is not None:
        return ensure_model(ctx, opts.image, opts.model_data)
    return endpoint_model(ctx)


def endpoint_model(ctx: Ctx) -> str:
    """DescribeEndpoint -> DescribeEndpointConfig -> its variant's model, one of N's
    (N-<digest>, tagged, or --adopt). A dry run reads stand-in names."""
    n = ctx.names
    none = (
        f"deploy one first (`dogbreed aws deploy --name {n.name}`), or give --model-data "
        "s3://.../model.tar.gz and --image URI"
    )
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=n.endpoint)
    if endpoint is None and not ctx.dry_run:
        raise ConfigError(f"no model to run: endpoint {n.endpoint} does not exist; {none}")
    config_name = endpoint["EndpointConfigName"] if endpoint else n.stand_in
    config = ctx.find("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)
    if config is None and not ctx.dry_run:
        raise ConfigError(f"no model to run: endpoint config {config_name} is gone; {none}")
    model = config["ProductionVariants"][0]["ModelName"] if config else n.stand_in
    if not n.owns(model):
        raise ConfigError(
            f"endpoint {n.endpoint} runs model {model}, not one of {n.name}'s "
            f"({n.name}-<digest>); {none}"
        )
    if claim_model(ctx, model) is None and not ctx.dry_run:
        raise ConfigError(f"no model to run: model {model} of {n.endpoint} is gone; {none}")
    return model


# ---- the request and the wait ---------------------------------------------------------------


def transform_request(
    ctx: Ctx,
    model: str,
    source: str,
    output: str | None,
    resources: dict[str, Any],
    jsonlines: bool,
) -> dict[str, Any]:
    """CreateTransformJob's request, named N-<digest of the rest>. The default output
    (None) is named in the digest by its parent, then given the job's own folder."""
    data = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": source}}
    if jsonlines:  # one record a line, as many lines a request as the payload limit takes
        given = {"ContentType": JSON_LINES, "SplitType": "Line"}
        answer = {"Accept": JSON_LINES, "AssembleWith": "Line"}
        strategy = {"BatchStrategy": "MultiRecord"}
    else:  # one image an object, one answer OBJECT.out an object
        given = {"ContentType": IMAGE, "SplitType": "None"}
        answer = {"Accept": JSON, "AssembleWith": "None"}
        strategy = {}  # each object is one record: the container's answer is as good
    default = f"{deployment_uri(ctx.config['output'], ctx.names.name)}/{TRANSFORM_DIR}"
    # MaxConcurrentTransforms and MaxPayloadInMB are left out on purpose: SageMaker then
    # takes the container's GET /execution-parameters answer (its workers, its limit).
    spec = {
        "ModelName": model,
        **strategy,
        "TransformInput": {"DataSource": data, **given},
        "TransformOutput": {"S3OutputPath": output or default, **answer},
        "TransformResources": resources,
    }
    name = f"{ctx.names.name}-{digest(spec)}"
    if output is None:
        spec["TransformOutput"]["S3OutputPath"] = f"{default}/{name}"
    return {"TransformJobName": name, **spec, "Tags": ctx.names.tags}


def wait_transform(ctx: Ctx, name: str, timeout_s: float) -> dict[str, Any]:
    """Print each status change until the job ends (at most `timeout_s`); its description
    once Completed, AwsError with SageMaker's FailureReason otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    for _ in range(int(timeout_s // POLL_S) + 2):
        job = ctx.read("sagemaker", "describe_transform_job", TransformJobName=name)
        status = job["TransformJobStatus"]
        if status != last:
            ctx.say(f"transform job {name}: {status}")
            last = status
        if status in ENDED:
            if status != "Completed":
                reason = job.get("FailureReason") or "no reason given"
                raise AwsError(f"transform job {name}: {status}: {reason}")
            return job
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    raise AwsError(
        f"transform job {name} still {last} after {timeout_s:.0f}s (--timeout); it goes on: "
        f"`dogbreed aws status --name {ctx.names.name}` shows it"
    )
