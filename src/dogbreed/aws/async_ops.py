"""An asynchronous endpoint day to day: `aws autoscale` on it (scaling to zero), and
what `aws status` shows and `aws down` deletes of it (`aws invoke --async` is in
asynchronous.py).

Scaling to zero follows AWS's "Autoscale an asynchronous endpoint": the variant's
scalable target from 0 instances; target tracking on ApproximateBacklogSizePerInstance
(requests waiting per instance); and, since target tracking never leaves zero (with no
instance there is no backlog per instance), a step scaling policy that adds one
instance, run by a CloudWatch alarm on HasBacklogWithoutCapacity (requests waiting with
no instance). The alarm carries dogbreed:name=N like the endpoint's other alarms.
"""

from __future__ import annotations

from typing import Any

from dogbreed.aws import endpoint as endpoints
from dogbreed.aws.alarms import NAMESPACE, PERIOD_S, alarm_arn, owned
from dogbreed.aws.async_checks import running_config as endpoint_config
from dogbreed.aws.asynchronous import topic_arns
from dogbreed.aws.context import TAG_KEY, Ctx
from dogbreed.core.errors import ConfigError

BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
WAKE_METRIC = "HasBacklogWithoutCapacity"
WAKE_MINUTES = 2  # one-minute periods with requests waiting before the alarm adds an instance
# What `aws status` shows: (resource, name, state or None when missing, detail, tagged).
Shown = tuple[str, str, str | None, str, bool | None]
# PutScalingPolicy's configuration parameter, by policy type.
POLICY_CONFIG = {
    "TargetTrackingScaling": "TargetTrackingScalingPolicyConfiguration",
    "StepScaling": "StepScalingPolicyConfiguration",
}


# ---- autoscale: down to zero and back -------------------------------------------------------


def cmd_autoscale(ctx: Ctx, opts: endpoints.ScaleOptions, asynchronous: bool = False) -> None:
    """`aws autoscale`: on an asynchronous endpoint (or with --async) from zero instances
    on its backlog; on any other, endpoint.cmd_autoscale's target tracking."""
    n = ctx.names
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=n.endpoint)
    config = endpoint_config(ctx, endpoint) if endpoint or asynchronous else None
    is_async = bool(config and "AsyncInferenceConfig" in config)
    if not (is_async or asynchronous):
        endpoints.cmd_autoscale(ctx, opts)
        _drop_other_mode(ctx, _backlog_names(ctx), wake_alarm=True)
        return
    if endpoint is None and not ctx.dry_run:  # a dry run reads nothing: it shows the requests
        raise ConfigError(
            f"--async: there is no endpoint {n.endpoint} to scale: deploy first "
            f"(aws deploy --async --name {n.name})"
        )
    if endpoint is not None and not is_async:
        raise ConfigError(
            f"--async: endpoint {n.endpoint} is not asynchronous (aws deploy --async makes "
            "one); drop --async to scale it on invocations"
        )
    endpoints.claim_endpoint(ctx, endpoint)  # its scaling is the endpoint's
    pick = scale_settings(ctx, opts)
    endpoints.ensure_target(ctx, pick["min"], pick["max"])
    _drop_other_mode(ctx, [n.scaling_policy], wake_alarm=False)
    tracking = tracking_config(ctx, pick)
    _ensure_policy(ctx, n.backlog_tracking_policy, "TargetTrackingScaling", tracking)
    arn = _ensure_policy(ctx, n.backlog_policy, "StepScaling", step_config(pick))
    _ensure_wake_alarm(ctx, arn, _claim_wake_alarm(ctx))


def _drop_other_mode(ctx: Ctx, policies: list[str], wake_alarm: bool) -> None:
    """What an autoscale in the other mode (real-time or asynchronous) left: its scaling
    policies, and the wake alarm when `wake_alarm`."""
    if ctx.dry_run:
        ctx.say("and, where an earlier autoscale scaled it in the other mode, it deletes:")
    _drop_policies(ctx, policies)
    if wake_alarm:
        _drop_wake_alarm(ctx)


def _drop_policies(ctx: Ctx, names: list[str]) -> None:
    """The other mode's scaling policies, those listed: a mode change leaves none behind
    (a dry run, which lists nothing, shows their deletes)."""
    listed = _listed_policies(ctx, names)
    target = endpoints.scaling_target(ctx)
    for name in names:
        if name in listed or ctx.dry_run:
            ctx.delete(
                "application-autoscaling", "delete_scaling_policy", PolicyName=name, **target
            )


def _backlog_names(ctx: Ctx) -> list[str]:
    """N's two backlog scaling policies: target tracking, then the step out of zero."""
    return [ctx.names.backlog_tracking_policy, ctx.names.backlog_policy]


def _listed_policies(ctx: Ctx, names: list[str]) -> dict[str, dict[str, Any]]:
    """Those of the scaling policies `names` on N's variant that exist, by name (none in a
    dry run, which records the read)."""
    found = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace="sagemaker",
        ResourceId=ctx.names.scaling_resource,
        PolicyNames=names,
    )
    # By name too: PolicyNames filters on AWS, not on every emulator.
    listed = (found or {}).get("ScalingPolicies", [])
    return {p["PolicyName"]: p for p in listed if p["PolicyName"] in names}


def _drop_wake_alarm(ctx: Ctx) -> None:
    """The wake alarm of an endpoint once scaled as asynchronous, when it carries N's tag
    (a same-named alarm without it is left alone)."""
    name = ctx.names.backlog_alarm
    alarms = ctx.read("cloudwatch", "describe_alarms", AlarmNames=[name])
    ctx.would_read("cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, name))
    found = (alarms or {}).get("MetricAlarms", [])
    if ctx.dry_run or (found and owned(ctx, found[0])):
        ctx.delete("cloudwatch", "delete_alarms", AlarmNames=[name])


def scale_settings(ctx: Ctx, opts: endpoints.ScaleOptions) -> dict[str, Any]:
    """Flags over the config's `async` section (`autoscale.max` for the maximum)."""
    cfg = ctx.config["async"]
    pick = {
        "min": cfg["min"] if opts.min is None else opts.min,
        "max": ctx.config["autoscale"]["max"] if opts.max is None else opts.max,
        "target": cfg["backlog_target"] if opts.target is None else opts.target,
        "scale_in_cooldown": _pick(opts.scale_in_cooldown, cfg["scale_in_cooldown"]),
        "scale_out_cooldown": _pick(opts.scale_out_cooldown, cfg["scale_out_cooldown"]),
        "wake_cooldown": cfg["wake_cooldown"],
    }
    if not 0 <= pick["min"] <= pick["max"] or pick["max"] < 1:
        raise ConfigError(
            "an asynchronous endpoint scales from --min (async.min, 0 or more) to --max "
            f"(autoscale.max, 1 or more, at least --min): got {pick['min']}-{pick['max']}"
        )
    if not pick["target"] > 0:
        raise ConfigError(
            f"--target (async.backlog_target) must be above 0 requests waiting per "
            f"instance, got {pick['target']}"
        )
    return pick


def _pick(flag: Any, setting: Any) -> Any:
    return setting if flag is None else flag


def tracking_config(ctx: Ctx, pick: dict[str, Any]) -> dict[str, Any]:
    """Target tracking of the requests waiting per instance."""
    return {
        "TargetValue": float(pick["target"]),
        "CustomizedMetricSpecification": {
            "MetricName": BACKLOG_METRIC,
            "Namespace": NAMESPACE,
            "Dimensions": [{"Name": "EndpointName", "Value": ctx.names.endpoint}],
            "Statistic": "Average",
        },
        "ScaleInCooldown": pick["scale_in_cooldown"],
        "ScaleOutCooldown": pick["scale_out_cooldown"],
    }


def step_config(pick: dict[str, Any]) -> dict[str, Any]:
    """One instance more whenever the wake alarm fires (any breach: lower bound 0)."""
    return {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "Cooldown": pick["wake_cooldown"],
        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
    }


def _ensure_policy(ctx: Ctx, name: str, policy_type: str, config: dict[str, Any]) -> str:
    """Create or update one scaling policy (a POLICY_CONFIG type); its ARN."""
    existing = _listed_policies(ctx, [name]).get(name)
    key = POLICY_CONFIG[policy_type]
    if existing and existing.get(key) == config:
        ctx.say(f"scaling policy {name} unchanged")
        return existing["PolicyARN"]
    answer = ctx.write(
        "application-autoscaling",
        "put_scaling_policy",
        PolicyName=name,
        PolicyType=policy_type,
        **endpoints.scaling_target(ctx),
        **{key: config},
    )
    ctx.say(f"{'updated' if existing else 'created'} scaling policy {name}")
    return answer.get("PolicyARN") or _stand_in_policy_arn(ctx, name)  # a dry run's


def _stand_in_policy_arn(ctx: Ctx, name: str) -> str:
    return (
        f"arn:aws:autoscaling:{ctx.region}:{ctx.account}:scalingPolicy:<id>:resource/"
        f"sagemaker/{ctx.names.scaling_resource}:policyName/{name}"
    )


def wake_alarm_spec(ctx: Ctx, policy_arn: str) -> dict[str, Any]:
    """PutMetricAlarm of the alarm that runs the step policy `policy_arn`."""
    n = ctx.names
    return {
        "AlarmName": n.backlog_alarm,
        "AlarmDescription": f"dogbreed {n.name}: requests wait and no instance runs; "
        f"adds one ({n.backlog_policy})",
        "Namespace": NAMESPACE,
        "MetricName": WAKE_METRIC,
        "Dimensions": [{"Name": "EndpointName", "Value": n.endpoint}],
        "Statistic": "Average",
        "Period": PERIOD_S,
        "EvaluationPeriods": WAKE_MINUTES,
        "DatapointsToAlarm": WAKE_MINUTES,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
    }


def _claim_wake_alarm(ctx: Ctx) -> dict[str, Any] | None:
    """The wake alarm when it exists: it must carry N's tag, or --adopt tags it."""
    name = ctx.names.backlog_alarm
    found = ctx.read("cloudwatch", "describe_alarms", AlarmNames=[name])
    ctx.would_read("cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, name))
    alarms = (found or {}).get("MetricAlarms", [])
    if not alarms:
        return None
    arn = alarms[0]["AlarmArn"]
    tags = ctx.read("cloudwatch", "list_tags_for_resource", ResourceARN=arn)
    tag = {"ResourceARN": arn, "Tags": ctx.names.tags}
    ctx.claim(
        "alarm", name, tags.get("Tags"), lambda: ctx.write("cloudwatch", "tag_resource", **tag)
    )
    return alarms[0]


def _ensure_wake_alarm(ctx: Ctx, policy_arn: str, current: dict[str, Any] | None) -> None:
    spec = wake_alarm_spec(ctx, policy_arn)
    name = spec["AlarmName"]
    if current is not None and all(current.get(k) == v for k, v in spec.items()):
        ctx.say(f"alarm {name} unchanged")
        return
    ctx.write("cloudwatch", "put_metric_alarm", **spec, Tags=ctx.names.tags)
    ctx.say(f"{'updated' if current else 'created'} alarm {name} ({WAKE_METRIC})")


# ---- status and down ------------------------------------------------------------------------


def status_rows(ctx: Ctx, endpoint: dict[str, Any] | None) -> list[Shown]:
    """Data capture, and for an asynchronous endpoint its answers' places, instances,
    backlog scaling, wake alarm and topics (nothing to read for other endpoints)."""
    config = endpoint_config(ctx, endpoint) or {}
    rows: list[Shown] = []
    capture = config.get("DataCaptureConfig")
    if capture:
        state = "enabled" if capture.get("EnableCapture", True) else "disabled"
        detail = f"{capture['InitialSamplingPercentage']}% of requests and answers"
        rows.append(("data capture", capture["DestinationS3Uri"], state, detail, None))
    found = config.get("AsyncInferenceConfig")
    if found is None and not ctx.dry_run:
        return rows
    output = (found or {}).get("OutputConfig", {})
    at_once = (found or {}).get("ClientConfig", {}).get("MaxConcurrentInvocationsPerInstance")
    failures = f"failures in {output.get('S3FailurePath', '?')}"
    detail = f"{failures}; {at_once or '?'} at once per instance"
    rows.append(("async answers", output.get("S3OutputPath", "?"), "configured", detail, None))
    variants = (endpoint or {}).get("ProductionVariants", [])
    count = sum(v.get("CurrentInstanceCount", 0) for v in variants)
    idle = "scaled in: the next request waits for the wake alarm" if count == 0 else ""
    rows.append(("instances", ctx.names.endpoint, str(count), idle, None))
    rows += _scaling_rows(ctx)
    notified = output.get("NotificationConfig") or {}
    for arn in [notified[k] for k in ("SuccessTopic", "ErrorTopic") if k in notified]:
        tagged = _topic_tagged(ctx, arn)
        rows.append(("SNS topic", arn, None if tagged is None else "present", "", tagged))
    return rows


def _scaling_rows(ctx: Ctx) -> list[Shown]:
    n, names = ctx.names, _backlog_names(ctx)
    listed = _listed_policies(ctx, names)
    tracking = listed.get(n.backlog_tracking_policy, {})
    target = tracking.get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue")
    rows: list[Shown] = [
        ("scaling policy", names[0], "present" if tracking else None,
         f"target {target:g} requests waiting per instance" if target else "", None),
        ("scaling policy", names[1], "present" if n.backlog_policy in listed else None,
         "one instance more when requests wait with none", None),
    ]  # fmt: skip
    alarms = ctx.read("cloudwatch", "describe_alarms", AlarmNames=[n.backlog_alarm])
    ctx.would_read(
        "cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, n.backlog_alarm)
    )
    alarm = next(iter((alarms or {}).get("MetricAlarms", [])), None)
    state, tagged = (alarm["StateValue"], owned(ctx, alarm)) if alarm else (None, None)
    rows.append(("alarm", n.backlog_alarm, state, f"{WAKE_METRIC} >= 1", tagged))
    return rows


def _topic_tagged(ctx: Ctx, arn: str) -> bool | None:
    """Whether topic `arn` carries N's tag; None when there is no such topic."""
    found = ctx.find("sns", "get_topic_attributes", TopicArn=arn)
    ctx.would_read("sns", "list_tags_for_resource", ResourceArn=arn)
    if found is None:
        return None
    tags = ctx.read("sns", "list_tags_for_resource", ResourceArn=arn)
    return ctx.names.tagged(tags.get("Tags"))


def delete_policies(ctx: Ctx) -> None:
    """`aws down`, before the scalable target goes: N's two backlog policies, those listed."""
    _drop_policies(ctx, _backlog_names(ctx))


def delete_tagged(ctx: Ctx) -> list[str]:
    """`aws down`: the wake alarm and N's topics when they carry N's tag; the same-named
    ones it leaves."""
    n, left = ctx.names, []
    alarms = ctx.read("cloudwatch", "describe_alarms", AlarmNames=[n.backlog_alarm])
    ctx.would_read(
        "cloudwatch", "list_tags_for_resource", ResourceARN=alarm_arn(ctx, n.backlog_alarm)
    )
    found = (alarms or {}).get("MetricAlarms", [])
    if ctx.dry_run or (found and owned(ctx, found[0])):
        ctx.delete("cloudwatch", "delete_alarms", AlarmNames=[n.backlog_alarm])
    elif found:
        left.append(_left(ctx, "alarm", n.backlog_alarm))
    for arn in topic_arns(ctx):
        tagged = _topic_tagged(ctx, arn)
        if tagged or ctx.dry_run:
            ctx.delete("sns", "delete_topic", TopicArn=arn)
        elif tagged is False:
            left.append(_left(ctx, "SNS topic", arn))
    return left


def _left(ctx: Ctx, kind: str, name: str) -> str:
    ctx.say(f"left {kind} {name}: not tagged {TAG_KEY}={ctx.names.name}")
    return f"{kind} {name}"
