"""`aws deploy` requests checked offline: rollout, alarms and serverless against botocore's models.

moto has no UpdateEndpoint: the blue/green request is answered by botocore's Stubber here
(which validates every request against the service model) and checked field by field.
"""

from __future__ import annotations

import io
import re

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from dogbreed.aws.alarms import Thresholds, alarm_specs
from dogbreed.aws.endpoint import DeployOptions, ScaleOptions, cmd_autoscale, cmd_deploy, make_plan
from dogbreed.aws.rollout import Rollout, deployment_config, execution_timeout_s
from dogbreed.core.errors import AwsError, ConfigError
from support.aws import ACCOUNT, REGION, offline_ctx
from support.cli import run_cli

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
MODEL_DATA = "s3://b/model.tar.gz"
ALARMS = ["dogs-5xx-errors", "dogs-model-latency"]
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/dogs"
TAGGED = [{"Key": "dogbreed:name", "Value": "dogs"}]


def client(service: str):
    return boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )


def input_errors(service: str, op: str, params: dict) -> str:
    """botocore's own validation of a request ('' when it fits the model)."""
    shape = client(service).meta.service_model.operation_model(op).input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


def endpoint(config: str, status: str = "InService", **extra) -> dict:
    return {
        "EndpointName": "dogs",
        "EndpointArn": ARN,
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": "2026-01-01",
        "LastModifiedTime": "2026-01-01",
        **extra,
    }


INSTANCES = [{"VariantName": "AllTraffic", "CurrentInstanceCount": 2}]
SERVERLESS = [
    {
        "VariantName": "AllTraffic",
        "CurrentServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
    }
]


def new_config_name(opts: DeployOptions) -> str:
    """The endpoint config a deploy of `opts` makes, as its dry run names it."""
    ctx, _ = offline_ctx("sagemaker")
    ctx.dry_run, ctx.out = True, io.StringIO()
    cmd_deploy(ctx, opts)
    return re.search(r"created endpoint config (\S+)", ctx.out.getvalue()).group(1)


def running_config(live: dict) -> dict:
    """DescribeEndpointConfig of the config a live endpoint runs: a real-time one."""
    name = live["EndpointConfigName"]
    variants = [{"VariantName": "AllTraffic", "ModelName": "m"}]
    return {"EndpointConfigName": name, "EndpointConfigArn": ARN, "CreationTime": 0,
            "ProductionVariants": variants}  # fmt: skip


def stubbed_deploy(opts: DeployOptions, live: dict, after: dict | None):
    """cmd_deploy against a live endpoint; returns (output, UpdateEndpoint params or None)."""
    ctx, sm = offline_ctx("sagemaker")
    cw = ctx._clients["cloudwatch"] = client("cloudwatch")
    ctx.out = io.StringIO()
    sent: dict = {}
    sm.meta.events.register(
        "provide-client-params.sagemaker.UpdateEndpoint", lambda params, **_: sent.update(params)
    )
    with Stubber(sm) as s, Stubber(cw) as c:
        s.add_response("describe_endpoint", live)
        s.add_response("describe_endpoint_config", running_config(live))  # real-time
        s.add_response("list_tags", {"Tags": TAGGED})  # N's endpoint
        s.add_response("describe_model", {"ModelName": "m", "ModelArn": ARN, "CreationTime": 0})
        s.add_response("list_tags", {"Tags": TAGGED})
        s.add_client_error("describe_endpoint_config", "ValidationException", "Could not find")
        s.add_response("create_endpoint_config", {"EndpointConfigArn": ARN})
        c.add_response("describe_alarms", {"MetricAlarms": []})
        c.add_response("put_metric_alarm", {})
        c.add_response("put_metric_alarm", {})
        if after is not None:
            s.add_response("update_endpoint", {"EndpointArn": ARN})
            s.add_response("describe_endpoint", after)
        try:
            cmd_deploy(ctx, opts)
        finally:
            output = ctx.out.getvalue()
        s.assert_no_pending_responses()
    return output, sent or None


def test_a_redeploy_is_blue_green_with_a_canary_that_rolls_back_on_the_alarms():
    opts = DeployOptions(SERVE, MODEL_DATA, wait_s=5, instance_count=2, canary_percent=20)
    config = new_config_name(opts)
    live = endpoint("dogs-0000aaaa", ProductionVariants=INSTANCES)
    out, sent = stubbed_deploy(opts, live, endpoint(config))
    policy = sent["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
        "WaitIntervalInSeconds": 600,  # the default 10-minute bake
    }
    assert policy["TerminationWaitInSeconds"] == 600
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800
    assert policy["MaximumExecutionTimeoutInSeconds"] > 2 * 600
    assert sent["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": a} for a in ALARMS]
    }
    assert sent["EndpointConfigName"] == config
    assert input_errors("sagemaker", "UpdateEndpoint", sent) == ""
    assert "canary 20% of 2 instances for 10 min" in out and "dogs-5xx-errors" in out


def test_a_rolled_back_update_is_an_error_naming_the_config_it_kept():
    opts = DeployOptions(SERVE, MODEL_DATA, wait_s=5, instance_count=2)
    live = endpoint("dogs-0000aaaa", ProductionVariants=INSTANCES)
    after = endpoint("dogs-0000aaaa", FailureReason="alarm dogs-5xx-errors in ALARM")
    with pytest.raises(AwsError, match=r"rolled back to dogs-0000aaaa: alarm dogs-5xx-errors"):
        stubbed_deploy(opts, live, after)


def test_from_serverless_the_update_is_all_at_once():
    opts = DeployOptions(SERVE, MODEL_DATA, wait_s=5, serverless=True, memory_mb=3072)
    config = new_config_name(opts)
    live = endpoint("dogs-0000aaaa", ProductionVariants=SERVERLESS)
    out, sent = stubbed_deploy(opts, live, endpoint(config))
    assert sent == {"EndpointName": "dogs", "EndpointConfigName": config}
    assert "all at once (serverless" in out


@pytest.mark.parametrize(
    ("live", "error", "says"),
    [
        (endpoint("dogs-0000aaaa", "Updating"), AwsError, "is Updating: deploy again once"),
        (endpoint("dogs-0000aaaa", "Failed", FailureReason="ping"), AwsError, "Failed (ping)"),
        (
            endpoint("dogs-0000aaaa", ProductionVariants=INSTANCES),
            ConfigError,
            "cannot update it to serverless",
        ),
    ],
)
def test_an_endpoint_that_cannot_take_the_update_is_one_line(live, error, says):
    serverless = error is ConfigError
    opts = DeployOptions(SERVE, MODEL_DATA, wait_s=5, serverless=serverless or None)
    with pytest.raises(error, match=re.escape(says)):
        stubbed_deploy(opts, live, None)


def test_one_instance_cannot_hold_a_canary_the_update_shifts_all_at_once():
    config = deployment_config(Rollout(25, 10), 1, ALARMS)
    routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}
    assert config["AutoRollbackConfiguration"]["Alarms"][0] == {"AlarmName": ALARMS[0]}


@pytest.mark.parametrize(
    ("percent", "minutes", "count"), [(1, 0, 2), (50, 60, 2), (25, 10, 1), (10, 1, 8)]
)
def test_every_accepted_rollout_fits_the_service_model(percent, minutes, count):
    params = {
        "EndpointName": "dogs",
        "EndpointConfigName": "dogs-12345678",
        "DeploymentConfig": deployment_config(Rollout(percent, minutes), count, ALARMS),
    }
    assert input_errors("sagemaker", "UpdateEndpoint", params) == ""
    waits = 2 * minutes * 60
    assert execution_timeout_s(Rollout(percent, minutes)) > waits


def test_the_alarms_fit_the_cloudwatch_model():
    ctx, _ = offline_ctx("sagemaker")
    for spec in alarm_specs(ctx, Thresholds(0.05, 500, 2)):
        assert input_errors("cloudwatch", "PutMetricAlarm", spec) == ""
        dims = {d["Name"]: d["Value"] for d in spec["Dimensions"]}
        assert dims == {"EndpointName": "dogs", "VariantName": "AllTraffic"}
        assert spec["Namespace"] == "AWS/SageMaker"
    errors, latency = alarm_specs(ctx, Thresholds(0.05, 500, 2))
    assert (errors["MetricName"], errors["Threshold"]) == ("Invocation5XXErrors", 0.05)
    assert (latency["MetricName"], latency["Threshold"]) == ("ModelLatency", 500_000.0)  # µs


def test_serverless_settings_fit_the_service_model():
    ctx, _ = offline_ctx("sagemaker")
    plan = make_plan(ctx, DeployOptions(SERVE, MODEL_DATA, serverless=True, max_concurrency=200))
    variant = {"VariantName": "AllTraffic", "ModelName": "dogs-12345678", **plan.capacity}
    request = {"EndpointConfigName": "dogs-12345678", "ProductionVariants": [variant]}
    assert input_errors("sagemaker", "CreateEndpointConfig", request) == ""
    assert plan.capacity == {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 200}}


@pytest.mark.parametrize(
    ("opts", "named"),
    [
        ({"canary_percent": 0}, "canary percent (--canary-percent"),
        ({"canary_percent": 51}, "from 1 to 50"),
        ({"bake_minutes": 61}, "bake minutes (--bake-minutes"),
        ({"bake_minutes": -1}, "from 0 to 60"),
        ({"serverless": True, "memory_mb": 1500}, "one of 1024, 2048, 3072, 4096, 5120, 6144"),
        ({"serverless": True, "memory_mb": 7168}, "serverless memory (--memory-mb"),
        ({"serverless": True, "max_concurrency": 201}, "from 1 to 200"),
        ({"serverless": True, "instance_type": "ml.c6i.large"}, "takes no --instance-type"),
        ({"instance_count": 0}, "instance count (--instance-count"),
        ({"error_rate": 1.5}, "alarm error rate"),
        ({"latency_ms": 0}, "alarm latency"),
    ],
)
def test_bad_deploy_settings_are_refused_before_any_call(opts, named):
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm), pytest.raises(ConfigError, match=re.escape(named)):  # no call answered
        cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, **opts))


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(
        "aws", "deploy", "--name", "dogs", "--image", SERVE, "--model-data", MODEL_DATA,
        "--region", REGION, "--dry-run", "--canary-percent", "75",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "canary percent" in proc.stderr, proc.stderr


def test_autoscale_on_a_serverless_endpoint_says_why_not():
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", endpoint("dogs-1", ProductionVariants=SERVERLESS))
        s.add_response("list_tags", {"Tags": TAGGED})
        with pytest.raises(ConfigError, match=r"is serverless: SageMaker scales it by itself"):
            cmd_autoscale(ctx, ScaleOptions())
