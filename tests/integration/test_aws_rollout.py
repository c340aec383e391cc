"""`aws deploy` alarms, serverless and rollout on moto's server; `aws down` removing the alarms.

State is checked with describe calls where moto keeps it (alarms, endpoint configs,
endpoints). moto has no UpdateEndpoint and drops EnableNetworkIsolation: those
requests are read from `--dry-run` and checked against botocore's model.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.validate import ParamValidator

from support.aws import ACCOUNT, REGION, use_moto
from support.cli import run_cli

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
SERVE_NEW = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:def5678"
MODEL_DATA = "s3://dogs-bucket/output/job/output/model.tar.gz"


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env = use_moto(moto_url, monkeypatch)
    config = tmp_path / "aws.json"
    config.write_text(json.dumps({"region": REGION}))
    return env, config


def aws(env_config, verb: str, *args: str, check: bool = True):
    env, config = env_config
    return run_cli("aws", verb, "--config", config, *args, env=env, check=check, timeout=300)


def deploy(env_config, name: str, *args: str, check: bool = True):
    return aws(
        env_config, "deploy", "--name", name, "--image", SERVE, "--model-data", MODEL_DATA,
        *args, check=check,
    )  # fmt: skip


def sent(output: str, operation: str) -> dict:
    """The parameters of `operation` as a --dry-run printed them."""
    return json.loads(output.split(f"{operation} ")[1].splitlines()[0])


def fits(service: str, op: str, params: dict) -> bool:
    model = boto3.client(service).meta.service_model.operation_model(op)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()
    return True


def unique() -> str:
    return f"Dog{uuid.uuid4().hex[:6]}"


def alarms_of(name: str) -> dict[str, dict]:
    names = [f"{name}-5xx-errors", f"{name}-model-latency"]
    found = boto3.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def test_deploy_makes_the_alarms_idempotently_and_down_deletes_them(aws_env):
    name, other = unique(), unique()
    first = deploy(aws_env, name).stdout
    assert f"created alarm {name}-5xx-errors" in first
    alarms = alarms_of(name)
    errors, latency = alarms[f"{name}-5xx-errors"], alarms[f"{name}-model-latency"]
    for alarm in (errors, latency):
        assert alarm["Namespace"] == "AWS/SageMaker" and alarm["Statistic"] == "Average"
        assert alarm["Dimensions"] == [
            {"Name": "EndpointName", "Value": name},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ]
        assert (alarm["Period"], alarm["EvaluationPeriods"]) == (60, 2)
        assert alarm["TreatMissingData"] == "notBreaching"
        tags = boto3.client("cloudwatch").list_tags_for_resource(ResourceARN=alarm["AlarmArn"])
        assert {"Key": "dogbreed:name", "Value": name} in tags["Tags"]
    assert (errors["MetricName"], errors["Threshold"]) == ("Invocation5XXErrors", 0.05)
    assert (latency["MetricName"], latency["Threshold"]) == ("ModelLatency", 500_000.0)

    again = deploy(aws_env, name, "--alarm-latency-ms", "250").stdout
    assert f"alarm {name}-5xx-errors unchanged" in again
    assert f"updated alarm {name}-model-latency" in again
    assert alarms_of(name)[f"{name}-model-latency"]["Threshold"] == 250_000.0

    deploy(aws_env, other)  # another deployment's alarms must survive `down`
    down = aws(aws_env, "down", "--name", name).stdout
    assert f"deleted: cloudwatch alarms {name}-5xx-errors, {name}-model-latency" in down
    assert "left in place: S3 objects" in down and "ECR repositories" in down
    assert alarms_of(name) == {} and len(alarms_of(other)) == 2
    assert "deleted" not in aws(aws_env, "down", "--name", name).stdout  # nothing left
    aws(aws_env, "down", "--name", other)


def test_a_same_named_alarm_of_someone_else_is_neither_taken_over_nor_deleted(aws_env):
    name = unique()
    cw = boto3.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName=f"{name}-5xx-errors",
        Namespace="Mine",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    proc = deploy(aws_env, name, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"alarm {name}-5xx-errors exists without the tag dogbreed:name={name}" in proc.stderr
    assert "--adopt" in proc.stderr
    down = aws(aws_env, "down", "--name", name).stdout
    assert f"left alarm {name}-5xx-errors: not tagged" in down
    assert alarms_of(name)[f"{name}-5xx-errors"]["Namespace"] == "Mine"
    cw.delete_alarms(AlarmNames=[f"{name}-5xx-errors"])


def test_serverless_deploy_autoscale_refusal_and_no_switch_from_instances(aws_env):
    name = unique()
    args = ["--serverless", "--memory-mb", "3072", "--max-concurrency", "7"]
    out = deploy(aws_env, name, *args).stdout
    assert f"created endpoint {name}" in out
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 7}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert endpoint["ProductionVariants"][0]["CurrentServerlessConfig"]["MemorySizeInMB"] == 3072
    assert deploy(aws_env, name, *args).stdout.count("unchanged") == 5
    # moto drops EnableNetworkIsolation: serverless endpoints do not support it.
    model = sent(deploy(aws_env, name, *args, "--dry-run").stdout, "sagemaker.create_model")
    assert model["EnableNetworkIsolation"] is False and model["ModelName"] == variant["ModelName"]

    scale = aws(aws_env, "autoscale", "--name", name, check=False)
    assert scale.returncode == 2 and scale.stderr.count("\n") == 1, scale.stderr
    assert "is serverless: SageMaker scales it by itself" in scale.stderr
    targets = boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{name}/variant/AllTraffic"]
    )
    assert targets["ScalableTargets"] == []

    instances = unique()
    deploy(aws_env, instances)
    configs_before = len(sm.list_endpoint_configs(NameContains=instances)["EndpointConfigs"])
    switch = deploy(aws_env, instances, "--serverless", check=False)
    assert switch.returncode == 2 and switch.stderr.count("\n") == 1, switch.stderr
    assert "cannot update it to serverless" in switch.stderr
    after = len(sm.list_endpoint_configs(NameContains=instances)["EndpointConfigs"])
    assert after == configs_before  # refused before creating anything
    for n in (name, instances):
        aws(aws_env, "down", "--name", n)


def test_a_redeploy_request_carries_blue_green_and_the_alarms_that_exist(aws_env):
    name = unique()
    deploy(aws_env, name, "--instance-count", "2")
    new = [
        "--name", name, "--image", SERVE_NEW, "--model-data", MODEL_DATA, "--instance-count",
        "2", "--canary-percent", "50", "--bake-minutes", "60", "--dry-run",
    ]  # fmt: skip
    out = aws(aws_env, "deploy", *new).stdout
    request = sent(out, "sagemaker.update_endpoint")
    assert fits("sagemaker", "UpdateEndpoint", request)
    policy = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    routing = policy["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["WaitIntervalInSeconds"] == 3600
    assert routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 50}
    assert policy["MaximumExecutionTimeoutInSeconds"] <= 28800
    rollback = request["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert set(alarms_of(name)) == {a["AlarmName"] for a in rollback}  # they exist
    assert (
        request["EndpointConfigName"]
        == sent(out, "sagemaker.create_endpoint_config")["EndpointConfigName"]
    )
    for alarm in out.split("cloudwatch.put_metric_alarm ")[1:]:
        assert fits("cloudwatch", "PutMetricAlarm", json.loads(alarm.splitlines()[0]))
    assert "canary 50% of 2 instances for 60 min" in out
    aws(aws_env, "down", "--name", name)
