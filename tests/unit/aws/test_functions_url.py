"""`aws lambda`'s settings and front door, checked offline: botocore's Stubber holds each
request against the Lambda service model (moto keeps fewer fields than AWS does)."""

from __future__ import annotations

import io
import json

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from dogbreed.aws import functions
from dogbreed.aws.context import aws_error
from dogbreed.core.errors import ConfigError
from support.aws import ACCOUNT, REGION, offline_ctx

URL = "https://abc123.lambda-url.us-east-1.on.aws/"
WHERE = {"FunctionName": "dogs", "Qualifier": "live"}


def url_config(auth: str, created: bool = False) -> dict:
    """A Get/UpdateFunctionUrlConfig answer (CreateFunctionUrlConfig's has no LastModifiedTime)."""
    answer = {
        "FunctionUrl": URL,
        "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dogs:live",
        "AuthType": auth,
        "CreationTime": "2026-01-01T00:00:00.000+0000",
        "LastModifiedTime": "2026-01-01T00:00:00.000+0000",
    }
    if created:
        del answer["LastModifiedTime"]
    return answer


def policy(*sids: str) -> dict:
    statements = [{"Sid": sid, "Effect": "Allow", "Principal": "*"} for sid in sids]
    return {"Policy": json.dumps({"Version": "2012-10-17", "Statement": statements})}


def lambda_ctx():
    ctx, client = offline_ctx("lambda")
    ctx.out = io.StringIO()
    return ctx, client


def test_url_fetch_is_off_unless_turned_on():
    ctx, _ = offline_ctx("lambda")
    env = functions.function_settings(ctx)["Environment"]["Variables"]
    assert env == {"ENDPOINT_NAME": "dogs", "ALLOW_URL_FETCH": "false"}
    on = functions.function_settings(ctx, allow_url_fetch=True)["Environment"]["Variables"]
    assert on["ALLOW_URL_FETCH"] == "true"
    ctx.config["lambda"]["allow_url_fetch"] = True
    assert functions.function_settings(ctx)["Environment"]["Variables"]["ALLOW_URL_FETCH"] == "true"
    off = functions.function_settings(ctx, allow_url_fetch=False)
    assert off["Environment"]["Variables"]["ALLOW_URL_FETCH"] == "false"


@pytest.mark.parametrize(
    ("s3_input", "prefix"),
    [("s3://in-bucket/uploads", "s3://in-bucket/uploads/"), ("s3://b/a/b/", "s3://b/a/b/")],
)
def test_s3_input_becomes_the_functions_prefix(s3_input, prefix):
    ctx, _ = offline_ctx("lambda")
    ctx.config["lambda"]["s3_input"] = s3_input
    assert functions.function_settings(ctx)["Environment"]["Variables"]["S3_PREFIX"] == prefix


@pytest.mark.parametrize("s3_input", ["s3://in-bucket", "s3://in-bucket/", "s3://in-bucket//"])
def test_a_whole_bucket_s3_input_is_refused_at_deploy_time(s3_input):
    ctx, _ = offline_ctx("lambda")
    ctx.config["lambda"]["s3_input"] = s3_input
    with pytest.raises(ConfigError, match="is a whole bucket: give a prefix"):
        functions.function_settings(ctx)


def test_the_default_front_door_is_an_iam_url_and_reruns_keep_it():
    ctx, client = lambda_ctx()
    with Stubber(client) as stub:
        stub.add_client_error("get_function_url_config", "ResourceNotFoundException", "none")
        stub.add_response(
            "create_function_url_config",
            url_config("AWS_IAM", created=True),
            {**WHERE, "AuthType": "AWS_IAM"},
        )
        stub.add_client_error("get_policy", "ResourceNotFoundException", "no policy")
        assert functions.ensure_function_url(ctx) == URL
        stub.add_response("get_function_url_config", url_config("AWS_IAM"), WHERE)
        stub.add_client_error("get_policy", "ResourceNotFoundException", "no policy")
        assert functions.ensure_function_url(ctx) == URL
        stub.assert_no_pending_responses()
    out = ctx.out.getvalue()
    assert "created function URL of dogs:live (auth AWS_IAM)" in out and "unchanged" in out
    assert "warning" not in out and f"front door: {URL}" in out


def test_a_public_url_takes_a_flag_warns_and_grants_both_invoke_actions():
    ctx, client = lambda_ctx()
    sids = list(functions.PUBLIC_URL_PERMISSIONS)
    with Stubber(client) as stub:
        stub.add_response("get_function_url_config", url_config("AWS_IAM"), WHERE)
        stub.add_response(
            "update_function_url_config", url_config("NONE"), {**WHERE, "AuthType": "NONE"}
        )
        stub.add_client_error("get_policy", "ResourceNotFoundException", "no policy")
        stub.add_response(
            "add_permission",
            {"Statement": "{}"},
            {
                **WHERE,
                "StatementId": sids[0],
                "Principal": "*",
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionUrlAuthType": "NONE",
            },
        )
        stub.add_response(
            "add_permission",
            {"Statement": "{}"},
            {
                **WHERE,
                "StatementId": sids[1],
                "Principal": "*",
                "Action": "lambda:InvokeFunction",
                "InvokedViaFunctionUrl": True,
            },
        )
        assert functions.ensure_function_url(ctx, public=True) == URL
        # A rerun changes nothing; going back to IAM auth revokes both grants.
        stub.add_response("get_function_url_config", url_config("NONE"), WHERE)
        stub.add_response("get_policy", policy(*sids), WHERE)
        functions.ensure_function_url(ctx, public=True)
        stub.add_response("get_function_url_config", url_config("NONE"), WHERE)
        stub.add_response(
            "update_function_url_config", url_config("AWS_IAM"), {**WHERE, "AuthType": "AWS_IAM"}
        )
        stub.add_response("get_policy", policy(*sids, "SomeoneElses"), WHERE)
        for sid in sids:
            stub.add_response("remove_permission", {}, {**WHERE, "StatementId": sid})
        functions.ensure_function_url(ctx)
        stub.assert_no_pending_responses()
    warnings = [x for x in ctx.out.getvalue().splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2 and "anyone" in warnings[0]


def test_the_dry_run_prints_the_url_requests():
    ctx, _ = lambda_ctx()
    ctx.dry_run = True
    functions.cmd_lambda(ctx, functions.LambdaOptions(public_url=True, provisioned=0))
    lines = ctx.out.getvalue().splitlines()
    requests = [x.split(" ", 3)[2:] for x in lines if x.startswith("(dry run) lambda.")]
    ops = [op for op, _ in requests]
    url_ops = [
        "lambda.create_function_url_config",
        "lambda.add_permission",
        "lambda.add_permission",
    ]
    assert ops[-3:] == url_ops
    sent = {op: json.loads(params) for op, params in requests}
    assert sent["lambda.create_function_url_config"] == {**WHERE, "AuthType": "NONE"}
    create = sent["lambda.create_function"]
    assert create["Environment"]["Variables"]["ALLOW_URL_FETCH"] == "false"


def test_an_api_the_endpoint_lacks_is_one_line():
    """moto answers its web server's 404 page for calls it lacks (provisioned concurrency)."""
    page = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    exc = ClientError(
        {"Error": {"Code": "404", "Message": page}, "ResponseMetadata": {"HTTPStatusCode": 404}},
        "PutProvisionedConcurrencyConfig",
    )
    message = str(aws_error("lambda", "put_provisioned_concurrency_config", exc))
    assert "\n" not in message and "<" not in message
    assert message.startswith("lambda put_provisioned_concurrency_config: HTTP 404: ")
    assert "does not offer this call" in message
