"""`dogbreed aws deploy` and `dogbreed aws autoscale`: the SageMaker endpoint.

Models and endpoint configs are named after a digest of their request: a changed
image, model, instance type or serverless setting makes new ones, and the endpoint
is switched over. A live endpoint is switched blue/green with a canary and rolls
back by itself on the alarms of alarms.py (see rollout.py); a serverless one is
switched all at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from dogbreed.aws import async_checks, asynchronous
from dogbreed.aws.alarms import Thresholds, check_thresholds, claim_alarms, ensure_alarms
from dogbreed.aws.config import digest
from dogbreed.aws.context import VARIANT, Ctx
from dogbreed.aws.rollout import (
    Rollout,
    check_rollout,
    deployment_config,
    describe,
    execution_timeout_s,
)
from dogbreed.core import settings
from dogbreed.core.errors import AwsError, ConfigError

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
# ProductionVariantServerlessConfig: 1 GB steps from 1 to 6 GB, MaxConcurrency 1-200.
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
FAILED = ("Failed", "UpdateRollbackFailed")


@dataclass(frozen=True)
class DeployOptions:
    """What `aws deploy` was asked; None falls back to the config's `deploy` and `alarms`."""

    image: str
    model_data: str
    instance_type: str | None = None
    wait_s: float = 1800
    instance_count: int | None = None
    serverless: bool | None = None
    memory_mb: int | None = None
    max_concurrency: int | None = None
    canary_percent: int | None = None
    bake_minutes: int | None = None
    error_rate: float | None = None
    latency_ms: float | None = None
    asynchronous: bool | None = None  # asynchronous.py: --async, --notify, --capture-percent
    notify: bool | None = None
    capture_percent: int | None = None


@dataclass(frozen=True)
class Plan:
    """A deploy's settings, resolved and checked before any AWS call."""

    serverless: bool
    capacity: dict[str, Any]  # the variant's instances or its ServerlessConfig
    instance_count: int  # 0 when serverless
    rollout: Rollout
    thresholds: Thresholds


@dataclass(frozen=True)
class ScaleOptions:
    """Target tracking; None falls back to the config's `autoscale` section."""

    min: int | None = None
    max: int | None = None
    target: float | None = None
    scale_in_cooldown: int | None = None
    scale_out_cooldown: int | None = None


def cmd_deploy(ctx: Ctx, opts: DeployOptions) -> dict[str, Any] | None:
    """Deploy; DescribeEndpoint's answer once InService (None in a dry run)."""
    plan = make_plan(ctx, opts)
    extras = asynchronous.prepare(ctx, opts, plan.serverless)
    live = ctx.find("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)
    if live is not None and plan.serverless and not is_serverless(live):
        raise ConfigError(  # before anything is created for a switch that cannot happen
            f"endpoint {ctx.names.endpoint} runs on instances and SageMaker cannot update it "
            "to serverless: deploy under another --name, or delete it first "
            f"(aws down --name {ctx.names.name})"
        )
    async_checks.check_mode(ctx, live, extras.asynchronous)
    async_checks.check_role_publishes(ctx, extras.notify)
    t = async_checks.latency_thresholds(ctx, plan.thresholds, extras.asynchronous, opts.latency_ms)
    plan = replace(plan, thresholds=t)
    model = _model_request(ctx, opts, isolated=not plan.serverless, env=extras.environment)
    model_name = f"{ctx.names.name}-{digest(model)}"
    variants = [{"VariantName": VARIANT, "ModelName": model_name, **plan.capacity}]
    config_name = f"{ctx.names.name}-{digest(extras.named(variants))}"
    # What exists is checked for N's tag before anything changes (--adopt takes it over).
    claim_endpoint(ctx, live)
    found_model = _claimed(ctx, "model", "describe_model", "ModelName", model_name)
    found_config = _claimed(
        ctx, "endpoint-config", "describe_endpoint_config", "EndpointConfigName", config_name
    )
    found_alarms = claim_alarms(ctx)
    found_topics = asynchronous.claim_topics(ctx, extras)
    asynchronous.ensure_topics(ctx, extras, found_topics)  # before a config names them
    _ensure_model(ctx, model_name, model, found_model)
    _ensure_endpoint_config(ctx, config_name, variants, found_config, extras.config)
    alarms = ensure_alarms(ctx, plan.thresholds, found_alarms)  # before an update names them
    updated = _ensure_endpoint(ctx, live, config_name, plan, alarms)
    if ctx.dry_run:
        return None
    # A blue/green update runs for up to its MaximumExecutionTimeoutInSeconds.
    wait = max(opts.wait_s, execution_timeout_s(plan.rollout)) if updated else opts.wait_s
    endpoint = wait_in_service(ctx, wait)
    _check_rolled_out(ctx, endpoint, config_name)
    return endpoint


def _add_tags(ctx: Ctx, arn: str) -> None:
    ctx.write("sagemaker", "add_tags", ResourceArn=arn, Tags=ctx.names.tags)


def claim_endpoint(ctx: Ctx, endpoint: dict[str, Any] | None) -> None:
    """A found endpoint (DescribeEndpoint's answer) must carry N's tag, or be adopted."""
    n = ctx.names
    ctx.would_read("sagemaker", "list_tags", ResourceArn=ctx.sagemaker_arn("endpoint", n.endpoint))
    if endpoint is None:
        return
    arn = endpoint["EndpointArn"]
    tags = ctx.read("sagemaker", "list_tags", ResourceArn=arn)
    ctx.claim("endpoint", n.endpoint, tags.get("Tags"), lambda: _add_tags(ctx, arn))


def _claimed(ctx: Ctx, kind: str, describe: str, key: str, name: str) -> dict[str, Any] | None:
    """Describe N's model or endpoint config `name`; one found must carry N's tag (or be
    adopted). None when there is none."""
    found = ctx.find("sagemaker", describe, **{key: name})
    arn = ctx.sagemaker_arn(kind, name)
    ctx.would_read("sagemaker", "list_tags", ResourceArn=arn)
    if found is not None:
        arn = found.get("ModelArn") or found.get("EndpointConfigArn") or arn
        tags = ctx.read("sagemaker", "list_tags", ResourceArn=arn)
        ctx.claim(kind.replace("-", " "), name, tags.get("Tags"), lambda: _add_tags(ctx, arn))
    return found


def _check_rolled_out(ctx: Ctx, endpoint: dict[str, Any], config_name: str) -> None:
    """An InService endpoint on its old config: SageMaker rolled the update back."""
    if endpoint["EndpointConfigName"] != config_name:
        reason = endpoint.get("FailureReason") or "an alarm tripped or the new fleet failed"
        raise AwsError(
            f"endpoint {ctx.names.endpoint} rolled back to {endpoint['EndpointConfigName']}: "
            f"{reason}"
        )


def _pick(flag: Any, setting: Any) -> Any:
    """A flag when given (not None), else the config's setting."""
    return setting if flag is None else flag


def make_plan(ctx: Ctx, opts: DeployOptions) -> Plan:
    """Flags over the config file; every value checked (ConfigError, one line)."""
    cfg, al = ctx.config["deploy"], ctx.config["alarms"]
    rollout = Rollout(
        _pick(opts.canary_percent, cfg["canary_percent"]),
        _pick(opts.bake_minutes, cfg["bake_minutes"]),
    )
    thresholds = Thresholds(
        _pick(opts.error_rate, al["error_rate"]),
        _pick(opts.latency_ms, al["latency_ms"]),
        al["minutes"],
    )
    check_rollout(rollout)
    check_thresholds(thresholds)
    if _pick(opts.serverless, cfg["serverless"]):
        if opts.instance_type is not None or opts.instance_count is not None:
            raise ConfigError(
                "a serverless deploy (--serverless, deploy.serverless) takes no --instance-type "
                "or --instance-count"
            )
        config = _serverless_config(
            _pick(opts.memory_mb, cfg["memory_mb"]),
            _pick(opts.max_concurrency, cfg["max_concurrency"]),
        )
        return Plan(True, {"ServerlessConfig": config}, 0, rollout, thresholds)
    count = _pick(opts.instance_count, cfg["instance_count"])
    if count < 1:
        raise ConfigError(
            "instance count (--instance-count, deploy.instance_count) must be 1 or more, "
            f"got {count}"
        )
    instances = {
        "InitialInstanceCount": count,
        "InstanceType": _pick(opts.instance_type, cfg["instance_type"]),
    }
    return Plan(False, instances, count, rollout, thresholds)


def _serverless_config(memory_mb: int, concurrency: int) -> dict[str, int]:
    if memory_mb not in SERVERLESS_MEMORY_MB:
        sizes = ", ".join(map(str, SERVERLESS_MEMORY_MB))
        raise ConfigError(
            f"serverless memory (--memory-mb, deploy.memory_mb) must be one of {sizes} MB, "
            f"got {memory_mb}"
        )
    if not 1 <= concurrency <= MAX_SERVERLESS_CONCURRENCY:
        raise ConfigError(
            "serverless max concurrency (--max-concurrency, deploy.max_concurrency) must be "
            f"from 1 to {MAX_SERVERLESS_CONCURRENCY}, got {concurrency}"
        )
    return {"MemorySizeInMB": memory_mb, "MaxConcurrency": concurrency}


def _model_request(
    ctx: Ctx, opts: DeployOptions, isolated: bool, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """CreateModel's settings (its name is N-<digest of them>); `env`: variables added."""
    workers = settings.MODEL_SERVER_WORKERS
    default = settings.SERVE_ENV[workers].default  # None: the server sizes it by memory
    return {
        "PrimaryContainer": {
            "Image": opts.image,
            "ModelDataUrl": opts.model_data,
            "Environment": {**({} if default is None else {workers: default}), **(env or {})},
        },
        "ExecutionRoleArn": ctx.role_arn(ctx.names.sagemaker_role),
        # The container needs no network (model load never touches it), but serverless
        # endpoints do not support network isolation: they get a model without it.
        "EnableNetworkIsolation": isolated,
    }


def _ensure_model(ctx: Ctx, name: str, model: dict[str, Any], found: dict | None) -> None:
    if found:
        ctx.say(f"model {name} unchanged")
    else:
        ctx.write("sagemaker", "create_model", ModelName=name, **model, Tags=ctx.names.tags)
        ctx.say(f"created model {name}")


def _ensure_endpoint_config(
    ctx: Ctx,
    name: str,
    variants: list[dict[str, Any]],
    found: dict | None,
    extra: dict[str, Any] | None = None,  # asynchronous.Extras.config
) -> None:
    if found:
        ctx.say(f"endpoint config {name} unchanged")
    else:
        ctx.write(
            "sagemaker",
            "create_endpoint_config",
            EndpointConfigName=name,
            ProductionVariants=variants,
            **(extra or {}),
            Tags=ctx.names.tags,  # `aws down` deletes only configs with N's tag
        )
        ctx.say(f"created endpoint config {name}")


def _ensure_endpoint(
    ctx: Ctx, endpoint: dict[str, Any] | None, config_name: str, plan: Plan, alarms: list[str]
) -> bool:
    """Create, update or leave the endpoint (as DescribeEndpoint found it); True on an update."""
    n = ctx.names
    if endpoint is None:
        ctx.write(
            "sagemaker",
            "create_endpoint",
            EndpointName=n.endpoint,
            EndpointConfigName=config_name,
            Tags=n.tags,
        )
        ctx.say(f"created endpoint {n.endpoint}")
        if ctx.dry_run:  # a dry run reads nothing: show the request of a redeploy too
            ctx.say(f"or, when endpoint {n.endpoint} is live with another config:")
            _update(ctx, config_name, plan, alarms, from_serverless=False)
        return False
    if endpoint["EndpointConfigName"] == config_name:
        ctx.say(f"endpoint {n.endpoint} unchanged")
        return False
    _check_updatable(ctx, endpoint)
    _update(ctx, config_name, plan, alarms, from_serverless=is_serverless(endpoint))
    return True


def is_serverless(endpoint: dict[str, Any]) -> bool:
    """Whether a DescribeEndpoint answer is a serverless endpoint's."""
    variants = endpoint.get("ProductionVariants") or []
    return any("CurrentServerlessConfig" in v or "DesiredServerlessConfig" in v for v in variants)


def _check_updatable(ctx: Ctx, endpoint: dict[str, Any]) -> None:
    name, status = ctx.names.endpoint, endpoint["EndpointStatus"]
    if status == "Failed":
        raise AwsError(
            f"endpoint {name} is Failed ({endpoint.get('FailureReason', 'no reason given')}): "
            "delete it, then deploy again"
        )
    if status != "InService":
        raise AwsError(f"endpoint {name} is {status}: deploy again once it is InService")


def _update(
    ctx: Ctx, config_name: str, plan: Plan, alarms: list[str], from_serverless: bool
) -> None:
    n = ctx.names
    params: dict[str, Any] = {"EndpointName": n.endpoint, "EndpointConfigName": config_name}
    if plan.serverless or from_serverless:
        # Canary and alarm rollback shift traffic between instance fleets; a serverless
        # endpoint has none and takes SageMaker's default update.
        how = "all at once (serverless: no canary, no rollback on alarms)"
    else:
        params["DeploymentConfig"] = deployment_config(plan.rollout, plan.instance_count, alarms)
        how = describe(plan.rollout, plan.instance_count, alarms)
    ctx.write("sagemaker", "update_endpoint", **params)
    ctx.say(f"updating endpoint {n.endpoint} to {config_name}: {how}")


def wait_in_service(ctx: Ctx, timeout_s: float) -> dict[str, Any]:
    """Poll until InService (its DescribeEndpoint answer), a failed state or the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        endpoint = ctx.read("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)
        status = endpoint["EndpointStatus"]
        if status == "InService":
            ctx.say(f"endpoint {ctx.names.endpoint} InService")
            return endpoint
        if status in FAILED or time.monotonic() > deadline:
            reason = endpoint.get("FailureReason")
            raise AwsError(
                f"endpoint {ctx.names.endpoint} is {status}" + (f": {reason}" if reason else "")
            )
        time.sleep(min(30, max(1, timeout_s / 60)))


def scaling_target(ctx: Ctx) -> dict[str, str]:
    """The parameters that name the endpoint variant's scalable target."""
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": ctx.names.scaling_resource,
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def scale_settings(ctx: Ctx, opts: ScaleOptions) -> dict[str, Any]:
    """The flags given, the config's `autoscale` section for the rest."""
    cfg = ctx.config["autoscale"]
    return {k: cfg[k] if v is None else v for k, v in vars(opts).items()}


def cmd_autoscale(ctx: Ctx, opts: ScaleOptions) -> None:
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)
    claim_endpoint(ctx, endpoint)  # its scaling is the endpoint's: N's, or adopted
    if endpoint is not None and is_serverless(endpoint):
        raise ConfigError(
            f"endpoint {ctx.names.endpoint} is serverless: SageMaker scales it by itself up to "
            "its max concurrency (aws deploy --serverless --max-concurrency C); autoscale is "
            "for instance endpoints"
        )
    pick = scale_settings(ctx, opts)
    ensure_target(ctx, pick["min"], pick["max"])
    _ensure_policy(
        ctx,
        {
            "TargetValue": float(pick["target"]),
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
            "ScaleInCooldown": pick["scale_in_cooldown"],
            "ScaleOutCooldown": pick["scale_out_cooldown"],
        },
    )


def ensure_target(ctx: Ctx, low: int, high: int) -> None:
    resource = ctx.names.scaling_resource
    found = ctx.read(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace="sagemaker",
        ResourceIds=[resource],
    )
    current = (found or {}).get("ScalableTargets", [])
    if current and (current[0]["MinCapacity"], current[0]["MaxCapacity"]) == (low, high):
        ctx.say(f"scalable target {resource} unchanged ({low}-{high})")
        return
    ctx.write(
        "application-autoscaling",
        "register_scalable_target",
        **scaling_target(ctx),
        MinCapacity=low,
        MaxCapacity=high,
    )
    zero = ": none when idle" if low == 0 else ""  # an async endpoint's, scaling to zero
    verb = "updated" if current else "registered"
    ctx.say(f"{verb} scalable target {resource} ({low}-{high} instances{zero})")


def _ensure_policy(ctx: Ctx, config: dict[str, Any]) -> None:
    policy = ctx.names.scaling_policy
    found = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace="sagemaker",
        ResourceId=ctx.names.scaling_resource,
        PolicyNames=[policy],
    )
    existing = (found or {}).get("ScalingPolicies", [])
    if existing and existing[0].get("TargetTrackingScalingPolicyConfiguration") == config:
        ctx.say(f"scaling policy {policy} unchanged")
        return
    ctx.write(
        "application-autoscaling",
        "put_scaling_policy",
        PolicyName=policy,
        PolicyType="TargetTrackingScaling",
        **scaling_target(ctx),
        TargetTrackingScalingPolicyConfiguration=config,
    )
    ctx.say(f"{'updated' if existing else 'created'} scaling policy {policy}")


# ---- the model of a batch transform job (transform.py) --------------------------------------


def claim_model(ctx: Ctx, name: str) -> dict[str, Any] | None:
    """DescribeModel of N's model `name`, checked for N's tag (or adopted); None if none."""
    return _claimed(ctx, "model", "describe_model", "ModelName", name)


def ensure_model(ctx: Ctx, image: str, model_data: str) -> str:
    """N's model of `image` and `model_data`, named and created as `aws deploy` does for an
    instance endpoint (network isolated), so the two share it; its name."""
    model = _model_request(ctx, DeployOptions(image, model_data), isolated=True)
    name = f"{ctx.names.name}-{digest(model)}"
    _ensure_model(ctx, name, model, claim_model(ctx, name))
    return name
