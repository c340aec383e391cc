"""An asynchronous endpoint on moto's server (real HTTP on loopback): `aws deploy --async
--notify --capture-percent`, `aws autoscale` to zero, `aws invoke --async`, `aws status`
and `aws down`, checked by describe calls.

moto answers InvokeEndpointAsync from a queue the test fills through its
/moto-api/static/sagemaker/async-endpoint-results hook, and writes that answer (or the
failure's text) to S3 as SageMaker would: the CLI then finds it by HeadObject.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
import requests

from support.aws import ACCOUNT, REGION, aws, moto_env

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
BUCKET = "dogs-bucket"
CONFIG = {
    "region": REGION,
    "data": f"s3://{BUCKET}/dogImages",
    "output": f"s3://{BUCKET}/output",
    "checkpoints": f"s3://{BUCKET}/checkpoints",
}
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 64 + b"\xff\xd9"
TAGGED = {"Key": "dogbreed:name"}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env_config = moto_env(moto_url, monkeypatch, tmp_path, CONFIG)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return env_config


def queue_async_answer(moto_url: str, data: str, failure: bool = False) -> None:
    """The next InvokeEndpointAsync answer moto gives (and writes to S3)."""
    results = {"results": [{"data": data, "is_failure": failure}]}
    answer = requests.post(
        f"{moto_url}/moto-api/static/sagemaker/async-endpoint-results", json=results, timeout=10
    )
    answer.raise_for_status()


def test_deploy_async_notify_invoke_status_down(aws_env, moto_url, tmp_path):
    name = f"Dog{uuid.uuid4().hex[:6]}"
    deploy = ["deploy", "--name", name, "--image", SERVE, "--model-data", "s3://b/m.tar.gz"]
    deploy += ["--async", "--notify", "--capture-percent", "10"]
    # --notify needs the execution role's publish grant: refused until `aws iam` ran.
    refused = aws(aws_env, *deploy, check=False)
    assert refused.returncode == 2 and "reruns `dogbreed aws iam" in refused.stderr
    assert "created" not in refused.stdout
    aws(aws_env, "iam", "--name", name)
    first = aws(aws_env, *deploy).stdout
    assert (
        f"created SNS topic {name}-async-success" in first and f"created endpoint {name}" in first
    )
    again = aws(aws_env, *deploy).stdout
    assert "created" not in again and f"SNS topic {name}-async-error unchanged" in again
    # Neither a real-time redeploy nor a Lambda front door: refused before any change.
    for refused in (aws(aws_env, *deploy[:7], check=False),
                    aws(aws_env, "lambda", "--name", name, check=False)):  # fmt: skip
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "is asynchronous" in refused.stderr and "created" not in refused.stdout

    sm, sns = boto3.client("sagemaker"), boto3.client("sns")
    endpoint = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    prefix = f"s3://{BUCKET}/output/{name}"
    assert output["S3OutputPath"] == f"{prefix}/async/output"
    assert output["S3FailurePath"] == f"{prefix}/async/failure"
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {
        "MaxConcurrentInvocationsPerInstance": 2
    }
    topics = [f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}-async-{k}" for k in ("success", "error")]
    assert [output["NotificationConfig"][k] for k in ("SuccessTopic", "ErrorTopic")] == topics
    for arn in topics:
        tags = sns.list_tags_for_resource(ResourceArn=arn)["Tags"]
        assert {**TAGGED, "Value": name} in tags
    capture = config["DataCaptureConfig"]
    assert (capture["DestinationS3Uri"], capture["InitialSamplingPercentage"]) == (
        f"{prefix}/capture",
        10,
    )
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    env = model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == env["DOGBREED_JOB_QUEUE"] == "2"

    scale = aws(aws_env, "autoscale", "--name", name).stdout  # async: found by itself
    assert "(0-2 instances: none when idle)" in scale
    aas = boto3.client("application-autoscaling")
    resource = f"endpoint/{name}/variant/AllTraffic"
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
    by_name = {p["PolicyName"]: p for p in policies["ScalingPolicies"]}
    tracking = by_name[f"{name}-backlog-per-instance"]["TargetTrackingScalingPolicyConfiguration"]
    metric = tracking["CustomizedMetricSpecification"]
    assert (metric["MetricName"], tracking["TargetValue"]) == (
        "ApproximateBacklogSizePerInstance",
        5,
    )
    step = by_name[f"{name}-backlog-without-capacity"]
    alarm = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=[f"{name}-backlog-without-capacity"]
    )["MetricAlarms"][0]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]
    assert aws(aws_env, "autoscale", "--name", name).stdout.count("unchanged") == 4

    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    queue_async_answer(moto_url, json.dumps({"label": "Akita", "index": 3, "score": 0.9}))
    answer = aws(aws_env, "invoke", str(image), "--name", name, "--async", "--timeout", "60")
    assert answer.stdout.strip().endswith(f"{image}: Akita (index 3, p=0.900)"), answer.stdout
    uploaded = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"output/{name}/async/")
    keys = [o["Key"] for o in uploaded.get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith(f"output/{name}/async/input/"), keys
    queue_async_answer(moto_url, "model failed: out of memory", failure=True)
    image.write_bytes(JPEG + b"\0")  # another request: another InputLocation
    failed = aws(aws_env, "invoke", str(image), "--name", name, "--async", check=False)
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1, failed.stderr
    assert "model failed: out of memory" in failed.stderr

    status = aws(aws_env, "status", "--name", name, "--json").stdout
    rows = {(r["resource"], r["name"]): r for r in json.loads(status)["resources"]}
    assert rows["async answers", f"{prefix}/async/output"]["state"] == "configured"
    assert rows["alarm", f"{name}-backlog-without-capacity"]["tagged"] is True
    assert rows["SNS topic", topics[0]]["state"] == "present"
    assert rows["data capture", f"{prefix}/capture"]["detail"].startswith("10%")

    down = aws(aws_env, "down", "--name", name, "--keep-roles").stdout
    assert f"deleted: sns topic {topics[1]}" in down
    listed = {t["TopicArn"] for t in sns.list_topics()["Topics"]}
    assert not set(topics) & listed
    assert not aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)[
        "ScalingPolicies"
    ]
    assert "asynchronous requests, answers and captured data" in down
