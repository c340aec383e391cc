"""AWS requests checked offline: policies (parliament), botocore's service models, config."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import context, functions
from dogbreed.aws import policies as iam
from dogbreed.aws.config import load_config
from dogbreed.core.errors import ConfigError
from support.aws import ACCOUNT, REGION, offline_ctx
from support.cli import run_cli

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
CONFIG = {
    "data": "s3://dogs-bucket/dogImages",
    "output": "s3://dogs-bucket/output",
    "checkpoints": "s3://dogs-bucket/checkpoints",
}


def test_policies_pass_the_parliament_linter():
    import parliament  # a real IAM policy linter

    for doc in (
        iam.sagemaker_policy(
            REGION,
            ACCOUNT,
            "dogs",
            CONFIG["data"],
            CONFIG["output"],
            CONFIG["checkpoints"],
            ["dogbreed-train", "dogbreed-serve"],
        ),
        iam.lambda_policy(REGION, ACCOUNT, "dogs", "Dogs", "s3://in-bucket/uploads"),
    ):
        findings = parliament.analyze_policy_string(json.dumps(doc)).findings
        assert findings == [], [(f.issue, f.detail) for f in findings]


def test_provisioned_concurrency_request_fits_the_service_model():
    ctx, client = offline_ctx("lambda")
    with Stubber(client) as stub:
        stub.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": 5},
            {"FunctionName": "dogs"},
        )
        stub.add_response(
            "put_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 2, "Status": "IN_PROGRESS"},
            {"FunctionName": "dogs", "Qualifier": "live", "ProvisionedConcurrentExecutions": 2},
        )
        functions._concurrency(ctx, reserved=5, provisioned=2)
        stub.assert_no_pending_responses()


# ---- the error classifier, config checks, one-line errors, light imports --------------------


def test_missing_codes_fit_the_service_models():
    """Each code of context.MISSING is one of the call's error shapes in botocore's model,
    or one the service answers without declaring it (checked against moto above)."""
    undeclared = {("sagemaker", "ValidationException"), ("s3", "404")}
    for (service, op), codes in context.MISSING.items():
        client = boto3.client(
            service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
        )
        operation = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[op])
        declared = {s.metadata.get("error", {}).get("code", s.name) for s in operation.error_shapes}
        for code in codes:
            assert code in declared or (service, code) in undeclared, (service, op, code)


def test_upload_data_to_a_non_s3_uri_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dogbreed", "aws", "upload-data", "/tmp", "bucket/prefix"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "'bucket/prefix'" in proc.stderr and "s3://bucket/prefix" in proc.stderr


def test_an_unreadable_image_is_one_line(tmp_path):
    proc = run_cli("aws", "invoke", "--name", "dogs", str(tmp_path / "none.jpg"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"train": {"instance_count": "two"}}, "'train.instance_count' must be a number"),
        ({"train": {"max_runtime_s": 1.5}}, "'train.max_runtime_s' must be a whole number"),
        ({"train": None}, "'train' must be a JSON object"),
        ({"lambda": {"allow_url_fetch": "maybe"}}, "'lambda.allow_url_fetch' must be true"),
        ({"repositories": "dogbreed-train"}, "'repositories' must be a JSON list"),
        ({"tune": {"batch_sizes": [[32]]}}, "'tune.batch_sizes' must be a string or number"),
        ({"lambda": {"s3_input": "bucket/in"}}, "lambda.s3_input 'bucket/in' is not an S3"),
        ({"output": "s3://"}, "output 's3://' is not an S3 location"),
        ({"trian": {}}, "unknown setting 'trian'"),
        (["not", "an", "object"], "must hold a JSON object"),
    ],
)
def test_malformed_config_names_the_setting(tmp_path, content, named):
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(path)


def test_config_values_are_typed_and_flags_override_them(tmp_path):
    path = tmp_path / "aws.json"
    path.write_text(json.dumps({"train": {"instance_count": "2", "hyperparameters": {"lr": 1}}}))
    config = load_config(path, {"data": "s3://other/data", "output": None})
    assert config["train"]["instance_count"] == 2
    assert config["train"]["hyperparameters"] == {"lr": "1"}  # replaced whole, as strings
    assert config["data"] == "s3://other/data" and config["output"].startswith("s3://")
    with pytest.raises(ConfigError, match=r"^data 'x' is not an S3 location"):
        load_config(path, {"data": "x"})
