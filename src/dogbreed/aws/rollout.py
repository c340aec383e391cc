"""How `aws deploy` moves a live endpoint to a new config: blue/green with a canary.

SageMaker starts a new (green) fleet beside the old (blue) one, sends the canary's
share of traffic to it, waits the bake time, then shifts the rest and keeps the
old fleet for another bake before ending it. If one of the alarms trips at any
point, it sends all traffic back to the old fleet by itself
(AutoRollbackConfiguration). The limits below are the service's: the ranges in
botocore's model of UpdateEndpoint, and "the canary is at most 50% of the new
fleet" from SageMaker's guide to deployment guardrails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dogbreed.core.errors import ConfigError

MAX_CANARY_PERCENT = 50  # the canary is at most half the new fleet
MAX_BAKE_MINUTES = 60  # WaitIntervalInSeconds and TerminationWaitInSeconds: 0-3600
# MaximumExecutionTimeoutInSeconds must lie in 600-28800 and exceed the two bakes; on
# top of them we allow for starting the new fleet: instances, image pull, model
# download and the first /ping, which SageMaker itself allows minutes for.
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 600, 28800
PROVISION_S = 1800


@dataclass(frozen=True)
class Rollout:
    canary_percent: int
    bake_minutes: int


def check_rollout(r: Rollout) -> None:
    if not 1 <= r.canary_percent <= MAX_CANARY_PERCENT:
        raise ConfigError(
            "canary percent (--canary-percent, deploy.canary_percent) must be from 1 to "
            f"{MAX_CANARY_PERCENT} (SageMaker: the canary is at most half the new fleet), "
            f"got {r.canary_percent}"
        )
    if not 0 <= r.bake_minutes <= MAX_BAKE_MINUTES:
        raise ConfigError(
            "bake minutes (--bake-minutes, deploy.bake_minutes) must be from 0 to "
            f"{MAX_BAKE_MINUTES} (SageMaker waits at most 3600 s between steps), "
            f"got {r.bake_minutes}"
        )


def canary_fits(instance_count: int) -> bool:
    """A canary is a whole instance and at most half the fleet: two instances or more."""
    return instance_count >= 2


def execution_timeout_s(r: Rollout) -> int:
    """MaximumExecutionTimeoutInSeconds: room for the new fleet and both bakes."""
    return min(MAX_TIMEOUT_S, max(MIN_TIMEOUT_S, PROVISION_S + 2 * r.bake_minutes * 60))


def deployment_config(r: Rollout, instance_count: int, alarms: list[str]) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig for a new fleet of `instance_count` instances.

    With one instance a canary cannot exist: the update shifts all traffic at once,
    and the bakes and the automatic rollback on the alarms still hold.
    """
    bake_s = r.bake_minutes * 60
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": bake_s}
    if canary_fits(instance_count):
        routing = {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": r.canary_percent},
            "WaitIntervalInSeconds": bake_s,
        }
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": bake_s,  # the final bake, old fleet still ready
            "MaximumExecutionTimeoutInSeconds": execution_timeout_s(r),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


def describe(r: Rollout, instance_count: int, alarms: list[str]) -> str:
    """The progress line of an update, in words."""
    watch = f"rolls back by itself if {' or '.join(alarms)} trips"
    if canary_fits(instance_count):
        return (
            f"blue/green: canary {r.canary_percent}% of {instance_count} instances for "
            f"{r.bake_minutes} min, then the rest, old fleet kept {r.bake_minutes} min; {watch}"
        )
    return (
        f"blue/green all at once (a canary needs 2 instances or more, this config has "
        f"{instance_count}), old fleet kept {r.bake_minutes} min; {watch}"
    )
