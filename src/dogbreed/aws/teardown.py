"""`dogbreed aws down`: delete what the other commands created for N, and nothing else.

Each step tolerates a resource that is already gone (the per-call codes of
context.MISSING), so `down` can be rerun after a partial failure.
"""

from __future__ import annotations

from typing import Any

from dogbreed.aws.context import Ctx
from dogbreed.aws.endpoint import scaling_target

Step = tuple[str, str, dict[str, Any]]  # service, operation, parameters


def cmd_down(ctx: Ctx) -> None:
    n = ctx.names
    steps = [
        *_scaling_steps(ctx),
        ("sagemaker", "delete_endpoint", {"EndpointName": n.endpoint}),
        *_model_steps(ctx),
        ("lambda", "delete_function", {"FunctionName": n.function}),
        ("logs", "delete_log_group", {"logGroupName": n.log_group}),
    ]
    for role in (n.sagemaker_role, n.lambda_role):
        steps += [
            ("iam", "delete_role_policy", {"RoleName": role, "PolicyName": role}),
            ("iam", "delete_role", {"RoleName": role}),
        ]
    for service, op, params in steps:
        ctx.delete(service, op, **params)


def _scaling_steps(ctx: Ctx) -> list[Step]:
    """The scaling policy, then the scalable target: only those a describe call lists.

    Asking first keeps "already gone" apart from a real error: for a missing policy or
    target, moto answers ValidationException (the service: ObjectNotFoundException).
    """
    target = scaling_target(ctx)
    named = {"PolicyName": ctx.names.scaling_policy, **target}
    policy = ("application-autoscaling", "delete_scaling_policy", named)
    deregister = ("application-autoscaling", "deregister_scalable_target", target)
    if ctx.dry_run:
        return [policy, deregister]
    policies = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace=target["ServiceNamespace"],
        ResourceId=target["ResourceId"],
        PolicyNames=[ctx.names.scaling_policy],
    )["ScalingPolicies"]
    targets = ctx.read(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace=target["ServiceNamespace"],
        ResourceIds=[target["ResourceId"]],
    )["ScalableTargets"]
    return [step for step, found in ((policy, policies), (deregister, targets)) if found]


def _model_steps(ctx: Ctx) -> list[Step]:
    """The endpoint configs and models N made (names N-<digest>); a dry run lists none."""
    if ctx.dry_run:
        return []
    n = ctx.names
    configs = ctx.read("sagemaker", "list_endpoint_configs", NameContains=n.name, MaxResults=100)
    models = ctx.read("sagemaker", "list_models", NameContains=n.name, MaxResults=100)
    found = [("EndpointConfigName", c["EndpointConfigName"]) for c in configs["EndpointConfigs"]]
    found += [("ModelName", m["ModelName"]) for m in models["Models"]]
    op = {"EndpointConfigName": "delete_endpoint_config", "ModelName": "delete_model"}
    return [("sagemaker", op[key], {key: name}) for key, name in found if n.owns(name)]
