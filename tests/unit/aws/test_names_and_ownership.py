"""Deployment names checked before any request, resources of N only (or --adopt), `down`
and `status` over every page, and `--provisioned 0` removing what is set: botocore's
Stubber answers, so each request is also held against its service model."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import functions, status, teardown
from dogbreed.aws.alarms import Thresholds, ensure_alarms
from dogbreed.aws.context import MAX_CHARS, Names
from dogbreed.aws.endpoint import DeployOptions, ScaleOptions, cmd_autoscale, cmd_deploy
from dogbreed.core.errors import AwsError, ConfigError
from support.aws import ACCOUNT, CONFIG, REGION, offline_ctx
from support.cli import run_cli
from support.iam_check import run_verb, without_credentials

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dogs"
TAGGED = [{"Key": "dogbreed:name", "Value": "dogs"}]
FOREIGN = [{"Key": "team", "Value": "payments"}]
LONGEST = 44  # N-sagemaker-execution: IAM's 64 characters


@pytest.fixture
def config(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(CONFIG))
    return path


# ---- --name: one check, before any request ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("*", "letters, digits and hyphens only"),
        ("a/b", "letters, digits and hyphens only"),
        ("a_b", "letters, digits and hyphens only"),
        ("a.b", "letters, digits and hyphens only"),
        ("-dogs", "letters, digits and hyphens only"),
        ("dogs-", "letters, digits and hyphens only"),
        ("", "letters, digits and hyphens only"),
        ("d" * (LONGEST + 1), "the IAM role " + "d" * (LONGEST + 1) + "-sagemaker-execution"),
    ],
)
@pytest.mark.parametrize(
    "verb",
    [
        ["iam", "--operator-policy"],
        ["up", "--data", "s3://b/d", "--image-train", SERVE, "--image-serve", SERVE],
        ["down"],
        ["status"],
        ["lambda"],
    ],
)
def test_a_bad_name_is_one_line_exit_2_before_any_request(config, verb, name, says):
    ctx, error = None, None
    with pytest.raises(ConfigError, match=says):
        ctx, error = run_verb(
            verb[0], f"--name={name}", "--config", str(config), "--dry-run", *verb[1:]
        )
    assert ctx is None and error is None  # refused while the context was built: nothing sent


def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path):
    proc = run_cli("aws", "up", "--name", "*", "--data", str(tmp_path), "--image-train", SERVE,
                   "--image-serve", SERVE, "--region", REGION, "--dry-run")  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--name '*'" in proc.stderr and not proc.stdout


def test_the_longest_name_fits_every_derived_name():
    names = Names("d" * LONGEST).check()
    assert all(len(name) <= MAX_CHARS[kind] for kind, name in names.derived())
    kinds = {kind for kind, _ in names.derived()}
    assert kinds == set(MAX_CHARS)  # every limit is checked against a derived name
    with pytest.raises(ConfigError, match=f"use {LONGEST} characters or fewer"):
        Names("d" * (LONGEST + 1)).check()
    assert Names("Dogs-v2").check().name == "Dogs-v2"


# ---- the function: N's, or --adopt -------------------------------------------------------------


def function_answer(tags: dict[str, str]) -> dict:
    conf = {"FunctionName": "dogs", "FunctionArn": FUNCTION_ARN, "CodeSha256": "other"}
    return {"Configuration": conf, "Tags": tags}


def lambda_ctx(adopt: bool = False):
    """A context whose SageMaker finds no endpoint (DescribeEndpoint) and whose Lambda
    client the test stubs."""
    ctx, client = offline_ctx("lambda")
    ctx.out, ctx.adopt = io.StringIO(), adopt
    sm = ctx._clients["sagemaker"] = boto3.client(
        "sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    stub = Stubber(sm)
    stub.add_client_error("describe_endpoint", "ValidationException", "Could not find")
    stub.activate()
    return ctx, client


def test_a_same_named_function_without_ns_tag_is_refused_before_any_change():
    ctx, client = lambda_ctx()
    with Stubber(client) as stub:
        stub.add_response(
            "get_function", function_answer({"team": "payments"}), {"FunctionName": "dogs"}
        )
        with pytest.raises(
            ConfigError, match="function dogs exists without the tag dogbreed:name=dogs"
        ):
            functions.cmd_lambda(ctx, functions.LambdaOptions(serverless=False, public_url=True))
        stub.assert_no_pending_responses()
    ops = [r.operation for r in ctx.requests]
    assert ops == ["describe_endpoint", "get_function"]  # no update, no URL


def test_adopt_tags_the_function_then_goes_on():
    ctx, client = lambda_ctx(adopt=True)
    with Stubber(client) as stub:
        stub.add_response("get_function", function_answer({}), {"FunctionName": "dogs"})
        stub.add_response(
            "tag_resource", {}, {"Resource": FUNCTION_ARN, "Tags": {"dogbreed:name": "dogs"}}
        )
        stub.add_response("update_function_code", {}, None)
        with pytest.raises(AwsError, match="get_function_configuration"):  # not stubbed: stop
            functions.cmd_lambda(ctx, functions.LambdaOptions(serverless=False))
    ops = [r.operation for r in ctx.requests]
    assert ops[:4] == ["describe_endpoint", "get_function", "tag_resource", "update_function_code"]
    assert "adopted function dogs (tagged dogbreed:name=dogs)" in ctx.out.getvalue()


# ---- the endpoint, its model and config, its scaling, its alarms ------------------------------


def endpoint_answer() -> dict:
    return {
        "EndpointName": "dogs",
        "EndpointArn": f"{SM}:endpoint/dogs",
        "EndpointConfigName": "dogs-0000aaaa",
        "EndpointStatus": "InService",
        "CreationTime": "2026-01-01",
        "LastModifiedTime": "2026-01-01",
    }


def test_deploy_refuses_a_foreign_endpoint_before_creating_anything():
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", endpoint_answer())
        variants = [{"VariantName": "AllTraffic"}]
        config = {"EndpointConfigName": "dogs-0000aaaa", "EndpointConfigArn": f"{SM}:x",
                  "CreationTime": 0, "ProductionVariants": variants}  # fmt: skip
        s.add_response("describe_endpoint_config", config)  # real-time, like the deploy
        s.add_response("list_tags", {"Tags": FOREIGN}, {"ResourceArn": f"{SM}:endpoint/dogs"})
        with pytest.raises(ConfigError, match="endpoint dogs exists without the tag"):
            cmd_deploy(ctx, DeployOptions(SERVE, "s3://b/m.tar.gz"))
        s.assert_no_pending_responses()
    assert not [r for r in ctx.requests if r.operation.startswith(("create_", "update_"))]


def test_deploy_refuses_a_foreign_model_of_the_same_name():
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm) as s:
        s.add_client_error("describe_endpoint", "ValidationException", "Could not find")
        s.add_response(
            "describe_model", {"ModelName": "m", "ModelArn": f"{SM}:model/m", "CreationTime": 0}
        )
        s.add_response("list_tags", {"Tags": []}, {"ResourceArn": f"{SM}:model/m"})
        with pytest.raises(ConfigError, match=r"model dogs-[0-9a-f]{8} exists without the tag"):
            cmd_deploy(ctx, DeployOptions(SERVE, "s3://b/m.tar.gz"))
        s.assert_no_pending_responses()


def test_autoscale_refuses_a_foreign_endpoint_and_adopt_tags_it():
    ctx, sm = offline_ctx("sagemaker")
    arn = {"ResourceArn": f"{SM}:endpoint/dogs"}
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", endpoint_answer())
        s.add_response("list_tags", {"Tags": FOREIGN}, arn)
        with pytest.raises(ConfigError, match="pass --adopt to take it over"):
            cmd_autoscale(ctx, ScaleOptions())
        ctx.adopt, ctx.out = True, io.StringIO()
        s.add_response("describe_endpoint", endpoint_answer())
        s.add_response("list_tags", {"Tags": FOREIGN}, arn)
        s.add_response("add_tags", {"Tags": TAGGED}, {**arn, "Tags": TAGGED})
        scaling = ctx._clients["application-autoscaling"] = offline_ctx("application-autoscaling")[
            1
        ]
        with Stubber(scaling), pytest.raises(AwsError):  # scaling answers nothing: stop there
            cmd_autoscale(ctx, ScaleOptions())
        s.assert_no_pending_responses()
    assert "adopted endpoint dogs" in ctx.out.getvalue()


def test_a_foreign_alarm_is_refused_before_either_alarm_changes_and_adopt_tags_it():
    ctx, _ = offline_ctx("sagemaker")
    cw = ctx._clients["cloudwatch"] = offline_ctx("cloudwatch")[1]
    ctx.out = io.StringIO()
    alarm = {"AlarmName": "dogs-model-latency", "AlarmArn": "arn:aws:cloudwatch:r:1:alarm:x"}
    with Stubber(cw) as c:
        c.add_response("describe_alarms", {"MetricAlarms": [alarm]})
        c.add_response("list_tags_for_resource", {"Tags": FOREIGN})
        with pytest.raises(ConfigError, match="alarm dogs-model-latency exists without the tag"):
            ensure_alarms(ctx, Thresholds(0.05, 500, 2))
        c.assert_no_pending_responses()  # nothing put: not even the other alarm
        ctx.adopt = True
        c.add_response("describe_alarms", {"MetricAlarms": [alarm]})
        c.add_response("list_tags_for_resource", {"Tags": FOREIGN})
        c.add_response("tag_resource", {}, {"ResourceARN": alarm["AlarmArn"], "Tags": TAGGED})
        c.add_response("put_metric_alarm", {})
        c.add_response("put_metric_alarm", {})
        ensure_alarms(ctx, Thresholds(0.05, 500, 2))
        c.assert_no_pending_responses()


# ---- down and status: every page, N's names exactly ------------------------------------------


def page(kind: str, names: list[str], token: str | None = None) -> dict:
    key, name_key, arn_key = {
        "model": ("Models", "ModelName", "ModelArn"),
        "config": ("EndpointConfigs", "EndpointConfigName", "EndpointConfigArn"),
    }[kind]
    items = [{name_key: n, arn_key: f"{SM}:{kind}/{n.lower()}", "CreationTime": 0} for n in names]
    return {key: items, **({"NextToken": token} if token else {})}


def test_down_deletes_ns_models_and_configs_on_every_page_and_no_lookalike():
    ctx, sm = offline_ctx("sagemaker")
    ctx.out = io.StringIO()
    lookalikes = ["dogs-v2-0123abcd", "hotdogs-0123abcd", "dogs-0123abcdX"]
    listed = {"NameContains": "dogs", "MaxResults": 100}
    with Stubber(sm) as s:
        s.add_response("list_endpoint_configs", page("config", lookalikes, "next"), listed)
        s.add_response(
            "list_endpoint_configs",
            page("config", ["dogs-0000aaaa"]),
            {**listed, "NextToken": "next"},
        )
        s.add_response("list_models", page("model", lookalikes, "t2"), listed)
        s.add_response(
            "list_models", page("model", ["dogs-0000bbbb"]), {**listed, "NextToken": "t2"}
        )
        s.add_response("list_tags", {"Tags": TAGGED})
        s.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "dogs-0000aaaa"})
        s.add_response("list_tags", {"Tags": TAGGED})
        s.add_response("delete_model", {}, {"ModelName": "dogs-0000bbbb"})
        assert teardown._models_and_configs(ctx) == []
        s.assert_no_pending_responses()


def test_status_counts_ns_training_jobs_over_every_page():
    ctx, sm = offline_ctx("sagemaker")
    job = {
        "TrainingJobArn": f"{SM}:training-job/x",
        "CreationTime": 0,
        "TrainingJobStatus": "Completed",
    }
    first = [{**job, "TrainingJobName": n} for n in ("dogs-v2-0123abcd", "dogs-1111aaaa")]
    second = [{**job, "TrainingJobName": "dogs-2222bbbb"}]
    with Stubber(sm) as s:
        s.add_response("list_training_jobs", {"TrainingJobSummaries": first, "NextToken": "n"})
        s.add_response("list_training_jobs", {"TrainingJobSummaries": second})
        s.add_response(
            "describe_training_job",
            {**job, "TrainingJobName": "dogs-1111aaaa", "SecondaryStatus": "Completed",
             "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ModelArtifacts":
             {"S3ModelArtifacts": "s3://b/m.tar.gz"}, "ResourceConfig": {"VolumeSizeInGB": 1},
             "StoppingCondition": {}},
            {"TrainingJobName": "dogs-1111aaaa"},
        )  # fmt: skip
        [row] = status._training(ctx)
        s.assert_no_pending_responses()
    assert row.name == "dogs-1111aaaa" and row.detail.startswith("newest of 2,")


# ---- --provisioned 0 removes it ---------------------------------------------------------------


def test_provisioned_zero_deletes_the_config_on_live_and_a_rerun_finds_none():
    ctx, client = lambda_ctx()
    where = {"FunctionName": "dogs", "Qualifier": "live"}
    with Stubber(client) as stub:
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 5})
        stub.add_response(
            "get_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 2, "Status": "READY"},
            where,
        )
        stub.add_response("delete_provisioned_concurrency_config", {}, where)
        functions._concurrency(ctx, reserved=5, provisioned=0)
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 5})
        stub.add_client_error(
            "get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException"
        )
        functions._concurrency(ctx, reserved=5, provisioned=0)
        stub.assert_no_pending_responses()
    out = ctx.out.getvalue()
    assert "removed provisioned concurrency of dogs:live" in out
    assert "provisioned concurrency of dogs:live: none" in out


def test_the_dry_run_of_provisioned_zero_shows_the_delete():
    ctx, _ = lambda_ctx()
    ctx.dry_run = True
    functions.cmd_lambda(ctx, functions.LambdaOptions(provisioned=0))
    assert "(dry run) lambda.delete_provisioned_concurrency_config " in ctx.out.getvalue()


def test_down_keep_roles_sends_no_iam_write_and_says_the_roles_are_left(config):
    ctx, error = run_verb(
        "down", "--name", "dogs", "--config", str(config), "--dry-run", "--keep-roles"
    )
    assert error is None, error
    assert not [r for r in ctx.requests if r.service == "iam"]
    assert "the roles dogs-sagemaker-execution and dogs-lambda (--keep-roles)" in ctx.out.getvalue()
