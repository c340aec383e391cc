"""`dogbreed aws status`: every resource of deployment N and its state, as a table or JSON.

Reads only: the two roles, N's newest training job and newest batch transform job,
the endpoint with its variant's capacity, the endpoint config and model it runs, the
model registry's newest versions (the live one marked), the scalable target and scaling
policy, the alarms, the function, its alias 'live' and its function URL. A resource
that carries no dogbreed:name=N tag is shown as someone else's. A dry run prints the
read requests instead (with stand-in names where a real run takes a name from an
earlier answer).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from dogbreed.aws.alarms import alarm_arn, owned
from dogbreed.aws.async_ops import status_rows as async_rows
from dogbreed.aws.context import LIST_PAGE, TAG_KEY, Ctx
from dogbreed.aws.endpoint import SCALABLE_DIMENSION, is_serverless
from dogbreed.aws.functions import ALIAS, find_function_url

MISSING = "missing"
COLUMNS = ("resource", "name", "state", "detail")


@dataclass(frozen=True)
class Row:
    resource: str  # its kind: role, training job, endpoint ...
    name: str
    state: str  # MISSING when there is none
    detail: str = ""
    tagged: bool | None = None  # carries dogbreed:name=N (None: not checked, or missing)


def cmd_status(ctx: Ctx, as_json: bool = False) -> list[Row]:
    endpoint, endpoint_rows = _endpoint(ctx)
    serverless = endpoint is not None and is_serverless(endpoint)
    rows = [
        *_roles(ctx),
        *_training(ctx),
        *_transform(ctx),
        *endpoint_rows,
        *_registry(ctx, endpoint),
        *_scaling(ctx, serverless),
        *_async(ctx, endpoint),
        *_alarms(ctx),
        *_function(ctx),
    ]
    if ctx.dry_run:
        for r in ctx.requests:
            ctx.say(f"{r.service}.{r.operation} {json.dumps(r.params, sort_keys=True)}")
    elif as_json:
        print(to_json(ctx, rows), file=ctx.out, flush=True)
    else:
        print(table(ctx, rows), file=ctx.out, flush=True)
    return rows


def to_json(ctx: Ctx, rows: list[Row]) -> str:
    return json.dumps({"name": ctx.names.name, "resources": [asdict(r) for r in rows]}, indent=2)


def table(ctx: Ctx, rows: list[Row]) -> str:
    """Aligned columns; a resource without N's tag says so in its detail."""
    cells = [[c.upper() for c in COLUMNS]]
    for r in rows:
        foreign = f"NOT TAGGED {TAG_KEY}={ctx.names.name}" if r.tagged is False else ""
        cells.append([r.resource, r.name, r.state, "; ".join(filter(None, [foreign, r.detail]))])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


# ---- the resources -------------------------------------------------------------------------


def _roles(ctx: Ctx) -> list[Row]:
    rows = []
    for role in (ctx.names.sagemaker_role, ctx.names.lambda_role):
        found = ctx.find("iam", "get_role", RoleName=role)
        if found is None:
            rows.append(Row("role", role, MISSING))
        else:
            tagged = ctx.names.tagged(found["Role"].get("Tags"))
            rows.append(Row("role", role, "present", found["Role"]["Arn"], tagged))
    return rows


def _training(ctx: Ctx) -> list[Row]:
    """N's newest training job (N-<digest>), and how many N has."""
    n = ctx.names
    listed = ctx.pages(
        "sagemaker",
        "list_training_jobs",
        "TrainingJobSummaries",
        NameContains=n.name,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=LIST_PAGE,
    )
    # Every page, newest first; N's own only (N-<digest>, not N-v2-<digest> or xN-<digest>).
    jobs = [j for j in listed if n.owns(j["TrainingJobName"])]
    ctx.would_read("sagemaker", "describe_training_job", TrainingJobName=n.stand_in)
    if not jobs:
        return [Row("training job", f"{n.name}-<digest>", MISSING)]
    name = jobs[0]["TrainingJobName"]
    job = ctx.read("sagemaker", "describe_training_job", TrainingJobName=name)
    detail = [f"newest of {len(jobs)}", job.get("SecondaryStatus", "")]
    if job.get("FailureReason"):
        detail.append(job["FailureReason"])
    elif job.get("ModelArtifacts"):
        detail.append(job["ModelArtifacts"]["S3ModelArtifacts"])
    return [Row("training job", name, job["TrainingJobStatus"], ", ".join(filter(None, detail)))]


def _transform(ctx: Ctx) -> list[Row]:
    """N's newest batch transform job (N-<digest>): status, input -> output, and why it
    failed. moto lists in creation order whatever SortOrder says: sorted here too."""
    n = ctx.names
    listed = ctx.pages(
        "sagemaker",
        "list_transform_jobs",
        "TransformJobSummaries",
        NameContains=n.name,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=LIST_PAGE,
    )
    jobs = sorted(
        (j for j in listed if n.owns(j["TransformJobName"])),
        key=lambda j: j["CreationTime"],
        reverse=True,
    )
    ctx.would_read("sagemaker", "describe_transform_job", TransformJobName=n.stand_in)
    if not jobs:
        return [Row("transform job", f"{n.name}-<digest>", MISSING)]
    name = jobs[0]["TransformJobName"]
    job = ctx.read("sagemaker", "describe_transform_job", TransformJobName=name)
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    output = job["TransformOutput"]["S3OutputPath"]
    detail = [f"newest of {len(jobs)}", f"{source} -> {output}", job.get("FailureReason")]
    return [Row("transform job", name, job["TransformJobStatus"], ", ".join(filter(None, detail)))]


def _capacity(variant: dict[str, Any]) -> str:
    """A variant as DescribeEndpoint (current) or DescribeEndpointConfig (asked) gives it."""
    serverless = variant.get("CurrentServerlessConfig") or variant.get("ServerlessConfig")
    if serverless:
        return (
            f"serverless {serverless['MemorySizeInMB']} MB, max concurrency "
            f"{serverless['MaxConcurrency']}"
        )
    if "CurrentInstanceCount" in variant:
        return (
            f"{variant['CurrentInstanceCount']} instances "
            f"(desired {variant.get('DesiredInstanceCount', '?')})"
        )
    return f"{variant.get('InitialInstanceCount', '?')} x {variant.get('InstanceType', '?')}"


def _endpoint(ctx: Ctx) -> tuple[dict[str, Any] | None, list[Row]]:
    """DescribeEndpoint's answer, and the rows of the endpoint, its config and its model."""
    n = ctx.names
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=n.endpoint)
    ctx.would_read("sagemaker", "list_tags", ResourceArn=ctx.sagemaker_arn("endpoint", n.endpoint))
    if endpoint is None and not ctx.dry_run:
        return None, [Row("endpoint", n.endpoint, MISSING)]
    rows = []
    config_name = model_name = n.stand_in  # a dry run's
    if endpoint is not None:
        tags = ctx.read("sagemaker", "list_tags", ResourceArn=endpoint["EndpointArn"])
        detail = [_capacity(v) for v in endpoint.get("ProductionVariants", [])]
        detail += [endpoint["FailureReason"]] if endpoint.get("FailureReason") else []
        state, tagged = endpoint["EndpointStatus"], ctx.names.tagged(tags.get("Tags"))
        rows.append(Row("endpoint", n.endpoint, state, ", ".join(detail), tagged))
        config_name = endpoint["EndpointConfigName"]
    config = ctx.find("sagemaker", "describe_endpoint_config", EndpointConfigName=config_name)
    if config is not None:
        variant = config["ProductionVariants"][0]
        rows.append(Row("endpoint config", config_name, "present", _capacity(variant)))
        model_name = variant["ModelName"]
    elif endpoint is not None:
        rows.append(Row("endpoint config", config_name, MISSING))
    model = ctx.find("sagemaker", "describe_model", ModelName=model_name)
    if model is not None:
        container = model.get("PrimaryContainer", {})
        detail = f"{container.get('Image', '?')}, {container.get('ModelDataUrl', '?')}"
        rows.append(Row("model", model_name, "present", detail))
    elif config is not None:
        rows.append(Row("model", model_name, MISSING))
    return endpoint, rows


def _registry(ctx: Ctx, endpoint: dict[str, Any] | None) -> list[Row]:
    """N's model package group and its newest versions (registry.py), the live one marked."""
    from dogbreed.aws.registry import status_rows

    return [Row(*row) for row in status_rows(ctx, endpoint)]


def _scaling(ctx: Ctx, serverless: bool) -> list[Row]:
    """The scalable target and scaling policy (a serverless endpoint has none: it scales
    by itself up to its max concurrency)."""
    n = ctx.names
    resource = n.scaling_resource
    targets = ctx.read(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace="sagemaker",
        ResourceIds=[resource],
        ScalableDimension=SCALABLE_DIMENSION,
    )
    policies = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        PolicyNames=[n.scaling_policy],
    )
    rows = []
    absent = "none (serverless)" if serverless else MISSING
    found = (targets or {}).get("ScalableTargets", [])
    if found:
        low, high = found[0]["MinCapacity"], found[0]["MaxCapacity"]
        rows.append(Row("scalable target", resource, "registered", f"{low}-{high} instances"))
    else:
        rows.append(Row("scalable target", resource, absent))
    policy = (policies or {}).get("ScalingPolicies", [])
    if policy:
        target = policy[0].get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue")
        detail = f"target {target:g} invocations per instance a minute" if target else ""
        rows.append(Row("scaling policy", n.scaling_policy, "present", detail))
    else:
        rows.append(Row("scaling policy", n.scaling_policy, absent))
    return rows


def _async(ctx: Ctx, endpoint: dict[str, Any] | None) -> list[Row]:
    """Data capture, and an asynchronous endpoint's own rows (async_ops.py)."""
    return [
        Row(k, name, state or MISSING, d, t) for k, name, state, d, t in async_rows(ctx, endpoint)
    ]


def _alarms(ctx: Ctx) -> list[Row]:
    names = list(ctx.names.alarms)
    found = ctx.read("cloudwatch", "describe_alarms", AlarmNames=names)
    for name in names:
        ctx.would_read("cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, name))
    alarms = {a["AlarmName"]: a for a in (found or {}).get("MetricAlarms", [])}
    rows = []
    for name in names:
        alarm = alarms.get(name)
        if alarm is None:
            rows.append(Row("alarm", name, MISSING))
            continue
        detail = f"{alarm['MetricName']} over {_threshold(alarm)}"
        rows.append(Row("alarm", name, alarm["StateValue"], detail, owned(ctx, alarm)))
    return rows


def _threshold(alarm: dict[str, Any]) -> str:
    """An alarm's threshold in the units of its flag (alarms.py: ms, a share of requests)."""
    value = alarm["Threshold"]
    if alarm["MetricName"] == "ModelLatency":  # sent in microseconds
        return f"{value / 1000:g} ms"
    if alarm["MetricName"] == "Invocation5XXErrors":
        return f"{value:.1%} of invocations"
    return f"{value:g}"


def _function(ctx: Ctx) -> list[Row]:
    """The function (with its reserved concurrency), alias 'live' and the function URL."""
    n = ctx.names
    function = ctx.find("lambda", "get_function", FunctionName=n.function)
    if function is None and not ctx.dry_run:
        return [Row("function", n.function, MISSING)]
    rows = []
    concurrency = ctx.read("lambda", "get_function_concurrency", FunctionName=n.function)
    if function is not None:
        conf = function["Configuration"]
        reserved = (concurrency or {}).get("ReservedConcurrentExecutions")
        detail = [
            conf.get("Runtime", ""),
            f"{conf.get('MemorySize', '?')} MB",
            f"reserved concurrency {reserved if reserved is not None else 'none'}",
            f"last update {conf.get('LastUpdateStatus', 'Successful')}",
        ]
        tagged = n.tagged(function.get("Tags") or {})
        state = conf.get("State", "Active")
        rows.append(Row("function", n.function, state, ", ".join(filter(None, detail)), tagged))
    alias = ctx.find("lambda", "get_alias", FunctionName=n.function, Name=ALIAS)
    where = f"{n.function}:{ALIAS}"
    if alias is not None:
        rows.append(Row("alias", where, "present", f"version {alias['FunctionVersion']}"))
    elif function is not None:
        rows.append(Row("alias", where, MISSING))
    url = find_function_url(ctx)
    if url is not None:
        rows.append(Row("function URL", url["FunctionUrl"], "present", f"auth {url['AuthType']}"))
    elif function is not None:
        rows.append(Row("function URL", where, MISSING))
    return rows
