"""`dogbreed aws deploy` and `dogbreed aws autoscale`: the SageMaker endpoint.

Models and endpoint configs are named after a digest of their request: a changed
image, model or instance type makes new ones, and the endpoint is switched over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dogbreed.aws.config import digest
from dogbreed.aws.context import VARIANT, Ctx
from dogbreed.core import settings
from dogbreed.core.errors import AwsError

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"


@dataclass(frozen=True)
class DeployOptions:
    image: str
    model_data: str
    instance_type: str | None = None  # None: the config's deploy.instance_type
    wait_s: float = 1800


@dataclass(frozen=True)
class ScaleOptions:
    """Target tracking; None falls back to the config's `autoscale` section."""

    min: int | None = None
    max: int | None = None
    target: float | None = None
    scale_in_cooldown: int | None = None
    scale_out_cooldown: int | None = None


def cmd_deploy(ctx: Ctx, opts: DeployOptions) -> None:
    model_name = _ensure_model(ctx, opts)
    config_name = _ensure_endpoint_config(ctx, model_name, opts.instance_type)
    _ensure_endpoint(ctx, config_name)
    if not ctx.dry_run:
        wait_in_service(ctx, opts.wait_s)


def _ensure_model(ctx: Ctx, opts: DeployOptions) -> str:
    workers = settings.MODEL_SERVER_WORKERS
    model = {
        "PrimaryContainer": {
            "Image": opts.image,
            "ModelDataUrl": opts.model_data,
            "Environment": {workers: settings.SERVE_ENV[workers].default},
        },
        "ExecutionRoleArn": ctx.role_arn(ctx.names.sagemaker_role),
        "EnableNetworkIsolation": True,
    }
    name = f"{ctx.names.name}-{digest(model)}"
    if ctx.find("sagemaker", "describe_model", ModelName=name):
        ctx.say(f"model {name} unchanged")
    else:
        ctx.write("sagemaker", "create_model", ModelName=name, **model, Tags=ctx.names.tags)
        ctx.say(f"created model {name}")
    return name


def _ensure_endpoint_config(ctx: Ctx, model_name: str, instance_type: str | None) -> str:
    cfg = ctx.config["deploy"]
    variants = [
        {
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InitialInstanceCount": cfg["instance_count"],
            "InstanceType": instance_type or cfg["instance_type"],
        }
    ]
    name = f"{ctx.names.name}-{digest(variants)}"
    if ctx.find("sagemaker", "describe_endpoint_config", EndpointConfigName=name):
        ctx.say(f"endpoint config {name} unchanged")
    else:
        ctx.write(
            "sagemaker",
            "create_endpoint_config",
            EndpointConfigName=name,
            ProductionVariants=variants,
        )
        ctx.say(f"created endpoint config {name}")
    return name


def _ensure_endpoint(ctx: Ctx, config_name: str) -> None:
    n = ctx.names
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=n.endpoint)
    if endpoint is None:
        ctx.write(
            "sagemaker",
            "create_endpoint",
            EndpointName=n.endpoint,
            EndpointConfigName=config_name,
            Tags=n.tags,
        )
        ctx.say(f"created endpoint {n.endpoint}")
    elif endpoint["EndpointConfigName"] != config_name:
        ctx.write(
            "sagemaker", "update_endpoint", EndpointName=n.endpoint, EndpointConfigName=config_name
        )
        ctx.say(f"updated endpoint {n.endpoint} to {config_name}")
    else:
        ctx.say(f"endpoint {n.endpoint} unchanged")


def wait_in_service(ctx: Ctx, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        endpoint = ctx.read("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)
        status = endpoint["EndpointStatus"]
        if status == "InService":
            ctx.say(f"endpoint {ctx.names.endpoint} InService")
            return
        if status == "Failed" or time.monotonic() > deadline:
            raise AwsError(f"endpoint {ctx.names.endpoint} is {status}")
        time.sleep(min(30, max(1, timeout_s / 60)))


def scaling_target(ctx: Ctx) -> dict[str, str]:
    """The parameters that name the endpoint variant's scalable target."""
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": ctx.names.scaling_resource,
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def cmd_autoscale(ctx: Ctx, opts: ScaleOptions) -> None:
    cfg = ctx.config["autoscale"]
    pick = {k: cfg[k] if v is None else v for k, v in vars(opts).items()}
    _ensure_target(ctx, pick["min"], pick["max"])
    _ensure_policy(
        ctx,
        {
            "TargetValue": float(pick["target"]),
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
            "ScaleInCooldown": pick["scale_in_cooldown"],
            "ScaleOutCooldown": pick["scale_out_cooldown"],
        },
    )


def _ensure_target(ctx: Ctx, low: int, high: int) -> None:
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
    verb = "updated" if current else "registered"
    ctx.say(f"{verb} scalable target {resource} ({low}-{high} instances)")


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
