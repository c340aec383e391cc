"""`dogbreed aws up`: the whole chain of deployment N, in order, each step the verb's own.

  [1/8] data         a local directory is uploaded (upload-data: files already there are
                     skipped); an s3:// prefix is checked to hold objects
  [2/8] IAM roles    `aws iam`
  [3/8] training     the job of this request (`aws train`'s name, N-<digest>): reused when
                     Completed, waited for while it runs, created when there is none. A Failed
                     or Stopped job is reported with SageMaker's reason and the chain stops;
                     `--retrain` starts the next attempt under its own name (N-<digest of the
                     request and the attempt>), resuming from the same checkpoint prefix
  [4/8] model version
                     the job's ModelArtifacts, registered as a version of N's model
                     registry (`aws register`; Approved with --approve). With
                     --deploy-approved the endpoint gets the newest Approved version
                     instead while the job's is pending (the live endpoint keeps it). The
                     version is the one of (job, serve image); a Rejected one is never
                     deployed, a pending one is, with a line saying so
  [5/8] endpoint     `aws deploy` (model, endpoint config, alarms, endpoint or its update)
  [6/8] autoscaling  `aws autoscale` (none for a serverless endpoint: it scales by itself)
  [7/8] alarms       their state (deploy makes them before the endpoint: an update rolls
                     back on them)
  [8/8] Lambda       `aws lambda`: function, alias, concurrency, function URL

Every step is idempotent, so a rerun goes on where the last one stopped. Each step's
`[k/8] title` header comes first, its own messages indented under it, and its outcome
last (`-> ...`), so a person reads what runs before its details. The summary ends with
what the deployment costs an hour, from PRICES below. A config with deploy.async true is
refused before any request: up's scaling and front door are for InvokeEndpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from dogbreed.aws.config import digest
from dogbreed.aws.context import Ctx
from dogbreed.aws.endpoint import (
    DeployOptions,
    Plan,
    ScaleOptions,
    cmd_autoscale,
    cmd_deploy,
    make_plan,
    scale_settings,
)
from dogbreed.aws.functions import (
    ALIAS,
    LambdaOptions,
    cmd_lambda,
    concurrency_settings,
    s3_input_prefix,
)
from dogbreed.aws.policies import split_s3
from dogbreed.aws.registry import Version
from dogbreed.aws.roles import cmd_iam
from dogbreed.aws.storage import UploadOptions, cmd_upload_data
from dogbreed.aws.training import TrainOptions, resolve, training_job_request, wait_training
from dogbreed.aws.up_registry import up_version
from dogbreed.core.errors import AwsError, ConfigError, DogbreedError

STEPS = 8
MAX_ATTEMPTS = 10  # training jobs of one request: the first and up to 9 --retrain runs
HOURS_A_MONTH = 730
INDENT = "    "  # a step's own messages, under its `[k/8]` header
OUTCOME = "-> "  # the step's outcome: its last line

# AWS's on-demand prices for SageMaker real-time inference, us-east-1, as of 2026-09-27:
# the README's cost table ("Cost levers"). They change: check AWS's SageMaker pricing page.
PRICES_AS_OF = "2026-09-27"
PRICES_REGION = "us-east-1"
INSTANCE_PER_HOUR = {
    "ml.m5.large": 0.115,
    "ml.m6i.large": 0.115,
    "ml.c6i.large": 0.102,
    "ml.c7i.large": 0.107,
    "ml.c6i.xlarge": 0.204,
    "ml.g4dn.xlarge": 0.7364,
}
SERVERLESS_PER_GB_SECOND = 0.00002  # $0.00004 a second at 2048 MB


@dataclass(frozen=True)
class UpOptions:
    """What `aws up` was asked. The images and model data inside `train` and `deploy` are
    filled in here (train.image: the train image; deploy.model_data: from the job)."""

    data: str  # a local dataset directory, or an s3:// prefix
    train: TrainOptions
    deploy: DeployOptions
    scale: ScaleOptions
    function: LambdaOptions
    retrain: bool = False
    progress: bool = False  # an upload progress bar on stderr
    approve: bool = False  # the job's model version registered Approved
    deploy_approved: bool = False  # deploy the newest Approved version, not the job's


@dataclass(frozen=True)
class Summary:
    endpoint: str
    status: str  # the endpoint's, or "dry run"
    url: str | None  # the front door; None in a dry run
    cost_per_hour: float | None  # None when no price is on record for the instance type
    cost: str  # the cost line, in words


def cmd_up(ctx: Ctx, opts: UpOptions) -> Summary:
    refuse_async(ctx, opts.deploy)
    plan = make_plan(ctx, opts.deploy)  # every deploy setting checked before any call
    if ctx.config["lambda"]["s3_input"]:
        s3_input_prefix(ctx.config["lambda"]["s3_input"])
    _step(ctx, 1, "data", lambda: _data(ctx, opts.data, opts.progress))
    _step(ctx, 2, "IAM roles", lambda: _iam(ctx))
    name, job = _step(ctx, 3, "training job", lambda: ensure_training(ctx, opts))
    version = _step(ctx, 4, "model version", lambda: _model_version(ctx, name, job, opts))
    deploy = replace(opts.deploy, image=version.image, model_data=version.model_data)
    endpoint = _step(ctx, 5, f"endpoint {ctx.names.endpoint}", lambda: _endpoint(ctx, deploy, plan))
    _step(ctx, 6, "autoscaling", lambda: _autoscaling(ctx, opts.scale, plan))
    _step(ctx, 7, "alarms", lambda: _alarms(ctx))
    url = _step(ctx, 8, "Lambda", lambda: _lambda(ctx, opts.function, plan))
    summary = _summary(ctx, plan, endpoint, url, opts.scale)
    _report(ctx, summary)
    return summary


def refuse_async(ctx: Ctx, deploy: DeployOptions) -> None:
    """Before any request: up's scaling and Lambda front door are for a real-time or
    serverless endpoint (InvokeEndpoint); an asynchronous one has its own verbs."""
    if deploy.asynchronous or (deploy.asynchronous is None and ctx.config["deploy"]["async"]):
        raise ConfigError(
            "deploy.async is true: aws up builds a real-time or serverless endpoint with a "
            "Lambda front door; for an asynchronous endpoint run aws deploy --async, aws "
            "autoscale, aws invoke --async (or set deploy.async false)"
        )


# ---- running a step ------------------------------------------------------------------------


class _Indented:
    """A text stream that indents every line written to it (a step's own messages)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.fresh = out, True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            if self.fresh:
                self.out.write(INDENT)
            self.out.write(part)
            self.fresh = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _step(ctx: Ctx, k: int, title: str, run: Callable[[], tuple[Any, str]]) -> Any:
    """Print the step's `[k/8] title` header, run it with its messages indented under the
    header, then print its outcome as the last indented line (`-> ...`)."""
    out = ctx.out
    print(f"[{k}/{STEPS}] {title}", file=out, flush=True)
    ctx.out = _Indented(out)
    try:
        value, line = run()
    except DogbreedError:
        print(f"{OUTCOME}stopped (rerun `aws up` to go on from here)", file=ctx.out, flush=True)
        raise
    finally:
        ctx.out = out
    print(f"{INDENT}{OUTCOME}{line}", file=out, flush=True)
    return value


# ---- the steps -----------------------------------------------------------------------------


def _data(ctx: Ctx, source: str, progress: bool) -> tuple[None, str]:
    if source.startswith("s3://"):  # aws_cmds made it the config's `data`
        bucket, prefix = split_s3(source, "--data")
        found = ctx.read(
            "s3", "list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1
        )
        if found is not None and not found.get("KeyCount"):
            raise ConfigError(
                f"--data {source}: no objects there; upload the dataset first "
                "(aws upload-data DIR URI, or aws up --data DIR)"
            )
        return None, f"data {source}: in S3"
    path = Path(source)
    if not path.is_dir():
        raise ConfigError(f"--data {source}: neither a directory nor an s3:// URI")
    uri = ctx.config["data"]
    sent = cmd_upload_data(ctx, UploadOptions(path, uri, progress))
    if not sent:
        return None, f"data {path} in {uri}: every file there already"
    return None, f"data {path} to {uri}: {sent:,} file(s) {'to send' if ctx.dry_run else 'sent'}"


def _iam(ctx: Ctx) -> tuple[None, str]:
    cmd_iam(ctx)
    n = ctx.names
    return None, f"IAM roles {n.sagemaker_role}, {n.lambda_role}: ready"


def attempt_name(ctx: Ctx, request: dict[str, Any], attempt: int) -> str:
    """The training job of `request`'s attempt: the first is `aws train`'s own name."""
    first = request["TrainingJobName"]
    return first if attempt == 0 else f"{ctx.names.name}-{digest([first, attempt])}"


def _latest(ctx: Ctx, request: dict[str, Any]) -> tuple[tuple[str, dict] | None, str]:
    """The request's latest training job (name, description) or None, and the next name."""
    latest = None
    for attempt in range(MAX_ATTEMPTS):
        name = attempt_name(ctx, request, attempt)
        found = ctx.find("sagemaker", "describe_training_job", TrainingJobName=name)
        if found is None:
            return latest, name
        latest = (name, found)
    raise AwsError(
        f"{MAX_ATTEMPTS} training jobs of this request exist ({latest[0] if latest else ''} "
        "the last): change the request (hyperparameters, image, data) or look at why they fail"
    )


def ensure_training(ctx: Ctx, opts: UpOptions) -> tuple[tuple[str, dict | None], str]:
    """Step 3: ((job name, its description once Completed; None in a dry run), the line)."""
    request = training_job_request(ctx, resolve(ctx, opts.train))
    latest, next_name = _latest(ctx, request)
    if latest is None:
        name, how = next_name, "created"
        _create_job(ctx, request, name)
    else:
        name, job = latest
        status = job["TrainingJobStatus"]
        if status == "Completed":
            return (name, job), f"training job {name}: Completed (reused)"
        if status not in ("Failed", "Stopped"):
            how = f"{status} when found"
        elif opts.retrain:
            how = f"created: retraining after {name} {status}"
            name = next_name
            _create_job(ctx, request, name)
        else:
            reason = job.get("FailureReason") or "no reason given"
            raise AwsError(
                f"training job {name} {status}: {reason}. Fix the cause, then rerun with "
                "--retrain to start a new job (it resumes from the same checkpoints)"
            )
    if ctx.dry_run:
        return (name, None), f"training job {name}: {how}; a real run waits for it"
    job = wait_training(ctx, name, opts.train.timeout_s)
    return (name, job), f"training job {name}: Completed ({how})"


def _create_job(ctx: Ctx, request: dict[str, Any], name: str) -> None:
    ctx.write("sagemaker", "create_training_job", **{**request, "TrainingJobName": name})
    ctx.say(f"created training job {name}")


def _model_version(ctx: Ctx, name: str, job: dict | None, opts: UpOptions) -> tuple[Version, str]:
    image, approve = opts.deploy.image, opts.approve
    return up_version(ctx, name, job, image, approve, opts.deploy_approved)


def capacity(plan: Plan) -> str:
    if plan.serverless:
        config = plan.capacity["ServerlessConfig"]
        return (
            f"serverless, {config['MemorySizeInMB']} MB, up to {config['MaxConcurrency']} "
            "requests at once"
        )
    return f"{plan.instance_count} x {plan.capacity['InstanceType']}"


def _endpoint(ctx: Ctx, opts: DeployOptions, plan: Plan) -> tuple[dict | None, str]:
    endpoint = cmd_deploy(ctx, opts)
    state = endpoint["EndpointStatus"] if endpoint else "deployed by a real run"
    return endpoint, f"endpoint {ctx.names.endpoint}: {state} ({capacity(plan)})"


def _autoscaling(ctx: Ctx, opts: ScaleOptions, plan: Plan) -> tuple[None, str]:
    if plan.serverless:
        return None, "autoscaling: none (serverless: SageMaker scales it up to its max concurrency)"
    cmd_autoscale(ctx, opts)
    s = scale_settings(ctx, opts)
    return None, (
        f"autoscaling {ctx.names.scaling_resource}: {s['min']}-{s['max']} instances, target "
        f"{s['target']:g} invocations per instance a minute"
    )


def _alarms(ctx: Ctx) -> tuple[None, str]:
    names = list(ctx.names.alarms)
    found = ctx.read("cloudwatch", "describe_alarms", AlarmNames=names)
    states = {a["AlarmName"]: a["StateValue"] for a in (found or {}).get("MetricAlarms", [])}
    shown = ", ".join(f"{a} {states[a]}" if a in states else a for a in names)
    return None, f"alarms {shown} (made with the endpoint: an update rolls back on them)"


def _lambda(ctx: Ctx, opts: LambdaOptions, plan: Plan) -> tuple[str | None, str]:
    url = cmd_lambda(ctx, replace(opts, serverless=plan.serverless))
    reserved, provisioned = concurrency_settings(ctx, opts)
    door = url or "made by a real run"
    return url, (
        f"Lambda {ctx.names.function}:{ALIAS}: reserved concurrency {reserved}, provisioned "
        f"{provisioned}; front door {door}"
    )


# ---- the summary ---------------------------------------------------------------------------


def hourly_cost(plan: Plan, scale_max: int | None = None) -> tuple[float | None, str]:
    """What the endpoint costs an hour (None: no price on record), and the line saying so."""
    dated = f"on-demand, {PRICES_REGION}, prices of {PRICES_AS_OF}"
    if plan.serverless:
        config = plan.capacity["ServerlessConfig"]
        busy = config["MemorySizeInMB"] / 1024 * SERVERLESS_PER_GB_SECOND * 3600
        return 0.0, f"$0 an hour idle, ${busy:.3f} per busy hour of requests ({dated})"
    kind, count = plan.capacity["InstanceType"], plan.instance_count
    price = INSTANCE_PER_HOUR.get(kind)
    if price is None:
        return None, f"no price on record for {kind}: see AWS's SageMaker pricing page"
    total = price * count
    line = (
        f"${total:.3f} an hour, ${total * HOURS_A_MONTH:.2f} a month ({count} x {kind} at "
        f"${price:g}; {dated})"
    )
    if scale_max and scale_max > count:
        line += f"; up to ${price * scale_max:.3f} an hour scaled out to {scale_max}"
    return total, line


def _summary(
    ctx: Ctx, plan: Plan, endpoint: dict | None, url: str | None, scale: ScaleOptions
) -> Summary:
    scale_max = None if plan.serverless else scale_settings(ctx, scale)["max"]
    per_hour, line = hourly_cost(plan, scale_max)
    status = endpoint["EndpointStatus"] if endpoint else "dry run"
    return Summary(ctx.names.endpoint, status, url, per_hour, line)


def _report(ctx: Ctx, s: Summary) -> None:
    door = s.url or "(a real run prints it)"
    lines = [
        f"dry run of deployment {ctx.names.name}: nothing changed"
        if ctx.dry_run
        else f"deployment {ctx.names.name} is up",
        f"  endpoint    {s.endpoint} ({s.status})",
        f"  front door  {door}",
        f"  cost        {s.cost}",
        "              plus the Lambda's requests and provisioned concurrency, data transfer "
        "and the training job (billed once)",
    ]
    print("\n".join(lines), file=ctx.out, flush=True)
