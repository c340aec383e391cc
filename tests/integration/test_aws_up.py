"""`aws up`, `aws status` and `aws down` against moto's server (real HTTP on loopback),
state checked with describe/get calls. moto completes a training job as soon as it is
created and has no provisioned-concurrency call (`--provisioned 0` here; the request is
checked against botocore's model in tests/unit/aws/test_up.py)."""

from __future__ import annotations

import json
import re
import uuid

import boto3
import pytest

from support.aws import ACCOUNT, REGION, use_moto
from support.cli import run_cli

TRAIN = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
BUCKET = "up-bucket"
CONFIG = {
    "region": REGION,
    "data": f"s3://{BUCKET}/dogImages",
    "output": f"s3://{BUCKET}/output",
    "checkpoints": f"s3://{BUCKET}/checkpoints",
}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env = use_moto(moto_url, monkeypatch)
    config = tmp_path / "aws.json"
    config.write_text(json.dumps(CONFIG))
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return env, config


def aws(env_config, verb: str, *args: str, check: bool = True):
    env, config = env_config
    return run_cli("aws", verb, "--config", config, *args, env=env, check=check, timeout=300)


def aws_up(env_config, name: str, data, *flags: str, check: bool = True):
    return aws(
        env_config, "up", "--name", name, "--data", str(data), "--image-train", TRAIN,
        "--image-serve", SERVE, "--provisioned", "0", *flags, check=check,
    )  # fmt: skip


def unique() -> str:
    return f"Up{uuid.uuid4().hex[:6]}"  # upper case on purpose: SageMaker ARNs are lower


def steps(output: str) -> list[str]:
    """Each step's outcome as `[k/8] outcome`: its header comes first, its own lines
    indented under it, and the outcome last (`    -> outcome`)."""
    found, step = [], None
    for line in output.splitlines():
        header = re.match(r"^\[(\d)/8\] ", line)
        if header:
            step = header.group(1)
        elif step and line.startswith("    -> "):
            found.append(f"[{step}/8] {line.removeprefix('    -> ')}")
            step = None
    return found


def test_up_then_a_rerun_reuses_everything_status_shows_it_and_down_removes_it(aws_env, tiny_data):
    name = unique()
    files = len([p for p in tiny_data.rglob("*") if p.is_file()])
    first = aws_up(aws_env, name, tiny_data).stdout
    lines = steps(first)
    assert [line[:5] for line in lines] == [f"[{k}/8]" for k in range(1, 9)], first
    assert f"{files} file(s) sent" in lines[0]
    job = re.search(r"training job (\S+): Completed \(created\)", lines[2]).group(1)
    assert lines[4] == f"[5/8] endpoint {name}: InService (1 x ml.m5.large)"
    lam = boto3.client("lambda")
    url = lam.get_function_url_config(FunctionName=name, Qualifier="live")["FunctionUrl"]
    assert f"front door  {url}" in first and "$0.115 an hour" in first

    # State, by describe calls: the whole chain is there and N's.
    sm = boto3.client("sagemaker")
    described = sm.describe_training_job(TrainingJobName=job)
    assert described["AlgorithmSpecification"]["TrainingImage"] == TRAIN
    assert (
        described["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (CONFIG["data"])
    )
    endpoint = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    artifacts = described["ModelArtifacts"]["S3ModelArtifacts"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifacts
    assert lines[3] == f"[4/8] model version 1 of {name} (PendingManualApproval): {artifacts}"
    assert model["PrimaryContainer"]["Image"] == SERVE
    tag = {"Key": "dogbreed:name", "Value": name}
    assert tag in sm.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"]
    aas = boto3.client("application-autoscaling")
    resource = f"endpoint/{name}/variant/AllTraffic"
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
    assert len(targets["ScalableTargets"]) == 1
    alarms = boto3.client("cloudwatch").describe_alarms(
        AlarmNames=[f"{name}-5xx-errors", f"{name}-model-latency"]
    )
    assert len(alarms["MetricAlarms"]) == 2
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"

    # A rerun continues where the last stopped: here nothing is left to do.
    again = aws_up(aws_env, name, tiny_data).stdout
    assert "created" not in again and "updated" not in again and "published" not in again
    assert "every file there already" in steps(again)[0]
    assert steps(again)[2] == f"[3/8] training job {job}: Completed (reused)"
    assert len(sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]) == 1

    table = aws(aws_env, "status", "--name", name).stdout.splitlines()
    assert table[0].split() == ["RESOURCE", "NAME", "STATE", "DETAIL"]
    row = {(line.split()[0], line.split()[1]): line for line in table[1:] if line.strip()}
    assert "Completed" in row[("training", "job")] and job in row[("training", "job")]
    assert f"{name}  " in row[("endpoint", name)] and "InService" in row[("endpoint", name)]
    assert "1 instances" in row[("endpoint", name)]
    assert "NOT TAGGED" not in "\n".join(table)
    status = json.loads(aws(aws_env, "status", "--name", name, "--json").stdout)
    assert status["name"] == name
    by_kind: dict[str, list] = {}
    for item in status["resources"]:
        by_kind.setdefault(item["resource"], []).append(item)
    assert [r["state"] for r in by_kind["role"]] == ["present", "present"]
    assert by_kind["training job"][0] == {**by_kind["training job"][0], "name": job}
    assert by_kind["endpoint"][0]["state"] == "InService" and by_kind["endpoint"][0]["tagged"]
    assert by_kind["endpoint config"][0]["detail"] == "1 x ml.m5.large"
    assert artifacts in by_kind["model"][0]["detail"]
    assert by_kind["scalable target"][0]["detail"] == "1-2 instances"
    assert by_kind["scaling policy"][0]["state"] == "present"
    assert [a["state"] for a in by_kind["alarm"]] != [] and len(by_kind["alarm"]) == 2
    assert all(a["state"] != "missing" for a in by_kind["alarm"])
    assert by_kind["function"][0]["tagged"] is True
    assert by_kind["alias"][0]["detail"] == "version 1"
    assert by_kind["function URL"][0] == {
        "resource": "function URL",
        "name": url,
        "state": "present",
        "detail": "auth AWS_IAM",
        "tagged": None,
    }

    # `down` deletes only what carries N's tag: untag the function, as if someone else's.
    function_arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    lam.untag_resource(Resource=function_arn, TagKeys=["dogbreed:name"])
    other = unique()  # another deployment survives
    boto3.client("iam").create_role(
        RoleName=f"{other}-lambda", AssumeRolePolicyDocument="{}", Tags=[tag | {"Value": other}]
    )
    down = aws(aws_env, "down", "--name", name).stdout
    assert f"left function {name} and its log group" in down
    assert f"not N's (no tag dogbreed:name={name}): function {name}" in down
    assert sm.list_endpoints(NameContains=name)["Endpoints"] == []
    assert sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"] == []
    # N's models are N-<digest>: match them exactly (a substring may be another test's).
    models = sm.list_models(NameContains=name)["Models"]
    assert [m for m in models if m["ModelName"].startswith(f"{name}-")] == []
    assert (
        aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])[
            "ScalableTargets"
        ]
        == []
    )
    assert (
        aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)[
            "ScalingPolicies"
        ]
        == []
    )
    assert (
        boto3.client("cloudwatch").describe_alarms(
            AlarmNames=[f"{name}-5xx-errors", f"{name}-model-latency"]
        )["MetricAlarms"]
        == []
    )
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert not {f"{name}-lambda", f"{name}-sagemaker-execution"} & roles
    assert f"{other}-lambda" in roles
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    after = json.loads(aws(aws_env, "status", "--name", name, "--json").stdout)["resources"]
    present = {(r["resource"], r["name"]) for r in after if r["state"] != "missing"}
    assert present == {
        ("training job", job),  # SageMaker keeps job records
        ("model package group", name),  # and down leaves the registry, a record too
        ("model version", f"{name}/1"),
        ("function", name),
        ("alias", f"{name}:live"),
        ("function URL", url),
    }
    assert "deleted" not in aws(aws_env, "down", "--name", name).stdout
    lam.delete_function(FunctionName=name)
    boto3.client("iam").delete_role(RoleName=f"{other}-lambda")


def test_up_on_a_serverless_endpoint_caps_the_lambda_and_skips_autoscaling(aws_env, tiny_data):
    name = unique()
    boto3.client("s3").upload_file(
        str(next(p for p in tiny_data.rglob("*.jpg"))), BUCKET, "sets/tiny/a/1.jpg"
    )
    out = aws_up(aws_env, name, f"s3://{BUCKET}/sets/tiny", "--serverless").stdout
    assert f"[1/8] data s3://{BUCKET}/sets/tiny: in S3" in steps(out)
    assert steps(out)[5].startswith("[6/8] autoscaling: none (serverless")
    assert "$0 an hour idle" in out
    env = boto3.client("lambda").get_function_configuration(FunctionName=name)["Environment"]
    assert env["Variables"]["MAX_IMAGE_BYTES"] == "4194304"
    # `aws lambda` on its own reads the endpoint's kind and keeps the cap.
    alone = aws(aws_env, "lambda", "--name", name, "--provisioned", "0").stdout
    assert "updated configuration" not in alone
    targets = boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{name}/variant/AllTraffic"]
    )
    assert targets["ScalableTargets"] == []
    status = json.loads(aws(aws_env, "status", "--name", name, "--json").stdout)["resources"]
    states = {r["resource"]: r for r in status}
    assert states["endpoint"]["detail"].startswith("serverless 2048 MB, max concurrency 5")
    assert states["scalable target"]["state"] == "none (serverless)"
    assert states["scaling policy"]["state"] == "none (serverless)"
    first = aws(aws_env, "down", "--name", name).stdout
    assert "deleted: sagemaker endpoint" in first and "nothing of" not in first
    # A second `down` says what it found rather than nothing at all.
    again = aws(aws_env, "down", "--name", name).stdout
    assert f"nothing of deployment {name} was left to delete: no endpoint" in again
    assert "already gone" in again and "deleted" not in again


def test_up_stops_at_a_step_that_fails_and_says_which(aws_env, tiny_data):
    name = unique()
    empty = aws_up(aws_env, name, f"s3://{BUCKET}/nothing-here", check=False)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1, empty.stderr
    assert "no objects there" in empty.stderr
    assert "[1/8] stopped (rerun `aws up` to go on from here)" in steps(empty.stdout)
    # A same-named role someone else made: `aws iam`'s refusal stops the chain at step 2.
    boto3.client("iam").create_role(RoleName=f"{name}-lambda", AssumeRolePolicyDocument="{}")
    refused = aws_up(aws_env, name, tiny_data, check=False)
    assert refused.returncode == 2 and "--adopt" in refused.stderr, refused.stderr
    assert steps(refused.stdout)[-1] == "[2/8] stopped (rerun `aws up` to go on from here)"
    assert "create_training_job" not in refused.stdout
    assert (
        boto3.client("sagemaker").list_training_jobs(NameContains=name)["TrainingJobSummaries"]
        == []
    )
    boto3.client("iam").delete_role(RoleName=f"{name}-lambda")
