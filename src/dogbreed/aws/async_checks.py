"""What an asynchronous endpoint rules out, checked before any write.

SageMaker updates no endpoint between real-time and asynchronous (UpdateEndpoint
answers "The AsyncInferenceConfig parameter cannot be removed from this endpoint",
and the like the other way), and an asynchronous endpoint refuses InvokeEndpoint,
which a Lambda front door calls. Each is told here in one line before `aws deploy`
or `aws lambda` creates anything. Here too: `deploy --notify` checks that the
execution role may publish to N's topics, and an async deploy's latency alarm
threshold.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dogbreed.aws.alarms import Thresholds
from dogbreed.aws.context import Ctx
from dogbreed.aws.policies import PUBLISH_SID, role_grants
from dogbreed.core.errors import ConfigError

ASYNC_KEY = "AsyncInferenceConfig"  # DescribeEndpointConfig's, present on an async endpoint
MS = 1000


def running_config(ctx: Ctx, endpoint: dict[str, Any] | None) -> dict[str, Any] | None:
    """DescribeEndpointConfig of the config a live endpoint (DescribeEndpoint's answer)
    runs; None when there is none. A dry run, which finds no endpoint, records the read."""
    if endpoint is None and not ctx.dry_run:
        return None
    name = endpoint["EndpointConfigName"] if endpoint else ctx.names.stand_in
    return ctx.find("sagemaker", "describe_endpoint_config", EndpointConfigName=name)


def is_async(config: dict[str, Any] | None) -> bool:
    return bool(config and ASYNC_KEY in config)


def check_mode(ctx: Ctx, live: dict[str, Any] | None, asynchronous: bool) -> None:
    """A deploy with (`asynchronous`) or without --async onto a live endpoint of the other
    mode: a ConfigError naming the ways out."""
    running = is_async(running_config(ctx, live))
    if live is None or running == asynchronous:
        return
    n = ctx.names
    was, wanted, same = (
        ("asynchronous", "real-time", "with --async")
        if running
        else ("real-time", "asynchronous", "without --async")
    )
    raise ConfigError(
        f"endpoint {n.endpoint} is {was} and SageMaker cannot update it to {wanted}: deploy "
        f"{same} (deploy.async), under another --name, or delete it first "
        f"(aws down --name {n.name})"
    )


def refuse_front_door(ctx: Ctx, endpoint: dict[str, Any] | None) -> None:
    """`aws lambda` on an asynchronous endpoint: its front door's InvokeEndpoint would be
    refused on every request."""
    if is_async(running_config(ctx, endpoint)):
        raise ConfigError(
            f"endpoint {ctx.names.endpoint} is asynchronous and refuses the InvokeEndpoint "
            f"of a Lambda front door: async endpoints take `aws invoke --async --name "
            f"{ctx.names.name}`, not `aws lambda`"
        )


def check_role_publishes(ctx: Ctx, notify: bool) -> None:
    """With --notify: the execution role's policy (GetRolePolicy) has the statement that
    lets the endpoint publish to N's topics, i.e. `aws iam` ran since it was added.
    Without it every answer's notification would fail, unseen."""
    if not notify:
        return
    role = ctx.names.sagemaker_role
    if role_grants(ctx, PUBLISH_SID):
        return
    raise ConfigError(
        f"--notify (async.notify): the role {role} may not publish to {ctx.names.name}'s "
        f"topics yet: an administrator reruns `dogbreed aws iam --name {ctx.names.name}`, "
        "then deploy again"
    )


def latency_thresholds(
    ctx: Ctx, t: Thresholds, asynchronous: bool, flag: float | None
) -> Thresholds:
    """An asynchronous request may run up to async.timeout_s (checked by
    asynchronous.prepare): the latency alarm, which a blue/green update rolls back on, is
    that long unless --alarm-latency-ms (`flag`) says otherwise."""
    if not asynchronous or flag is not None:
        return t
    return replace(t, latency_ms=float(ctx.config["async"]["timeout_s"] * MS))
