"""`dogbreed aws lambda`'s front door against moto's server: the function URL on alias
'live' (IAM auth unless --public-url), its settings, and an API moto lacks in one line."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from support.aws import REGION, use_moto
from support.cli import run_cli


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env = use_moto(moto_url, monkeypatch)
    config = tmp_path / "aws.json"
    config.write_text(
        json.dumps({"region": REGION, "lambda": {"s3_input": "s3://dogs-in/uploads"}})
    )
    return env, config


def aws_lambda(env_config, name: str, *flags: str, check: bool = True):
    env, config = env_config
    args = ["aws", "lambda", "--config", str(config), "--name", name, "--provisioned", "0"]
    return run_cli(*args, *flags, env=env, check=check, timeout=300)


@pytest.fixture
def name(aws_env) -> str:
    """A deployment whose Lambda role exists (made here: the roles are `aws iam`'s tests)."""
    name = f"Door{uuid.uuid4().hex[:6]}"
    trust = {"Version": "2012-10-17", "Statement": []}
    boto3.client("iam").create_role(
        RoleName=f"{name}-lambda", AssumeRolePolicyDocument=json.dumps(trust)
    )
    return name


def public_sids(name: str) -> set[str]:
    try:
        policy = boto3.client("lambda").get_policy(FunctionName=name, Qualifier="live")["Policy"]
    except boto3.client("lambda").exceptions.ResourceNotFoundException:
        return set()
    return {s["Sid"] for s in json.loads(policy)["Statement"]}


def test_the_function_url_is_iam_by_default_and_reruns_keep_it(aws_env, name):
    first = aws_lambda(aws_env, name).stdout
    assert f"created function URL of {name}:live (auth AWS_IAM)" in first
    assert "warning" not in first
    lam = boto3.client("lambda")
    url = lam.get_function_url_config(FunctionName=name, Qualifier="live")
    assert url["AuthType"] == "AWS_IAM" and f"front door: {url['FunctionUrl']}" in first
    assert public_sids(name) == set()
    again = aws_lambda(aws_env, name).stdout
    assert f"function URL of {name}:live (auth AWS_IAM) unchanged" in again
    assert "created" not in again and "published" not in again
    env = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    assert env["ALLOW_URL_FETCH"] == "false" and env["S3_PREFIX"] == "s3://dogs-in/uploads/"


def test_a_public_url_needs_the_flag_and_warns(aws_env, name):
    aws_lambda(aws_env, name)
    public = aws_lambda(aws_env, name, "--public-url", "--allow-url-fetch").stdout
    warnings = [line for line in public.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "anyone" in warnings[0]
    lam = boto3.client("lambda")
    assert lam.get_function_url_config(FunctionName=name, Qualifier="live")["AuthType"] == "NONE"
    assert public_sids(name) == {
        "FunctionURLAllowPublicAccess",
        "FunctionURLInvokeAllowPublicAccess",
    }
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Environment"]["Variables"]["ALLOW_URL_FETCH"] == "true"
    # Without the flag, a rerun makes the URL IAM-only again and revokes the grants.
    back = aws_lambda(aws_env, name).stdout
    assert "revoked" in back and public_sids(name) == set()
    assert lam.get_function_url_config(FunctionName=name, Qualifier="live")["AuthType"] == "AWS_IAM"


def test_the_dry_run_prints_the_front_door_requests(aws_env, name):
    out = aws_lambda(aws_env, name, "--public-url", "--dry-run").stdout
    create = json.loads(out.split("lambda.create_function_url_config ")[1].splitlines()[0])
    assert create == {"AuthType": "NONE", "FunctionName": name, "Qualifier": "live"}
    grants = [
        json.loads(x.split("lambda.add_permission ")[1])
        for x in out.splitlines()
        if "lambda.add_permission " in x
    ]
    assert {g["Action"] for g in grants} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    functions = boto3.client("lambda").list_functions()["Functions"]
    assert name not in {f["FunctionName"] for f in functions}  # a dry run sends no change


def test_an_api_moto_lacks_is_one_line(aws_env, name, moto_url):
    """moto has no provisioned-concurrency call: it answers its web server's 404 page
    (moto itself here, not the twin that use_moto puts in front of its Lambda)."""
    env, config = aws_env
    args = ["aws", "lambda", "--config", str(config), "--name", name, "--provisioned", "2"]
    proc = run_cli(*args, env={**env, "AWS_ENDPOINT_URL_LAMBDA": moto_url}, timeout=300)
    assert proc.returncode == 8, proc.stderr
    assert proc.stderr.count("\n") == 1 and "<" not in proc.stderr, proc.stderr
    assert (
        "put_provisioned_concurrency_config: HTTP 404: the endpoint does not offer" in proc.stderr
    )


def test_a_whole_bucket_s3_input_is_refused(aws_env, name, tmp_path):
    env, _ = aws_env
    config = tmp_path / "bucket-root.json"
    config.write_text(json.dumps({"region": REGION, "lambda": {"s3_input": "s3://dogs-in/"}}))
    args = ["aws", "lambda", "--config", str(config), "--name", name, "--dry-run"]
    proc = run_cli(*args, env=env, timeout=300)
    assert proc.returncode == 2 and "is a whole bucket" in proc.stderr, proc.stderr
    assert proc.stdout == ""  # refused before any request
