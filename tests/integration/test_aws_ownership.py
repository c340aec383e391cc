"""Resources of N only, against moto's server: a same-named function, endpoint or alarm
that dogbreed did not create for N is refused before any change (exit 2, one line) and
taken over only with --adopt; `--provisioned 0` removes provisioned concurrency already
set (moto lacks those calls: support.aws.LambdaTwin answers them)."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile

import boto3
import pytest

from support.aws import ACCOUNT, CONFIG, REGION, lambda_twin, use_moto
from support.cli import run_cli

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
TRUST = {"Version": "2012-10-17", "Statement": []}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env = use_moto(moto_url, monkeypatch)
    config = tmp_path / "aws.json"
    config.write_text(json.dumps(CONFIG))
    return env, config


def aws(env_config, verb: str, name: str, *flags: str):
    env, config = env_config
    args = ["aws", verb, "--config", str(config), "--name", name, *flags]
    return run_cli(*args, env=env, timeout=300)


def someone_elses_function(name: str) -> str:
    """An untagged function named N, with its own code; its CodeSha256."""
    role = boto3.client("iam").create_role(
        RoleName=f"{name}-theirs", AssumeRolePolicyDocument=json.dumps(TRUST)
    )["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return 'theirs'\n")
    made = boto3.client("lambda").create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="app.handler",
        Code={"ZipFile": buf.getvalue()},
    )  # fmt: skip
    return made["CodeSha256"]


def refused(proc, kind: str, name: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{kind} {name} exists without the tag dogbreed:name={name}" in proc.stderr
    assert "--adopt" in proc.stderr


def test_lambda_refuses_someone_elses_function_and_adopt_takes_it_over(aws_env):
    name = f"Own{uuid.uuid4().hex[:6]}"
    boto3.client("iam").create_role(
        RoleName=f"{name}-lambda", AssumeRolePolicyDocument=json.dumps(TRUST)
    )
    theirs = someone_elses_function(name)
    lam = boto3.client("lambda")
    refused(aws(aws_env, "lambda", name, "--provisioned", "0", "--public-url"), "function", name)
    conf = lam.get_function(FunctionName=name)["Configuration"]
    assert conf["CodeSha256"] == theirs and conf["Role"].endswith(f"{name}-theirs")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")  # nothing published, no URL behind it

    adopted = aws(aws_env, "lambda", name, "--provisioned", "0", "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert f"adopted function {name} (tagged dogbreed:name={name})" in adopted.stdout
    function = lam.get_function(FunctionName=name)
    assert function["Tags"]["dogbreed:name"] == name
    assert function["Configuration"]["CodeSha256"] != theirs
    assert aws(aws_env, "lambda", name, "--provisioned", "0").returncode == 0  # N's now


def test_provisioned_zero_removes_provisioned_concurrency_already_set(aws_env, moto_url):
    name = f"Own{uuid.uuid4().hex[:6]}"
    boto3.client("iam").create_role(
        RoleName=f"{name}-lambda", AssumeRolePolicyDocument=json.dumps(TRUST)
    )
    configs = lambda_twin(moto_url).configs
    set_two = aws(aws_env, "lambda", name, "--provisioned", "2")
    assert set_two.returncode == 0, set_two.stderr
    assert configs[(name, "live")] == 2
    zero = aws(aws_env, "lambda", name, "--provisioned", "0")
    assert zero.returncode == 0, zero.stderr
    assert (name, "live") not in configs
    assert f"removed provisioned concurrency of {name}:live" in zero.stdout
    again = aws(aws_env, "lambda", name, "--provisioned", "0").stdout
    assert f"provisioned concurrency of {name}:live: none" in again


def test_deploy_and_autoscale_refuse_someone_elses_endpoint(aws_env):
    name = f"Own{uuid.uuid4().hex[:6]}"
    sm = boto3.client("sagemaker")
    sm.create_model(
        ModelName=f"{name}-theirs",
        PrimaryContainer={"Image": SERVE},
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/theirs",
    )
    variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-theirs",
               "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=f"{name}-theirs", ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-theirs")
    model = base64.b64encode(b"m").decode()  # any model data: nothing is created
    deploy = aws(aws_env, "deploy", name, "--image", SERVE, "--model-data", f"s3://b/{model}")
    refused(deploy, "endpoint", name)
    assert [m["ModelName"] for m in sm.list_models(NameContains=name)["Models"]] == [
        f"{name}-theirs"
    ]
    refused(aws(aws_env, "autoscale", name), "endpoint", name)
    targets = boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{name}/variant/AllTraffic"]
    )
    assert targets["ScalableTargets"] == []
