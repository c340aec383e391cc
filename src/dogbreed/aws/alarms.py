"""CloudWatch alarms on the endpoint: the 5XX error rate and the model latency.

They watch every deployment of N and are what a blue/green update rolls back on
(AutoRollbackConfiguration names them). PutMetricAlarm is an upsert: a rerun
sends it only when a setting changed. Each alarm carries the tag dogbreed:name=N,
and neither `deploy` nor `down` touches a same-named alarm without it (`deploy
--adopt` tags it N's and takes it over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dogbreed.aws.context import TAG_KEY, VARIANT, Ctx
from dogbreed.core.errors import ConfigError

NAMESPACE = "AWS/SageMaker"
PERIOD_S = 60  # one datapoint a minute: the finest period SageMaker's endpoint metrics have
# Settings of PutMetricAlarm that DescribeAlarms answers back: a rerun compares these.
COMPARED = (
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
)


@dataclass(frozen=True)
class Thresholds:
    error_rate: float  # share of invocations answered 5XX, 0-1
    latency_ms: float  # average ModelLatency
    minutes: int  # consecutive one-minute periods over the threshold before the alarm trips


def check_thresholds(t: Thresholds) -> None:
    if not 0 < t.error_rate <= 1:
        raise ConfigError(
            "alarm error rate (--alarm-error-rate, alarms.error_rate) must be above 0 and "
            f"at most 1, got {t.error_rate}"
        )
    if not t.latency_ms > 0:
        raise ConfigError(
            "alarm latency (--alarm-latency-ms, alarms.latency_ms) must be above 0 ms, "
            f"got {t.latency_ms}"
        )
    if not 1 <= t.minutes <= 60:
        raise ConfigError(f"alarm minutes (alarms.minutes) must be from 1 to 60, got {t.minutes}")


def alarm_specs(ctx: Ctx, t: Thresholds) -> list[dict[str, Any]]:
    """The PutMetricAlarm requests of N's two alarms (ctx.names.alarms, in that order)."""
    n = ctx.names
    errors, latency = n.alarms
    common = {
        "Namespace": NAMESPACE,
        "Dimensions": [
            {"Name": "EndpointName", "Value": n.endpoint},
            {"Name": "VariantName", "Value": VARIANT},
        ],
        # Average, not a percentile: SageMaker lists Average, Sum, Min, Max and SampleCount
        # as the valid statistics of both metrics.
        "Statistic": "Average",
        "Period": PERIOD_S,
        "EvaluationPeriods": t.minutes,
        "DatapointsToAlarm": t.minutes,
        "ComparisonOperator": "GreaterThanThreshold",
        # A minute without traffic is not a failure (a new or idle endpoint).
        "TreatMissingData": "notBreaching",
    }
    return [
        {
            "AlarmName": errors,
            "AlarmDescription": f"dogbreed {n.name}: over {t.error_rate:.1%} of invocations "
            f"answered 5XX for {t.minutes} min; a deployment in progress rolls back",
            # SageMaker sends 1 for a 5XX answer and 0 otherwise: the average is the error rate.
            "MetricName": "Invocation5XXErrors",
            "Threshold": float(t.error_rate),
            **common,
        },
        {
            "AlarmName": latency,
            "AlarmDescription": f"dogbreed {n.name}: average model latency over "
            f"{t.latency_ms:g} ms for {t.minutes} min; a deployment in progress rolls back",
            "MetricName": "ModelLatency",  # in microseconds
            "Threshold": float(t.latency_ms) * 1000,
            **common,
        },
    ]


def ensure_alarms(
    ctx: Ctx, t: Thresholds, current: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Create or update N's alarms (`current`: claim_alarms's answer, read here when
    None); their names, for AutoRollbackConfiguration."""
    check_thresholds(t)
    specs = alarm_specs(ctx, t)
    current = claim_alarms(ctx) if current is None else current
    for spec in specs:
        _ensure_one(ctx, spec, current.get(spec["AlarmName"]))
    return [s["AlarmName"] for s in specs]


def claim_alarms(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """N's alarms that exist, by name; each must carry N's tag, or --adopt tags it (a
    ConfigError before any change otherwise)."""
    current = _current(ctx, list(ctx.names.alarms))
    _would_check_tags(ctx)
    for name, alarm in current.items():
        arn = alarm["AlarmArn"]
        tags = ctx.read("cloudwatch", "list_tags_for_resource", ResourceARN=arn)
        ctx.claim("alarm", name, tags.get("Tags"), lambda a=arn: _tag(ctx, a))
    return current


def _tag(ctx: Ctx, arn: str) -> None:
    ctx.write("cloudwatch", "tag_resource", ResourceARN=arn, Tags=ctx.names.tags)


def _current(ctx: Ctx, names: list[str]) -> dict[str, dict[str, Any]]:
    found = ctx.read("cloudwatch", "describe_alarms", AlarmNames=names)
    return {a["AlarmName"]: a for a in (found or {}).get("MetricAlarms", [])}


def _ensure_one(ctx: Ctx, spec: dict[str, Any], current: dict[str, Any] | None) -> None:
    name = spec["AlarmName"]
    if current is not None and all(current.get(k) == spec[k] for k in COMPARED):
        ctx.say(f"alarm {name} unchanged")
        return
    # Tags count on creation only (CloudWatch ignores them on an update).
    ctx.write("cloudwatch", "put_metric_alarm", **spec, Tags=ctx.names.tags)
    ctx.say(f"{'updated' if current else 'created'} alarm {name} ({spec['MetricName']})")


def owned(ctx: Ctx, alarm: dict[str, Any]) -> bool:
    """True when the alarm carries N's tag (one ListTagsForResource call)."""
    tags = ctx.read("cloudwatch", "list_tags_for_resource", ResourceARN=alarm["AlarmArn"])
    return ctx.names.tagged(tags.get("Tags"))


def alarm_arn(ctx: Ctx, name: str) -> str:
    return f"arn:aws:cloudwatch:{ctx.region}:{ctx.account}:alarm:{name}"


def _would_check_tags(ctx: Ctx) -> None:
    """A dry run finds no alarm: record the tag checks a real run makes on found ones."""
    for name in ctx.names.alarms:
        ctx.would_read("cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, name))


def delete_alarms(ctx: Ctx) -> list[str]:
    """`aws down`: delete N's tagged alarms; one line for each same-named alarm it leaves,
    and their names."""
    names = list(ctx.names.alarms)
    found = _current(ctx, names)
    if ctx.dry_run:
        _would_check_tags(ctx)
        ctx.delete("cloudwatch", "delete_alarms", AlarmNames=names)
        return []
    mine, left = [], []
    for alarm in found.values():
        if owned(ctx, alarm):
            mine.append(alarm["AlarmName"])
        else:
            left.append(alarm["AlarmName"])
            ctx.say(f"left alarm {alarm['AlarmName']}: not tagged {TAG_KEY}={ctx.names.name}")
    if mine:
        ctx.delete("cloudwatch", "delete_alarms", AlarmNames=mine)
    return left
