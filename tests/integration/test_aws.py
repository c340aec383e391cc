"""`dogbreed aws ...` against moto's server (real HTTP on loopback), checked by describe calls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import policies as iam
from dogbreed.aws.config import load_config
from dogbreed.aws.context import Ctx, Names
from dogbreed.core.errors import AwsError
from support.aws import ACCOUNT, REGION, aws, moto_env, offline_ctx

IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
CONFIG = {
    "data": "s3://dogs-bucket/dogImages",
    "output": "s3://dogs-bucket/output",
    "checkpoints": "s3://dogs-bucket/checkpoints",
}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    return moto_env(moto_url, monkeypatch, tmp_path, {**CONFIG, "region": REGION})


def dry_request(output: str, operation: str) -> dict:
    """The parameters of `operation` as a --dry-run printed them."""
    return json.loads(output.split(f"{operation} ")[1].splitlines()[0])


def unique() -> str:
    return f"Dog{uuid.uuid4().hex[:6]}"  # upper case on purpose: IAM wants endpoint/dog...


def test_iam_roles_are_least_privilege_and_idempotent(aws_env):
    name = unique()
    first = aws(aws_env, "iam", "--name", name).stdout
    assert f"created role {name}-sagemaker-execution" in first
    second = aws(aws_env, "iam", "--name", name).stdout
    assert "created" not in second and second.count("unchanged") == 2
    client = boto3.client("iam")
    sm = client.get_role_policy(
        RoleName=f"{name}-sagemaker-execution", PolicyName=f"{name}-sagemaker-execution"
    )["PolicyDocument"]
    lam = client.get_role_policy(RoleName=f"{name}-lambda", PolicyName=f"{name}-lambda")[
        "PolicyDocument"
    ]
    assert sm == iam.sagemaker_policy(
        REGION,
        ACCOUNT,
        name,
        CONFIG["data"],
        CONFIG["output"],
        CONFIG["checkpoints"],
        ["dogbreed-train", "dogbreed-serve"],
    )
    assert lam == iam.lambda_policy(REGION, ACCOUNT, name, name)
    invoke = [s for s in lam["Statement"] if s["Action"] == ["sagemaker:InvokeEndpoint"]]
    assert invoke[0]["Resource"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name.lower()}"
    for doc in (sm, lam):
        for statement in doc["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert all("*" not in a for a in actions), statement
    for role in (f"{name}-sagemaker-execution", f"{name}-lambda"):
        assert client.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    trust = client.get_role(RoleName=f"{name}-lambda")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_training_job_spec(aws_env):
    name = unique()
    aws(aws_env, "iam", "--name", name)
    args = [
        "train",
        "--name",
        name,
        "--image",
        IMAGE,
        "--instance-count",
        "2",
        "--spot",
        "--hp",
        "epochs=3",
        "--hp",
        "lr=0.01",
    ]
    out = aws(aws_env, *args).stdout
    job = out.split("created training job ")[1].split()[0]
    assert "unchanged" in aws(aws_env, *args).stdout
    sm = boto3.client("sagemaker")
    spec = sm.describe_training_job(TrainingJobName=job)
    assert spec["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert spec["ResourceConfig"]["InstanceCount"] == 2
    assert spec["HyperParameters"] == {
        "arch": "resnet50",
        "epochs": "3",
        "batch-size": "64",
        "lr": "0.01",
    }
    assert spec["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert spec["CheckpointConfig"]["S3Uri"].startswith(f"{CONFIG['checkpoints']}/{name}/")
    assert spec["EnableManagedSpotTraining"] is True
    assert (
        spec["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= spec["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    # moto answers canned MetricDefinitions: read what we send from the dry run instead.
    dry = aws(aws_env, *args, "--dry-run").stdout
    request = json.loads(dry.split("sagemaker.create_training_job ")[1].splitlines()[0])
    metrics = {
        m["Name"]: m["Regex"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]
    }
    line = "epoch=3 train_loss=0.4100 val_loss=0.5200 val_acc=0.8740 images_per_s=812.5"
    assert re.search(metrics["val_acc"], line).group(1) == "0.8740"
    assert re.search(metrics["images_per_s"], line).group(1) == "812.5"
    assert re.search(metrics["test_acc"], "test_loss=0.5 test_acc=0.8612").group(1) == "0.8612"
    assert request["TrainingJobName"] == job
    assert spec["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{name}-sagemaker-execution"
    jobs = sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    assert len(jobs) == 1


def test_tuning_job_spec(aws_env):
    name = unique()
    out = aws(
        aws_env, "tune", "--name", name, "--image", IMAGE, "--max-jobs", "6", "--parallel-jobs", "3"
    ).stdout
    job = out.split("created tuning job ")[1].split()[0]
    assert len(job) <= 32
    spec = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=job
    )
    config = spec["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": "val_acc",
    }
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 3
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"][0]["Name"] == "lr"
    assert ranges["ContinuousParameterRanges"][0]["ScalingType"] == "Logarithmic"
    assert ranges["CategoricalParameterRanges"][0] == {
        "Name": "batch-size",
        "Values": ["32", "64", "128", "256"],
    }


def test_deploy_autoscale_lambda_then_down(aws_env):
    name = unique()
    aws(aws_env, "iam", "--name", name)
    model_data = "s3://dogs-bucket/output/job/output/model.tar.gz"
    deploy = ["deploy", "--name", name, "--image", SERVE, "--model-data", model_data]
    assert f"created endpoint {name}" in aws(aws_env, *deploy).stdout
    assert aws(aws_env, *deploy).stdout.count("unchanged") == 5  # with the two alarms
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic" and variant["InstanceType"] == "ml.m5.large"
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data
    # moto does not keep EnableNetworkIsolation: check the request we send.
    sent = dry_request(aws(aws_env, *deploy, "--dry-run").stdout, "sagemaker.create_model")
    assert sent["EnableNetworkIsolation"] is True and sent["ModelName"] == variant["ModelName"]

    scale = ["autoscale", "--name", name, "--min", "1", "--max", "2", "--target", "70"]
    assert "registered scalable target" in aws(aws_env, *scale).stdout
    assert aws(aws_env, *scale).stdout.count("unchanged") == 2
    aas = boto3.client("application-autoscaling")
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    mine = [t for t in target if t["ResourceId"] == f"endpoint/{name}/variant/AllTraffic"]
    assert (mine[0]["MinCapacity"], mine[0]["MaxCapacity"]) == (1, 2)
    policy = aas.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=mine[0]["ResourceId"]
    )["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (300, 30)
    assert (
        tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )

    # moto has no provisioned-concurrency call: checked against botocore's model below.
    lam_args = ["lambda", "--name", name, "--reserved", "5", "--provisioned", "0"]
    assert "created function" in aws(aws_env, *lam_args).stdout
    again = aws(aws_env, *lam_args).stdout
    assert "unchanged" in again and "published" not in again
    lam = boto3.client("lambda")
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Environment"]["Variables"]["ENDPOINT_NAME"] == name
    assert conf["Role"] == f"arn:aws:iam::{ACCOUNT}:role/{name}-lambda"

    other = unique()  # another deployment's resources must survive `down`
    aws(aws_env, "iam", "--name", other)
    down = aws(aws_env, "down", "--name", name).stdout
    assert "deleted" in down
    assert sm.list_endpoints(NameContains=name)["Endpoints"] == []
    assert [c for c in sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]] == []
    models = sm.list_models(NameContains=name)["Models"]  # N's are N-<digest>: match exactly
    assert [m for m in models if m["ModelName"].startswith(f"{name}-")] == []
    assert not [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert not {f"{name}-lambda", f"{name}-sagemaker-execution"} & roles
    assert {f"{other}-lambda", f"{other}-sagemaker-execution"} <= roles
    assert (
        aas.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=[mine[0]["ResourceId"]]
        )["ScalableTargets"]
        == []
    )
    assert "deleted" not in aws(aws_env, "down", "--name", name).stdout  # nothing left


def test_upload_data_is_idempotent(aws_env, tiny_data):
    boto3.client("s3").create_bucket(Bucket="upload-bucket")
    first = aws(aws_env, "upload-data", str(tiny_data), "s3://upload-bucket/sets/tiny").stdout
    count = len(list(tiny_data.rglob("*.jpg")))
    assert f"uploaded {count} of {count} files" in first
    keys = boto3.client("s3").list_objects_v2(Bucket="upload-bucket")["Contents"]
    assert len(keys) == count and all(k["Key"].startswith("sets/tiny/") for k in keys)
    assert (
        f"uploaded 0 of {count} files"
        in aws(aws_env, "upload-data", str(tiny_data), "s3://upload-bucket/sets/tiny").stdout
    )
    missing = aws(aws_env, "upload-data", str(tiny_data), "s3://no-such-bucket-x/t", check=False)
    assert missing.returncode == 8 and missing.stderr.count("\n") == 1, missing.stderr
    assert "bucket no-such-bucket-x does not exist: create it" in missing.stderr


def test_dry_run_sends_nothing(aws_env):
    name = unique()
    out = aws(aws_env, "iam", "--name", name, "--dry-run").stdout
    assert "iam.create_role" in out and "(dry run) created role" in out
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert f"{name}-lambda" not in roles


# ---- the error classifier, config checks, one-line errors, light imports --------------------


def moto_ctx(name: str = "dogs") -> Ctx:
    """A context on moto's server (aws_env sets the endpoint and credentials)."""
    return Ctx(Names(name), load_config(None, {"region": REGION}))


def test_missing_resource_codes_from_moto_read_as_none(aws_env):
    ctx = moto_ctx(unique())
    assert ctx.find("iam", "get_role", RoleName=f"{ctx.names.name}-nope") is None
    assert ctx.find("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint) is None
    assert ctx.find("lambda", "get_function", FunctionName=ctx.names.function) is None
    assert ctx.find("s3", "head_object", Bucket="no-such-bucket-dogs", Key="k") is None
    assert ctx.delete("logs", "delete_log_group", logGroupName=ctx.names.log_group) is False
    # A read of something that must exist reports the code instead of returning None.
    with pytest.raises(AwsError, match=r"^iam get_role: NoSuchEntity: "):
        ctx.read("iam", "get_role", RoleName=f"{ctx.names.name}-nope")


def test_other_error_codes_are_aws_errors(aws_env):
    ctx = moto_ctx(unique())
    role = {"RoleName": ctx.names.lambda_role, "AssumeRolePolicyDocument": "{}"}
    ctx.write("iam", "create_role", **role)
    with pytest.raises(AwsError, match=r"^iam create_role: EntityAlreadyExists: "):
        ctx.write("iam", "create_role", **role)
    # A code that is not the call's "missing" code is an error, even from a find.
    stubbed, client = offline_ctx("iam")
    with Stubber(client) as stub:
        stub.add_client_error("get_role", "AccessDenied", "Role dogs not found")
        with pytest.raises(AwsError) as err:
            stubbed.find("iam", "get_role", RoleName="dogs")
    assert str(err.value) == "iam get_role: AccessDenied: Role dogs not found"


def test_the_aws_commands_load_no_image_stack(aws_env, tmp_path):
    """Every aws module and `dogbreed aws iam` run without torch, numpy, Pillow or ORT."""
    env, config = aws_env
    script = f"""
import importlib, pkgutil, sys
import dogbreed.aws
for mod in pkgutil.iter_modules(dogbreed.aws.__path__):
    importlib.import_module(f"dogbreed.aws.{{mod.name}}")
import dogbreed.cli.aws_cmds
from dogbreed.cli.main import main
assert main(["aws", "iam", "--name", "light", "--dry-run", "--config", {str(config)!r}]) == 0
heavy = ("torch", "torchvision", "numpy", "PIL", "onnxruntime", "matplotlib")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
print(sorted(m for m in sys.modules if m.startswith(("dogbreed.train", "dogbreed.serve"))))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["[]", "[]"], proc.stdout
