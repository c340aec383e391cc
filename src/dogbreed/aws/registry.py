"""`dogbreed aws register` and `aws approve`, and deploying from the registry: N's model
package group.

The group is named N and tagged dogbreed:name=N. Each training job's model becomes one
version of it: the serve image and the job's model data, the content types the server
takes, the instance types it runs on, and the job's final metrics with its name and the
image as CustomerMetadataProperties. A version starts PendingManualApproval (Approved
with --approve); `aws approve` approves or rejects it. `aws deploy --model-package`
deploys an Approved version only: `approved` names the newest one.

A job already registered with the same image (a version whose metadata names both) is
not registered twice; with another image it becomes a new version.
`aws down` leaves the group and its versions: a registry is the record of what was
trained and approved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dogbreed.aws.context import LIST_PAGE, Ctx
from dogbreed.aws.endpoint import DeployOptions, cmd_deploy
from dogbreed.aws.policies import deployment_uri
from dogbreed.core.errors import AwsError, ConfigError

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
NEWEST_APPROVED = "approved"  # --model-package's word for the newest Approved version
# What serve/codec.py's input_fn takes and output_fn answers (a unit test compares them:
# the control plane does not import the serving code).
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")
JSON_TYPES = ("application/json", "application/jsonlines", "application/jsonl",
              "application/x-jsonlines")  # fmt: skip
CONTENT_TYPES = IMAGE_TYPES + JSON_TYPES
RESPONSE_TYPES = ("application/json", "application/jsonlines")
# Where the serve image runs: the deploy default (ml.m5.large), the CPUs of the README's
# cost table (c6i/c7i run the int8 model), and one GPU.
REALTIME_TYPES = ("ml.m5.large", "ml.m6i.large", "ml.c6i.large", "ml.c6i.xlarge", "ml.c7i.large",
                  "ml.g4dn.xlarge")  # fmt: skip
TRANSFORM_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge", "ml.c6i.large", "ml.c6i.xlarge")
# The job's final metrics a version carries (training.METRIC_DEFINITIONS' names; the int8
# check's two are absent when the job kept no int8 model).
METRICS = ("val_acc", "test_acc", "int8_val_acc", "int8_agreement")
JOB_KEY, IMAGE_KEY = "training_job", "image"  # CustomerMetadataProperties' other keys
# SageMaker's limits (botocore's model): the image is a ContainerImage (255) and a
# CustomerMetadataValue (256); --reason an ApprovalDescription (1024).
MAX_IMAGE, MAX_REASON = 255, 1024
SHOWN = 10  # versions `aws status` lists, newest first
STAND_IN_VERSION = 1  # the version a dry run's reads name, where a real run lists one


@dataclass(frozen=True)
class Version:
    """One version of N's group, as DescribeModelPackage answers it."""

    number: int
    arn: str
    status: str
    image: str
    model_data: str
    metadata: dict[str, str]


def group_name(ctx: Ctx) -> str:
    return ctx.names.name


def _version(answer: dict[str, Any]) -> Version:
    container = answer.get("InferenceSpecification", {}).get("Containers", [{}])[0]
    arn = answer["ModelPackageArn"]
    return Version(
        int(answer.get("ModelPackageVersion") or arn.rsplit("/", 1)[1]),
        arn,
        answer.get("ModelApprovalStatus") or PENDING,
        container.get("Image", ""),
        container.get("ModelDataUrl", ""),
        answer.get("CustomerMetadataProperties") or {},
    )


def _stand_in(ctx: Ctx, image: str | None = None, status: str = APPROVED) -> Version:
    """A dry run's version: N's stand-in job, where SageMaker puts its model."""
    n, number = ctx.names, STAND_IN_VERSION
    arn = ctx.sagemaker_arn("model-package", f"{group_name(ctx)}/{number}")
    shown = image or f"<the serve image of version {number}>"
    return Version(number, arn, status, shown, model_data_of(ctx, n.stand_in, None), {})


def model_data_of(ctx: Ctx, job_name: str, job: dict | None) -> str:
    """The job's model (its ModelArtifacts; in a dry run, where SageMaker puts it)."""
    if job is not None:
        return job["ModelArtifacts"]["S3ModelArtifacts"]
    return f"{deployment_uri(ctx.config['output'], ctx.names.name)}/{job_name}/output/model.tar.gz"


# ---- the group and its versions ------------------------------------------------------------


def ensure_group(ctx: Ctx) -> None:
    """N's group: created tagged, or found carrying N's tag (or adopted with --adopt)."""
    name = group_name(ctx)
    found = find_group(ctx)
    if found is None:
        ctx.write(
            "sagemaker",
            "create_model_package_group",
            ModelPackageGroupName=name,
            ModelPackageGroupDescription=f"dogbreed models of deployment {name}",
            Tags=ctx.names.tags,
        )
        ctx.say(f"created model package group {name}")


def find_group(ctx: Ctx) -> dict[str, Any] | None:
    """DescribeModelPackageGroup's answer, claimed for N (None: no group, or a dry run)."""
    found, tags = _group(ctx)
    if found is not None:
        arn = found["ModelPackageGroupArn"]
        tag = lambda: ctx.write("sagemaker", "add_tags", ResourceArn=arn, Tags=ctx.names.tags)  # noqa: E731
        ctx.claim("model package group", group_name(ctx), tags, tag)
    return found


def _group(ctx: Ctx) -> tuple[dict[str, Any] | None, list[dict[str, str]] | None]:
    """DescribeModelPackageGroup's answer and the group's tags (None, None: no group)."""
    name = group_name(ctx)
    found = ctx.find("sagemaker", "describe_model_package_group", ModelPackageGroupName=name)
    ctx.would_read(
        "sagemaker", "list_tags", ResourceArn=ctx.sagemaker_arn("model-package-group", name)
    )
    if found is None:
        return None, None
    tags = ctx.read("sagemaker", "list_tags", ResourceArn=found["ModelPackageGroupArn"])
    return found, tags.get("Tags")


def _need_group(ctx: Ctx) -> None:
    if find_group(ctx) is None and not ctx.dry_run:
        n = group_name(ctx)
        raise ConfigError(f"no model package group {n}: aws register --name {n} --image URI first")


def listed(ctx: Ctx, status: str | None = None) -> list[dict[str, Any]]:
    """The group's versions (ListModelPackages' summaries), newest first; `status` keeps
    those with that approval status. [] in a dry run."""
    only = {"ModelApprovalStatus": status} if status else {}
    return ctx.pages(
        "sagemaker",
        "list_model_packages",
        "ModelPackageSummaryList",
        ModelPackageGroupName=group_name(ctx),
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=LIST_PAGE,
        **only,
    )


def describe(ctx: Ctx, arn: str) -> Version:
    return _version(ctx.read("sagemaker", "describe_model_package", ModelPackageName=arn))


def registered(ctx: Ctx, job_name: str, image: str) -> Version | None:
    """The version of `job_name` with `image`, if any: the listing narrows by description
    (it names the job), the version's own metadata (job and image) decides."""
    ctx.would_read("sagemaker", "describe_model_package", ModelPackageName=_stand_in(ctx).arn)
    for summary in listed(ctx):
        if job_name in summary.get("ModelPackageDescription", ""):
            version = describe(ctx, summary["ModelPackageArn"])
            if version.metadata.get(JOB_KEY) == job_name and version.image == image:
                return version
    return None


# ---- aws register --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterOptions:
    image: str  # the serve image
    training_job: str | None = None  # None: N's newest Completed training job
    approve: bool = False


def cmd_register(ctx: Ctx, opts: RegisterOptions) -> Version:
    name = opts.training_job or newest_completed_job(ctx)
    return register_job(ctx, name, completed_job(ctx, name), opts.image, opts.approve)


def register_job(ctx: Ctx, name: str, job: dict | None, image: str, approve: bool) -> Version:
    """Make training job `name` (its description; None in a dry run) with `image` a version
    of N's group, or find the version the pair already is (approved now with `approve` if
    pending; a rejection stands)."""
    check_image(image)
    ensure_group(ctx)
    found = registered(ctx, name, image)
    if found is not None:
        where = f"version {found.number} of {group_name(ctx)}"
        ctx.say(f"training job {name} with image {image} is {where} already")
        if approve and found.status == PENDING:
            return set_status(ctx, found, APPROVED, None)
        if approve and found.status == REJECTED:
            ctx.say(
                f"--approve not applied: {where} is Rejected, and the rejection stands unless "
                f"`aws approve --name {ctx.names.name} --version {found.number}` is run"
            )
        return found
    request = package_request(ctx, name, job, image, approve)
    answer = ctx.write("sagemaker", "create_model_package", **request)
    arn = answer.get("ModelPackageArn") or _stand_in(ctx).arn
    version = _version({**request, "ModelPackageArn": arn})
    ctx.say(
        f"registered training job {name} as version {version.number} of model package group "
        f"{group_name(ctx)}: {version.status}"
    )
    return version


def package_request(
    ctx: Ctx, name: str, job: dict | None, image: str, approve: bool
) -> dict[str, Any]:
    """CreateModelPackage's request: one version of N's group."""
    return {
        "ModelPackageGroupName": group_name(ctx),
        "ModelPackageDescription": f"the model of training job {name}",
        "InferenceSpecification": {
            "Containers": [{"Image": image, "ModelDataUrl": model_data_of(ctx, name, job)}],
            "SupportedContentTypes": list(CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
            "SupportedRealtimeInferenceInstanceTypes": list(REALTIME_TYPES),
            "SupportedTransformInstanceTypes": list(TRANSFORM_TYPES),
        },
        "ModelApprovalStatus": APPROVED if approve else PENDING,
        "CustomerMetadataProperties": metadata(name, job, image),
        "Tags": ctx.names.tags,
    }


def metadata(name: str, job: dict | None, image: str) -> dict[str, str]:
    """The job's name, the image and its final metrics (those it reported), as strings."""
    final = {m["MetricName"]: m["Value"] for m in (job or {}).get("FinalMetricDataList", [])}
    found = {k: f"{final[k]:.4f}" for k in METRICS if k in final}
    return {JOB_KEY: name, IMAGE_KEY: image, **found}


def check_image(image: str) -> None:
    if len(image) > MAX_IMAGE:
        raise ConfigError(
            f"--image is {len(image)} characters: a model version's container image takes "
            f"{MAX_IMAGE} at most"
        )


def newest_completed_job(ctx: Ctx) -> str:
    """N's newest Completed training job (N-<digest>); the stand-in in a dry run."""
    n = ctx.names
    jobs = ctx.pages(
        "sagemaker",
        "list_training_jobs",
        "TrainingJobSummaries",
        NameContains=n.name,
        StatusEquals="Completed",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=LIST_PAGE,
    )
    names = [j["TrainingJobName"] for j in jobs if n.owns(j["TrainingJobName"])]
    if ctx.dry_run:
        return n.stand_in
    if not names:
        raise ConfigError(
            f"no Completed training job of {n.name}: pass --training-job, or train first "
            f"(aws train --name {n.name})"
        )
    return names[0]


def completed_job(ctx: Ctx, name: str) -> dict | None:
    """DescribeTrainingJob's answer for N's Completed job `name` (None in a dry run)."""
    if not ctx.names.owns(name):
        raise ConfigError(
            f"--training-job {name}: not one of {ctx.names.name}'s jobs ({ctx.names.name}-<digest>)"
        )
    job = ctx.find("sagemaker", "describe_training_job", TrainingJobName=name)
    if job is None and not ctx.dry_run:
        raise ConfigError(f"--training-job {name}: no such training job")
    if job is not None and job["TrainingJobStatus"] != "Completed":
        raise AwsError(
            f"training job {name} is {job['TrainingJobStatus']}: register it once Completed"
        )
    return job


# ---- aws approve ---------------------------------------------------------------------------


def cmd_approve(
    ctx: Ctx, number: int | None = None, reject: bool = False, reason: str | None = None
) -> Version:
    if reject and not reason:
        raise ConfigError("--reject needs --reason TEXT: why the version must not be deployed")
    if reason and len(reason) > MAX_REASON:
        raise ConfigError(f"--reason is {len(reason)} characters: SageMaker takes {MAX_REASON}")
    _need_group(ctx)
    version = pick(ctx, number)
    return set_status(ctx, version, REJECTED if reject else APPROVED, reason)


def pick(ctx: Ctx, number: int | None) -> Version:
    """Version `number` of N's group, or the newest (a stand-in in a dry run)."""
    versions = listed(ctx)
    ctx.would_read("sagemaker", "describe_model_package", ModelPackageName=_stand_in(ctx).arn)
    if ctx.dry_run:
        return _stand_in(ctx, status=PENDING)
    chosen = [v for v in versions if number is None or v.get("ModelPackageVersion") == number]
    if not versions:
        n = ctx.names.name
        raise ConfigError(
            f"model package group {group_name(ctx)} has no versions registered yet: "
            f"aws register --name {n} --image URI, or aws up --name {n}"
        )
    if not chosen:
        have = ", ".join(str(v.get("ModelPackageVersion")) for v in versions)
        raise ConfigError(
            f"--version {number}: model package group {group_name(ctx)} has no such version "
            f"(its versions: {have})"
        )
    return describe(ctx, chosen[0]["ModelPackageArn"])


def set_status(ctx: Ctx, version: Version, status: str, reason: str | None) -> Version:
    """UpdateModelPackage to `status`, with `reason` as its ApprovalDescription."""
    where = f"version {version.number} of {group_name(ctx)}"
    if version.status == status and not reason:
        ctx.say(f"{where} is {status} already")
        return version
    params: dict[str, Any] = {"ModelPackageArn": version.arn, "ModelApprovalStatus": status}
    if reason:
        params["ApprovalDescription"] = reason
    if version.metadata:
        # Unchanged: moto drops a version's metadata on an update that leaves them out.
        params["CustomerMetadataProperties"] = version.metadata
    ctx.write("sagemaker", "update_model_package", **params)
    ctx.say(f"{where}: {version.status} -> {status}" + (f" ({reason})" if reason else ""))
    return replace(version, status=status)


# ---- aws deploy --model-package ------------------------------------------------------------


def resolve(ctx: Ctx, which: str, image: str | None = None, asked: str = "") -> Version:
    """--model-package `approved` (the newest Approved version) or a version number; only
    an Approved version is deployed. A dry run resolves to a stand-in. `asked`: the flag
    errors name (default --model-package WHICH)."""
    asked = asked or f"--model-package {which}"
    if which != NEWEST_APPROVED and not which.isdigit():
        raise ConfigError(f"{asked}: `{NEWEST_APPROVED}` or a version number")
    _need_group(ctx)
    name = group_name(ctx)
    if which == NEWEST_APPROVED:
        versions = listed(ctx, APPROVED)
        ctx.would_read("sagemaker", "describe_model_package", ModelPackageName=_stand_in(ctx).arn)
        if ctx.dry_run:
            return _stand_in(ctx, image)
        if not versions:
            raise ConfigError(
                f"{asked}: model package group {name} has no Approved version; "
                f"approve one first (aws approve --name {name} --version V)"
            )
        version = describe(ctx, versions[0]["ModelPackageArn"])
    else:
        version = pick(ctx, int(which))
        if ctx.dry_run:
            return _stand_in(ctx, image)
    if version.status != APPROVED:
        raise ConfigError(
            f"{asked}: version {version.number} of {name} is {version.status}, "
            f"not Approved; approve it first (aws approve --name {name} --version {version.number})"
        )
    return version


def cmd_deploy_package(ctx: Ctx, opts: DeployOptions, which: str) -> dict[str, Any] | None:
    """`aws deploy --model-package`: the version's model, and its image unless --image."""
    version = resolve(ctx, which, opts.image or None)
    image = opts.image or version.image
    ctx.say(
        f"model package {group_name(ctx)} version {version.number} ({version.status}): "
        f"{image}, {version.model_data}"
    )
    endpoint = cmd_deploy(ctx, replace(opts, image=image, model_data=version.model_data))
    ctx.say(f"endpoint {ctx.names.endpoint} runs model package {version.arn}")
    return endpoint


# ---- aws status, aws down ------------------------------------------------------------------


def live_model_data(ctx: Ctx, endpoint: dict[str, Any] | None) -> str | None:
    """The ModelDataUrl of the model the endpoint runs (None: no endpoint)."""
    if endpoint is None:
        return None
    config = ctx.find(
        "sagemaker", "describe_endpoint_config", EndpointConfigName=endpoint["EndpointConfigName"]
    )
    if config is None:
        return None
    model_name = config["ProductionVariants"][0]["ModelName"]
    model = ctx.find("sagemaker", "describe_model", ModelName=model_name)
    return (model or {}).get("PrimaryContainer", {}).get("ModelDataUrl")


def status_rows(
    ctx: Ctx, endpoint: dict[str, Any] | None
) -> list[tuple[str, str, str, str, bool | None]]:
    """(resource, name, state, detail, tagged) of the group and its newest versions; the
    live one is the one whose model data the endpoint's model runs."""
    name = group_name(ctx)
    group, tags = _group(ctx)
    if group is None and not ctx.dry_run:
        return [("model package group", name, "missing", "", None)]
    tagged = None if group is None else ctx.names.tagged(tags)
    versions = listed(ctx)
    ctx.would_read("sagemaker", "describe_model_package", ModelPackageName=_stand_in(ctx).arn)
    live = live_model_data(ctx, endpoint)
    rows = [("model package group", name, "present", f"{len(versions)} version(s)", tagged)]
    for summary in versions[:SHOWN]:
        v = describe(ctx, summary["ModelPackageArn"])
        metrics = [f"{k} {v.metadata[k]}" for k in METRICS if k in v.metadata]
        detail = [*metrics, f"job {v.metadata.get(JOB_KEY, '?')}"]
        if live and v.model_data == live:
            detail.append(f"LIVE on endpoint {ctx.names.endpoint}")
        rows.append(("model version", f"{name}/{v.number}", v.status, ", ".join(detail), None))
    if len(versions) > SHOWN:
        rows.append(("model version", "...", f"{len(versions) - SHOWN} older", "not shown", None))
    return rows


def left_in_place(ctx: Ctx) -> str:
    """What `aws down` says of the registry it leaves ('' when N has none)."""
    name = group_name(ctx)
    group = ctx.find("sagemaker", "describe_model_package_group", ModelPackageGroupName=name)
    if group is None and not ctx.dry_run:
        return ""
    numbers = sorted(int(v.get("ModelPackageVersion", 0)) for v in listed(ctx))
    if ctx.dry_run:
        shown = "its versions"
    else:
        shown = f"versions {', '.join(map(str, numbers))}" if numbers else "no versions"
    return f"the model package group {name} with {shown} (a registry is a record)"
