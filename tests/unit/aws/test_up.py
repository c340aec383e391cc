"""`aws up` checked offline: its dry run prints the whole chain in order (each request
against botocore's model), the training step reuses, waits, reports a failed job and
retrains only when told (botocore's Stubber answers DescribeTrainingJob), and the cost
line comes from the price table of docs/aws/endpoint.md."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from dogbreed.aws import up
from dogbreed.aws.endpoint import DeployOptions, ScaleOptions, make_plan
from dogbreed.aws.functions import LambdaOptions
from dogbreed.aws.training import TrainOptions
from dogbreed.core.errors import AwsError
from support.aws import ACCOUNT, CONFIG, REGION, offline_ctx
from support.iam_check import run_verb, without_credentials

# The cost table `aws up` prices the endpoint from.
PRICES_PAGE = Path(__file__).resolve().parents[3] / "docs" / "aws" / "endpoint.md"
NAME = "Dogs"
TRAIN = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
# The chain's writes, in the order a first `up` sends them.
CHAIN = [
    "s3.put_object",
    "iam.create_role",
    "iam.put_role_policy",
    "sagemaker.create_training_job",
    "sagemaker.create_model",
    "sagemaker.create_endpoint_config",
    "cloudwatch.put_metric_alarm",
    "sagemaker.create_endpoint",
    "application-autoscaling.register_scalable_target",
    "application-autoscaling.put_scaling_policy",
    "lambda.create_function",
    "lambda.publish_version",
    "lambda.create_alias",
    "lambda.put_function_concurrency",
    "lambda.put_provisioned_concurrency_config",
    "lambda.create_function_url_config",
]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    (tmp_path / "aws.json").write_text(json.dumps(CONFIG))
    photo = tmp_path / "dogImages" / "train" / "akita" / "1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"\xff\xd8\xff\xd9")
    return tmp_path


def dry_up(tmp_path, *flags: str, data: str | None = None) -> tuple[str, list]:
    """`aws up --dry-run`: (its output, its recorded requests)."""
    ctx, error = run_verb(
        "up", "--name", NAME, "--config", str(tmp_path / "aws.json"), "--dry-run",
        "--data", data or str(tmp_path / "dogImages"), "--image-train", TRAIN,
        "--image-serve", SERVE, *flags,
    )  # fmt: skip
    assert error is None, error
    return ctx.out.getvalue(), ctx.requests


def printed(output: str) -> list[tuple[str, dict]]:
    """The requests a dry run printed: (service.operation, parameters), in order."""
    found = re.findall(r"^\s*\(dry run\) ([a-z0-9-]+\.[a-z_0-9]+) (\{.*\})$", output, re.M)
    return [(op, json.loads(params)) for op, params in found]


def fits(operation: str, params: dict) -> str:
    service, op = operation.split(".")
    client = boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    if "ZipFile" in json.dumps(params):  # the dry run elides the zip's bytes
        params = json.loads(json.dumps(params).replace('"<zip bytes>"', '"UEs="'))
        params["Code"] = {"ZipFile": b"PK"}
    shape = client.meta.service_model.operation_model(
        client.meta.method_to_api_mapping[op]
    ).input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


def test_the_dry_run_prints_the_whole_chain_in_order(offline):
    output, _ = dry_up(offline, "--verbose")  # every request printed, each upload's too
    steps = re.findall(r"^\[(\d)/8\] (\S+)", output, re.M)
    assert [int(k) for k, _ in steps] == list(range(1, 9))
    assert [w for _, w in steps] == [
        "data", "IAM", "training", "model", "endpoint", "autoscaling", "alarms", "Lambda",
    ]  # fmt: skip
    requests = printed(output)
    ops = [op for op, _ in requests]
    positions = [ops.index(op) for op in CHAIN]
    assert positions == sorted(positions), ops
    assert ops.count("iam.create_role") == 2 and ops.count("cloudwatch.put_metric_alarm") == 2
    # Each step's requests come after its own [k/8] header and before the next one.
    lines = output.splitlines()
    step_of = {}
    for i, line in enumerate(lines):
        match = re.match(r"^\s*\(dry run\) (\S+) \{", line)
        if match:
            step_of.setdefault(match.group(1), sum(x.startswith("[") for x in lines[:i]))
    assert step_of["s3.put_object"] == 1 and step_of["iam.create_role"] == 2
    assert step_of["sagemaker.create_training_job"] == 3
    assert step_of["sagemaker.create_endpoint"] == 5
    assert step_of["application-autoscaling.register_scalable_target"] == 6
    assert step_of["lambda.create_function_url_config"] == 8
    for op, params in requests:
        assert fits(op, params) == "", (op, fits(op, params))
    assert "dry run of deployment Dogs: nothing changed" in output
    assert "$0.115 an hour" in output and up.PRICES_AS_OF in output


def test_the_chain_deploys_the_model_its_own_training_job_makes(offline):
    output, _ = dry_up(offline)
    sent = dict(printed(output))
    job = sent["sagemaker.create_training_job"]
    # The same request as `aws train` with the same settings: the same job, reused by both.
    alone, _ = run_verb(
        "train", "--name", NAME, "--config", str(offline / "aws.json"), "--image", TRAIN,
        "--dry-run",
    )  # fmt: skip
    assert job["TrainingJobName"] in alone.out.getvalue()
    model = sent["sagemaker.create_model"]["PrimaryContainer"]
    assert model["Image"] == SERVE
    assert model["ModelDataUrl"] == (
        f"{CONFIG['output']}/{NAME}/{job['TrainingJobName']}/output/model.tar.gz"
    )
    assert job["AlgorithmSpecification"]["TrainingImage"] == TRAIN
    env = sent["lambda.create_function"]["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == NAME and "MAX_IMAGE_BYTES" not in env


def test_a_serverless_chain_has_no_autoscaling_and_caps_the_lambdas_payload(offline):
    output, requests = dry_up(offline, "--serverless", "--memory-mb", "3072")
    ops = [op for op, _ in printed(output)]
    assert not [op for op in ops if op.startswith("application-autoscaling.")]
    assert not [r for r in requests if r.service == "application-autoscaling"]
    assert "[6/8] autoscaling\n    -> autoscaling: none (serverless" in output
    sent = dict(printed(output))
    variant = sent["sagemaker.create_endpoint_config"]["ProductionVariants"][0]
    assert variant["ServerlessConfig"]["MemorySizeInMB"] == 3072
    env = sent["lambda.create_function"]["Environment"]["Variables"]
    assert env["MAX_IMAGE_BYTES"] == "4194304"
    assert "$0 an hour idle" in output


def test_s3_data_is_checked_not_uploaded(offline):
    output, requests = dry_up(offline, data="s3://other-bucket/sets/dogs")
    assert "s3.put_object" not in output
    listing = [r for r in requests if r.operation == "list_objects_v2"]
    assert listing[0].params == {"Bucket": "other-bucket", "Prefix": "sets/dogs/", "MaxKeys": 1}
    job = dict(printed(output))["sagemaker.create_training_job"]
    channel = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert channel["S3Uri"] == "s3://other-bucket/sets/dogs"


def test_bad_settings_stop_up_before_any_request(offline):
    ctx, error = run_verb(
        "up", "--name", NAME, "--config", str(offline / "aws.json"), "--dry-run",
        "--data", str(offline / "dogImages"), "--image-train", TRAIN, "--image-serve", SERVE,
        "--serverless", "--memory-mb", "1000",
    )  # fmt: skip
    assert "serverless memory" in str(error) and ctx.requests == []
    _, error = run_verb(
        "up", "--name", NAME, "--config", str(offline / "aws.json"), "--dry-run",
        "--data", str(offline / "nowhere"), "--image-train", TRAIN, "--image-serve", SERVE,
    )  # fmt: skip
    assert "neither a directory nor an s3:// URI" in str(error)


def test_up_refuses_an_async_config_before_any_request(offline):
    config = {**CONFIG, "deploy": {**CONFIG.get("deploy", {}), "async": True}}
    (offline / "async.json").write_text(json.dumps(config))
    ctx, error = run_verb(
        "up", "--name", NAME, "--config", str(offline / "async.json"), "--dry-run",
        "--data", str(offline / "dogImages"), "--image-train", TRAIN, "--image-serve", SERVE,
    )  # fmt: skip
    assert "deploy.async is true: aws up builds a real-time or serverless" in str(error)
    assert "aws deploy --async" in str(error) and ctx.requests == []


# ---- the training step ---------------------------------------------------------------------


def job(name: str, status: str, reason: str | None = None) -> dict:
    """A DescribeTrainingJob answer."""
    answer = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/output/dogs/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": "2026-01-01",
    }
    if reason:
        answer["FailureReason"] = reason
    return answer


def options(retrain: bool = False) -> up.UpOptions:
    return up.UpOptions(
        "s3://b/dogImages",
        TrainOptions(TRAIN),
        DeployOptions(SERVE, ""),
        ScaleOptions(),
        LambdaOptions(),
        retrain=retrain,
    )


def names(ctx) -> list[str]:
    """The first three attempts' job names of `options()`'s request."""
    from dogbreed.aws.training import resolve, training_job_request

    request = training_job_request(ctx, resolve(ctx, options().train))
    return [up.attempt_name(ctx, request, k) for k in range(3)]


def training_ctx():
    ctx, client = offline_ctx("sagemaker")
    ctx.out = io.StringIO()
    return ctx, client


def missing(stub: Stubber) -> None:
    stub.add_client_error(
        "describe_training_job", "ValidationException", "Requested resource not found"
    )


def test_a_completed_job_is_reused():
    ctx, client = training_ctx()
    first = names(ctx)[0]
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", job(first, "Completed"))
        missing(stub)
        (name, described), line = up.ensure_training(ctx, options())
        stub.assert_no_pending_responses()
    assert name == first and described["TrainingJobStatus"] == "Completed"
    assert line == f"training job {first}: Completed (reused)"


def test_a_failed_job_is_reported_with_its_reason_and_not_retried():
    ctx, client = training_ctx()
    first = names(ctx)[0]
    with Stubber(client) as stub:  # a CreateTrainingJob here would fail: nothing stubbed
        stub.add_response("describe_training_job", job(first, "Failed", "AlgorithmError: OOM"))
        missing(stub)
        with pytest.raises(AwsError) as err:
            up.ensure_training(ctx, options())
        stub.assert_no_pending_responses()
    assert f"training job {first} Failed: AlgorithmError: OOM" in str(err.value)
    assert "--retrain" in str(err.value)


def test_retrain_starts_the_next_attempt_and_a_rerun_reuses_it():
    ctx, client = training_ctx()
    first, second, third = names(ctx)
    assert len({first, second, third}) == 3
    assert all(re.fullmatch(r"dogs-[0-9a-f]{8}", n) for n in (first, second, third))
    created: dict = {}
    client.meta.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob",
        lambda params, **_: created.update(params),
    )
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", job(first, "Failed", "AlgorithmError: OOM"))
        missing(stub)
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:x"})
        stub.add_response("describe_training_job", job(second, "Completed"))  # the wait
        (name, _), line = up.ensure_training(ctx, options(retrain=True))
        stub.assert_no_pending_responses()
    assert name == second and created["TrainingJobName"] == second
    assert line == f"training job {second}: Completed (created: retraining after {first} Failed)"
    # Same checkpoints as the failed attempt: the new job resumes from them.
    checkpoint = created["CheckpointConfig"]["S3Uri"]
    assert checkpoint.startswith("s3://my-dogbreed-bucket/checkpoints/dogs/")

    with Stubber(client) as stub:  # the rerun, no --retrain: the latest attempt counts
        stub.add_response("describe_training_job", job(first, "Failed", "AlgorithmError: OOM"))
        stub.add_response("describe_training_job", job(second, "Completed"))
        missing(stub)
        (name, _), line = up.ensure_training(ctx, options())
        stub.assert_no_pending_responses()
    assert name == second and line.endswith("Completed (reused)")


def test_a_running_job_is_waited_for():
    ctx, client = training_ctx()
    first = names(ctx)[0]
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", job(first, "InProgress"))
        missing(stub)
        stub.add_response("describe_training_job", job(first, "Completed"))
        (name, _), line = up.ensure_training(ctx, options())
        stub.assert_no_pending_responses()
    assert name == first and line == f"training job {first}: Completed (InProgress when found)"


# ---- what it costs -------------------------------------------------------------------------


def docs_prices() -> dict[str, float]:
    """Instance type -> the per-hour price of the docs' cost table."""
    rows = re.findall(
        r"^\| `(ml\.[a-z0-9.]+)`[^|]*\|[^|]*\| \$([0-9.]+) \|", PRICES_PAGE.read_text(), re.M
    )
    return {kind: float(price) for kind, price in rows}


def test_the_price_table_is_the_docs_and_dated():
    assert docs_prices() == up.INSTANCE_PER_HOUR
    assert f"as of {up.PRICES_AS_OF}" in PRICES_PAGE.read_text()
    assert "$0.144 per busy hour" in PRICES_PAGE.read_text()


def test_the_cost_line():
    ctx, _ = offline_ctx("sagemaker")
    plan = make_plan(ctx, DeployOptions(SERVE, "", "ml.c6i.large", instance_count=2))
    per_hour, line = up.hourly_cost(plan, scale_max=4)
    assert per_hour == pytest.approx(0.204)
    assert "$0.204 an hour" in line and "2 x ml.c6i.large" in line and up.PRICES_AS_OF in line
    assert "up to $0.408 an hour scaled out to 4" in line
    serverless = make_plan(ctx, DeployOptions(SERVE, "", serverless=True))
    per_hour, line = up.hourly_cost(serverless)
    assert per_hour == 0.0 and "$0 an hour idle, $0.144 per busy hour" in line
    unknown = make_plan(ctx, DeployOptions(SERVE, "", "ml.p5.48xlarge"))
    assert up.hourly_cost(unknown)[0] is None
    assert "no price on record for ml.p5.48xlarge" in up.hourly_cost(unknown)[1]
