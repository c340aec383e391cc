"""`dogbreed aws down`: delete what the other commands created for N, and nothing else.

A resource is deleted only when it carries the tag dogbreed:name=N, read just before
(GetRole, GetFunction, ListTags, ListTagsForResource): a same-named resource without
it is someone else's and is left, named in a line of its own. What has no tag of its
own goes with what it belongs to: the scalable target and scaling policy with the
endpoint (left with a foreign endpoint), the function's log group with the function.
Each step tolerates a resource that is already gone (context.MISSING), so `down` can
be rerun after a partial failure. It ends with a line naming what it leaves: data,
artifacts, images and records that outlive a deployment (training, tuning and
transform jobs: SageMaker has no call that deletes one; the model registry),
SageMaker's own log groups, and the same-named resources that were not N's.

A dry run finds nothing, so it treats every resource as N's: it prints every delete
request and records the reads a real run makes before them (stand-in names where a
real run lists them first).
"""

from __future__ import annotations

from typing import Any

from dogbreed.aws import async_ops
from dogbreed.aws.alarms import delete_alarms
from dogbreed.aws.context import LIST_PAGE, TAG_KEY, Ctx, denied
from dogbreed.aws.endpoint import scaling_target
from dogbreed.aws.policies import deployment_uri
from dogbreed.aws.transform import TRANSFORM_DIR
from dogbreed.core.errors import AwsError

Step = tuple[str, str, dict[str, Any]]  # service, operation, parameters


def cmd_down(ctx: Ctx, keep_roles: bool = False) -> list[str]:
    """Delete N's resources (its roles too unless `keep_roles`); the same-named ones it
    left (not tagged for N)."""
    left: list[str] = []
    deleted = ctx.deleted
    endpoint = _endpoint_is_mine(ctx)
    if endpoint is False:
        left.append(_leave(ctx, "endpoint", ctx.names.endpoint, "and its autoscaling"))
    else:
        async_ops.delete_policies(ctx)  # an asynchronous endpoint's, before its target
        _run(ctx, _scaling_steps(ctx))
        if endpoint:
            ctx.delete("sagemaker", "delete_endpoint", EndpointName=ctx.names.endpoint)
    left += [f"alarm {a}" for a in delete_alarms(ctx)]  # they watch the endpoint
    left += async_ops.delete_tagged(ctx)  # the wake alarm and the SNS topics
    left += _models_and_configs(ctx)
    left += _function(ctx)
    if not keep_roles:
        left += _roles(ctx)
    if ctx.deleted == deleted and not ctx.dry_run:
        ctx.say(_nothing(ctx, keep_roles))
    ctx.say(_left(ctx, left, keep_roles))
    return left


def _registry(ctx: Ctx) -> str:
    """The model registry, left: a record of what was trained and approved (registry.py)."""
    from dogbreed.aws.registry import left_in_place

    kept = left_in_place(ctx)
    return f"; {kept}" if kept else ""


def _nothing(ctx: Ctx, keep_roles: bool) -> str:
    """What a `down` that deleted nothing found: every kind it looked for, already gone."""
    n = ctx.names
    kinds = "endpoint, autoscaling, alarms, models, endpoint configs, function, log group"
    return (
        f"nothing of deployment {n.name} was left to delete: no {kinds}"
        f"{'' if keep_roles else ' or roles'} tagged {TAG_KEY}={n.name} (already gone)"
    )


def _run(ctx: Ctx, steps: list[Step]) -> None:
    for service, op, params in steps:
        ctx.delete(service, op, **params)


def _leave(ctx: Ctx, kind: str, name: str, also: str = "") -> str:
    ctx.say(
        f"left {kind} {name}{' ' + also if also else ''}: not tagged {TAG_KEY}={ctx.names.name}"
    )
    return f"{kind} {name}"


def _left(ctx: Ctx, foreign: list[str], keep_roles: bool = False) -> str:
    """What `down` does not delete, in one line."""
    c, n = ctx.config, ctx.names
    line = (
        f"left in place: S3 objects under {c['data']}, {c['output']} and {c['checkpoints']} "
        f"(N's asynchronous requests, answers and captured data among them); "
        f"the ECR repositories {', '.join(c['repositories'])} and their images; training and "
        "tuning job records (SageMaker keeps them); SageMaker's log groups "
        f"/aws/sagemaker/Endpoints/{n.endpoint} and /aws/sagemaker/TrainingJobs"
    )
    # SageMaker has no call that deletes a transform job: its record stays, as its output.
    line += (
        "; transform job records (SageMaker keeps them, no call deletes one) and their "
        f"outputs under {deployment_uri(c['output'], n.name)}/{TRANSFORM_DIR}/ "
        "(log group /aws/sagemaker/TransformJobs)"
    )
    if keep_roles:
        line += f"; the roles {n.sagemaker_role} and {n.lambda_role} (--keep-roles)"
    line += _registry(ctx)
    if foreign:
        line += f"; not N's (no tag {TAG_KEY}={n.name}): {', '.join(foreign)}"
    return line


# ---- the endpoint and its autoscaling ------------------------------------------------------


def _endpoint_is_mine(ctx: Ctx) -> bool | None:
    """True: the endpoint carries N's tag (or a dry run); False: it does not; None: none."""
    n = ctx.names
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=n.endpoint)
    ctx.would_read("sagemaker", "list_tags", ResourceArn=ctx.sagemaker_arn("endpoint", n.endpoint))
    if ctx.dry_run:
        return True
    if endpoint is None:
        return None
    tags = ctx.read("sagemaker", "list_tags", ResourceArn=endpoint["EndpointArn"])
    return n.tagged(tags.get("Tags"))


def _scaling_steps(ctx: Ctx) -> list[Step]:
    """The scaling policy, then the scalable target: only those a describe call lists.

    Asking first keeps "already gone" apart from a real error: for a missing policy or
    target, moto answers ValidationException (the service: ObjectNotFoundException).
    """
    target = scaling_target(ctx)
    named = {"PolicyName": ctx.names.scaling_policy, **target}
    policy = ("application-autoscaling", "delete_scaling_policy", named)
    # The resource first: `deleted:` lines name a call's first parameter.
    by_resource = {"ResourceId": target["ResourceId"], **target}
    deregister = ("application-autoscaling", "deregister_scalable_target", by_resource)
    policies = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace=target["ServiceNamespace"],
        ResourceId=target["ResourceId"],
        PolicyNames=[ctx.names.scaling_policy],
    )
    targets = ctx.read(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace=target["ServiceNamespace"],
        ResourceIds=[target["ResourceId"]],
    )
    if ctx.dry_run:
        return [policy, deregister]
    found = ((policy, policies["ScalingPolicies"]), (deregister, targets["ScalableTargets"]))
    return [step for step, listed in found if listed]


# ---- models and endpoint configs -----------------------------------------------------------


def _models_and_configs(ctx: Ctx) -> list[str]:
    """Delete the endpoint configs and models named N-<digest> that carry N's tag (every
    page of the listings; names matched exactly, not by the listing's substring)."""
    n = ctx.names
    listed = {"NameContains": n.name, "MaxResults": LIST_PAGE}
    configs = ctx.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs", **listed)
    models = ctx.pages("sagemaker", "list_models", "Models", **listed)
    if ctx.dry_run:
        ctx.say(f"for each endpoint config and model N-<digest> tagged {TAG_KEY}={n.name} "
                f"({n.stand_in} here):")  # fmt: skip
        found = [
            ("endpoint-config", "EndpointConfigName", n.stand_in, None),
            ("model", "ModelName", n.stand_in, None),
        ]
    else:
        found = [
            (
                "endpoint-config",
                "EndpointConfigName",
                c["EndpointConfigName"],
                c["EndpointConfigArn"],
            )
            for c in configs
        ] + [("model", "ModelName", m["ModelName"], m["ModelArn"]) for m in models]
    left = []
    for kind, key, name, arn in found:
        if not n.owns(name):  # another deployment's: N-v2-<digest>, or not ours at all
            continue
        tags = ctx.read("sagemaker", "list_tags", ResourceArn=arn or ctx.sagemaker_arn(kind, name))
        if tags is None or n.tagged(tags.get("Tags")):
            op = "delete_endpoint_config" if kind == "endpoint-config" else "delete_model"
            ctx.delete("sagemaker", op, **{key: name})
        else:
            left.append(_leave(ctx, kind.replace("-", " "), name))
    return left


# ---- the function and the roles ------------------------------------------------------------


def _function(ctx: Ctx) -> list[str]:
    """The function (with its versions, alias, concurrency and URL) and its log group."""
    n = ctx.names
    function = ctx.find("lambda", "get_function", FunctionName=n.function)
    if function is not None and not n.tagged(function.get("Tags") or {}):
        return [_leave(ctx, "function", n.function, f"and its log group {n.log_group}")]
    if function is not None or ctx.dry_run:
        ctx.delete("lambda", "delete_function", FunctionName=n.function)
    # Lambda makes the log group on first use, untagged: it goes with N's function, or
    # after it (a rerun of a `down` that stopped between the two).
    ctx.delete("logs", "delete_log_group", logGroupName=n.log_group)
    return []


def _roles(ctx: Ctx) -> list[str]:
    left = []
    for role in (ctx.names.sagemaker_role, ctx.names.lambda_role):
        found = ctx.find("iam", "get_role", RoleName=role)
        if found is None and not ctx.dry_run:
            continue
        if found is not None and not ctx.names.tagged(found["Role"].get("Tags")):
            left.append(_leave(ctx, "role", role))
            continue
        try:
            ctx.delete("iam", "delete_role_policy", RoleName=role, PolicyName=role)
            ctx.delete("iam", "delete_role", RoleName=role)
        except AwsError as exc:
            if not denied(exc):
                raise
            raise AwsError(
                f"{exc}. Deleting the roles is the administrator's (the policy `dogbreed aws "
                f"iam --name {ctx.names.name} --admin-policy` prints): rerun with --keep-roles "
                "to leave them, and let an administrator run `aws down` for them"
            ) from None
    return left
