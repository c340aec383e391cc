"""`aws down` and `aws status` offline, and loose ends: dry runs record the reads a real
run makes (the operator's policy is checked against them), `aws iam` refuses a
whole-bucket `lambda.s3_input`, a serverless endpoint caps the Lambda's payload."""

from __future__ import annotations

import io
import json

import pytest

from dogbreed.aws import functions
from dogbreed.aws.context import Ctx, Names
from dogbreed.aws.status import MISSING, Row, table, to_json
from support.aws import ACCOUNT, CONFIG, REGION, offline_ctx
from support.iam_check import run_verb, without_credentials

NAME = "Dogs"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"


@pytest.fixture
def config(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(CONFIG))
    return path


def dry(config, verb: str, *argv: str) -> Ctx:
    ctx, error = run_verb(verb, "--name", NAME, "--config", str(config), "--dry-run", *argv)
    assert error is None, error
    return ctx


def operations(ctx: Ctx) -> list[tuple[str, str]]:
    return [(r.service, r.operation) for r in ctx.requests]


def test_the_dry_run_of_down_records_every_tag_check_before_its_deletes(config):
    ctx = dry(config, "down")
    ops = operations(ctx)
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    tags = [r.params["ResourceArn"] for r in ctx.requests if r.operation == "list_tags"]
    assert tags == [
        f"{arn}:endpoint/dogs",
        f"{arn}:endpoint-config/dogs-00000000",
        f"{arn}:model/dogs-00000000",
    ]
    for read, delete in [
        (("sagemaker", "describe_endpoint"), ("sagemaker", "delete_endpoint")),
        (("cloudwatch", "list_tags_for_resource"), ("cloudwatch", "delete_alarms")),
        (("sagemaker", "list_models"), ("sagemaker", "delete_model")),
        (("lambda", "get_function"), ("lambda", "delete_function")),
        (("iam", "get_role"), ("iam", "delete_role")),
        (
            ("application-autoscaling", "describe_scaling_policies"),
            ("application-autoscaling", "delete_scaling_policy"),
        ),
    ]:
        assert ops.index(read) < ops.index(delete), (read, delete)
    assert ops.count(("iam", "get_role")) == 2 and ops.count(("iam", "delete_role")) == 2
    out = ctx.out.getvalue()
    assert "(dry run) sagemaker.delete_endpoint " in out and "(dry run) left in place" in out


def test_dry_runs_record_the_reads_a_rerun_makes(config):
    lam = dry(config, "lambda", "--provisioned", "0")
    qualifiers = [
        r.params.get("Qualifier")
        for r in lam.requests
        if r.operation == "get_function_configuration"
    ]
    assert None in qualifiers and "1" in qualifiers  # $LATEST and the aliased version
    assert ("sagemaker", "describe_endpoint") in operations(lam)  # serverless or not
    deploy = dry(config, "deploy", "--image", SERVE, "--model-data", "s3://b/m.tar.gz")
    alarms = [r.params for r in deploy.requests if r.operation == "list_tags_for_resource"]
    assert [a["ResourceARN"].rsplit(":", 1)[1] for a in alarms] == [
        "Dogs-5xx-errors",
        "Dogs-model-latency",
    ]


def test_the_dry_run_of_status_prints_its_reads_and_changes_nothing(config):
    ctx = dry(config, "status")
    out = ctx.out.getvalue().splitlines()
    assert out and all(line.startswith("(dry run) ") for line in out)
    assert len(out) == len(ctx.requests)
    ops = operations(ctx)
    assert not [op for service, op in ops if not op.startswith(("describe_", "get_", "list_"))]
    for needed in [
        ("iam", "get_role"),
        ("sagemaker", "list_training_jobs"),
        ("sagemaker", "describe_training_job"),
        ("sagemaker", "describe_endpoint"),
        ("sagemaker", "describe_endpoint_config"),
        ("sagemaker", "describe_model"),
        ("application-autoscaling", "describe_scalable_targets"),
        ("cloudwatch", "describe_alarms"),
        ("lambda", "get_function"),
        ("lambda", "get_alias"),
        ("lambda", "get_function_url_config"),
    ]:
        assert needed in ops, needed


def test_the_status_table_and_json():
    ctx = Ctx(Names(NAME), dict(CONFIG))
    rows = [
        Row("role", "Dogs-lambda", "present", "arn:aws:iam::1:role/Dogs-lambda", True),
        Row("function", "Dogs", "Active", "python3.12", False),
        Row("endpoint", "Dogs", MISSING),
    ]
    lines = table(ctx, rows).splitlines()
    assert lines[0].split() == ["RESOURCE", "NAME", "STATE", "DETAIL"]
    assert lines[2].split()[:3] == ["function", "Dogs", "Active"]
    assert "NOT TAGGED dogbreed:name=Dogs; python3.12" in lines[2]
    assert lines[3].split() == ["endpoint", "Dogs", "missing"]
    assert len({line.index(" Dogs") for line in lines[2:]}) == 1  # aligned columns
    parsed = json.loads(to_json(ctx, rows))
    assert parsed["name"] == NAME
    assert parsed["resources"][1] == {
        "resource": "function",
        "name": "Dogs",
        "state": "Active",
        "detail": "python3.12",
        "tagged": False,
    }


@pytest.mark.parametrize("s3_input", ["s3://in-bucket", "s3://in-bucket/"])
def test_iam_refuses_a_whole_bucket_s3_input_before_any_change(tmp_path, monkeypatch, s3_input):
    without_credentials(monkeypatch, tmp_path)
    path = tmp_path / "aws.json"
    path.write_text(json.dumps({**CONFIG, "lambda": {"s3_input": s3_input}}))
    ctx, error = run_verb("iam", "--name", NAME, "--config", str(path), "--dry-run")
    assert "is a whole bucket: give a prefix" in str(error)
    assert not [r for r in ctx.requests if r.service == "iam"]
    path.write_text(json.dumps({**CONFIG, "lambda": {"s3_input": "s3://in-bucket/uploads"}}))
    ctx, error = run_verb("iam", "--name", NAME, "--config", str(path), "--dry-run")
    assert error is None
    put = [r.params for r in ctx.requests if r.operation == "put_role_policy"][-1]
    statements = json.loads(put["PolicyDocument"])["Statement"]
    assert statements[-1]["Resource"] == "arn:aws:s3:::in-bucket/uploads/*"


def test_a_serverless_endpoint_caps_the_functions_payload_at_4_mb():
    ctx, _ = offline_ctx("lambda")
    ctx.out = io.StringIO()
    env = functions.function_settings(ctx, serverless=True)["Environment"]["Variables"]
    assert env["MAX_IMAGE_BYTES"] == "4194304" == str(4 * 1024 * 1024)
    plain = functions.function_settings(ctx)["Environment"]["Variables"]
    assert "MAX_IMAGE_BYTES" not in plain  # the function's default: 6 MB, an instance's limit
