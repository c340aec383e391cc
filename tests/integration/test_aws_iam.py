"""`dogbreed aws iam` against moto's server: it will not take over a role it did not
create, and the operator's policies allow every request a real run of the commands
sends for N, with no action beyond them: the day-to-day one all but the role writes,
the administrator's those."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from dogbreed.aws import policies
from dogbreed.aws.context import Names
from dogbreed.aws.operator_policy import admin_policy, operator_policy
from support.aws import ACCOUNT, CONFIG, DATA, REGION, use_moto
from support.cli import run_cli
from support.iam_check import ROLE_WRITES, allows, needs, policy_actions, run_verb

ADMIN_ONLY = {*ROLE_WRITES, "iam:TagRole", "iam:DeleteRole"}

IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed:abc1234"
FOREIGN_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    env = use_moto(moto_url, monkeypatch)
    config = tmp_path / "aws.json"
    config.write_text(json.dumps(CONFIG))
    return env, config


def unique() -> str:
    return f"Dog{uuid.uuid4().hex[:6]}"


def iam_cli(aws_env, name: str, *flags: str):
    env, config = aws_env
    return run_cli("aws", "iam", "--name", name, "--config", config, *flags, env=env, timeout=120)


def test_iam_refuses_a_same_named_role_it_did_not_create(aws_env):
    name, client = unique(), boto3.client("iam")
    foreign = f"{name}-lambda"
    client.create_role(RoleName=foreign, AssumeRolePolicyDocument=json.dumps(FOREIGN_TRUST))
    refused = iam_cli(aws_env, name)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"role {foreign} exists" in refused.stderr and "--adopt" in refused.stderr
    # Nothing changed: not the foreign role, and no role created beside it.
    role = client.get_role(RoleName=foreign)["Role"]
    assert role["AssumeRolePolicyDocument"] == FOREIGN_TRUST and not role.get("Tags")
    assert client.list_role_policies(RoleName=foreign)["PolicyNames"] == []
    roles = {r["RoleName"] for r in client.list_roles()["Roles"]}
    assert f"{name}-sagemaker-execution" not in roles

    adopted = iam_cli(aws_env, name, "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert f"adopted role {foreign}" in adopted.stdout
    role = client.get_role(RoleName=foreign)["Role"]
    assert {"Key": "dogbreed:name", "Value": name} in role["Tags"]
    assert role["AssumeRolePolicyDocument"] == policies.lambda_trust(ACCOUNT)
    assert client.list_role_policies(RoleName=foreign)["PolicyNames"] == [foreign]
    again = iam_cli(aws_env, name)
    assert again.returncode == 0 and again.stdout.count("unchanged") == 2, again.stdout


def test_iam_refuses_a_role_tagged_for_another_deployment(aws_env):
    name, client = unique(), boto3.client("iam")
    role = f"{name}-sagemaker-execution"
    client.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=json.dumps(FOREIGN_TRUST),
        Tags=[{"Key": "dogbreed:name", "Value": "someone-else"}],
    )
    refused = iam_cli(aws_env, name)
    assert refused.returncode == 2 and f"role {role} exists" in refused.stderr, refused.stderr
    assert client.list_role_policies(RoleName=role)["PolicyNames"] == []


def real_run(aws_env, name: str, tmp_path) -> tuple[list, list[str]]:
    """Every command for N on the emulator, with reruns that take the update paths; the
    requests sent, and the errors of calls the emulator lacks (recorded before failing).
    Two dry runs add what no emulator call reaches: the upload itself (boto3's transfer
    layer) and provisioned concurrency."""
    config = aws_env[1]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**CONFIG, "lambda": {"memory_mb": 512}}))
    batch = tmp_path / "transform.json"  # transform.input set: the role reads it once `iam` ran
    batch.write_text(json.dumps({**CONFIG, "transform": {"input": "s3://dogs-bucket/batch"}}))
    transform = ["transform", "--input", "s3://dogs-bucket/batch/1", "--config", str(batch)]
    zip_path = tmp_path / "other.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: other code
    data = tmp_path / "data" / "akita"
    data.mkdir(parents=True)
    (data / "1.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    boto3.client("s3").create_bucket(Bucket="dogs-bucket")
    model = f"{CONFIG['output']}/{name}/{name}-0123abcd/output/model.tar.gz"
    lam = ["lambda", "--reserved", "3", "--provisioned", "0"]
    chain = ["up", "--data", str(tmp_path / "data"), "--image-train", IMAGE, "--image-serve", IMAGE]
    runs = [
        ["upload-data", str(tmp_path / "data"), DATA],
        ["upload-data", str(tmp_path / "data"), DATA, "--dry-run"],
        ["iam"],
        ["train", "--image", IMAGE],
        ["tune", "--image", IMAGE],
        ["deploy", "--image", IMAGE, "--model-data", model],
        ["deploy", "--image", IMAGE, "--model-data", model, "--instance-type", "ml.c5.large"],
        ["autoscale"],
        ["iam", "--config", str(batch)],
        [*transform, "--wait"],
        transform,  # finds the job: unchanged
        lam,
        [*lam, "--config", str(changed)],
        [*lam, "--zip", str(zip_path)],
        [*lam, "--public-url"],
        ["lambda", "--reserved", "3", "--provisioned", "1"],
        lam,  # removes the provisioned concurrency it finds
        ["lambda", "--dry-run"],
        ["down"],
        # An asynchronous endpoint: its topics, scaling to zero, its status and teardown
        # (`iam` first: down deleted the roles, and --notify checks the execution role's).
        ["iam"],
        [
            "deploy",
            "--image",
            IMAGE,
            "--model-data",
            model,
            "--async",
            "--notify",
            "--capture-percent",
            "10",
        ],
        ["autoscale"],
        ["status"],
        ["down"],
        ["iam"],
        ["drift"],  # the trust policy changed behind our back: `aws iam` rewrites it
        ["iam"],
        [*chain, "--provisioned", "0"],
        ["register", "--image", IMAGE],  # up registered the job's model: found, not again
        ["approve"],
        ["deploy", "--model-package", "approved"],
        ["approve", "--reject", "--reason", "worse"],
        ["status"],
        ["down"],
        ["status", "--json"],
    ]
    requests, errors = [], []
    for verb, *rest in runs:
        if verb == "drift":
            boto3.client("iam").update_assume_role_policy(
                RoleName=f"{name}-lambda", PolicyDocument=json.dumps(FOREIGN_TRUST)
            )
            continue
        named = [] if verb == "upload-data" else ["--name", name]
        configured = [] if "--config" in rest else ["--config", str(config)]
        ctx, error = run_verb(verb, *named, *configured, *rest)
        requests += ctx.requests
        if error is not None:
            errors.append(f"{verb} {' '.join(rest)}: {error}")
    return requests, errors


def test_the_operator_policy_covers_a_real_run_exactly(aws_env, tmp_path):
    name = unique()
    policy = operator_policy(Names(name), REGION, ACCOUNT, DATA, CONFIG["output"])
    admin = admin_policy(Names(name), ACCOUNT)
    requests, errors = real_run(aws_env, name, tmp_path)
    # moto has no UpdateEndpoint: a redeploy ends there, its request recorded.
    assert all("update_endpoint" in e for e in errors), errors
    denied, needed = [], set()
    for request in requests:
        for need in needs(request, REGION, ACCOUNT):
            needed.add(need.action)
            holder = admin if need.action in ADMIN_ONLY else policy
            if not allows(holder, need) or (holder is admin and allows(policy, need)):
                denied.append(f"{request.service}.{request.operation}: {need}")
    assert not denied, "\n".join(denied)
    operations = {(r.service, r.operation) for r in requests}
    for taken in (
        ("sagemaker", "update_endpoint"),
        ("iam", "update_assume_role_policy"),
        ("lambda", "update_function_code"),
        ("lambda", "update_function_configuration"),
        ("lambda", "update_alias"),
        ("lambda", "add_permission"),
        ("lambda", "remove_permission"),
        ("lambda", "delete_provisioned_concurrency_config"),
    ):
        assert taken in operations, (taken, errors)
    # Nothing granted that no request needed, but the invoke calls: the emulator runs no
    # function, and writes an asynchronous answer outside the output path the endpoint
    # config names (the unit tests check them in the dry runs).
    unreached = {
        "lambda:InvokeFunction",
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointAsync",
    }
    assert policy_actions(policy) - needed == unreached, policy_actions(policy) - needed
    assert policy_actions(admin) <= needed
