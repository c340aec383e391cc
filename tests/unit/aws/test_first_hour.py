"""A newcomer's first hour with `dogbreed aws`: a setting still holding the placeholder
bucket stops a verb before any request (a dry run warns and goes on), output a person
reads (each `[k/8]` header before its lines, one line for an upload's files), errors
that name their fix (provisioned concurrency, an operator without IAM writes), a
second `down` that says what it found, and the local twins' answers (InvokeEndpoint's
413, a model server that refuses the connection). Offline or loopback only."""

from __future__ import annotations

import io
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from dogbreed.aws import functions, roles, teardown
from dogbreed.aws.config import PLACEHOLDER_BUCKET, load_config, placeholders
from dogbreed.aws.invoke_twin import MAX_BODY_BYTES, InvokeEndpointGateway
from dogbreed.cli.main import main
from dogbreed.core.errors import AwsError, ConfigError
from support.aws import ACCOUNT, CONFIG, REGION, offline_ctx
from support.cli import run_cli
from support.iam_check import run_verb, without_credentials

SHIPPED = Path(__file__).resolve().parents[3] / "dogbreed-aws.json"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
PLACEHOLDER = {
    "region": REGION,
    "data": f"s3://{PLACEHOLDER_BUCKET}/dogImages",
    "output": f"s3://{PLACEHOLDER_BUCKET}/output",
    "checkpoints": f"s3://{PLACEHOLDER_BUCKET}/checkpoints",
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No credentials, cwd a temporary directory, a dataset of two files."""
    without_credentials(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        photo = tmp_path / "dogImages" / "train" / "akita" / f"{k}.jpg"
        photo.parent.mkdir(parents=True, exist_ok=True)
        photo.write_bytes(b"\xff\xd8" + b"\0" * 1500 + b"\xff\xd9")
    return tmp_path


def write_config(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(settings))
    return path


def up_argv(tmp_path: Path, *flags: str) -> list[str]:
    data = str(tmp_path / "dogImages")
    return ["aws", "up", "--name", "dogs", "--data", data, "--image-train", IMAGE,
            "--image-serve", IMAGE, *flags]  # fmt: skip


# ---- 1. placeholders: stopped before the first request, named with the fix -----------------


def test_the_shipped_settings_file_is_caught_as_placeholders():
    config = load_config(SHIPPED)
    assert placeholders(config, ("data", "output", "checkpoints", "region")) == [
        "data", "output", "checkpoints",
    ]  # fmt: skip


def test_up_with_placeholders_stops_in_one_line_naming_the_keys_the_file_and_the_flag(
    offline, capsys
):
    path = write_config(offline, PLACEHOLDER)
    assert main([*up_argv(offline), "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert "'data', 'output', 'checkpoints'" in err and PLACEHOLDER_BUCKET in err
    assert f"edit them in {path}" in err and "--data s3://... for 'data'" in err


def test_without_a_settings_file_the_defaults_placeholders_name_the_file_to_write(offline):
    with pytest.raises(ConfigError) as raised:  # refused while the context is built
        run_verb("train", "--name", "dogs", "--image", IMAGE, "--region", REGION)
    error = str(raised.value)
    assert "write them into ./dogbreed-aws.json" in error
    assert "--data s3://... for 'data' and --output s3://... for 'output'" in error


def test_a_flag_overrides_one_placeholder_and_the_rest_are_still_named(offline):
    path = write_config(offline, PLACEHOLDER)
    with pytest.raises(ConfigError) as raised:
        run_verb("train", "--name", "dogs", "--image", IMAGE, "--config", str(path),
                 "--data", "s3://mine/dogImages", "--output", "s3://mine/output")  # fmt: skip
    assert "setting 'checkpoints' still names the placeholder bucket" in str(raised.value)
    assert "edit it in" in str(raised.value) and "--data" not in str(raised.value)


def test_verbs_that_send_no_placeholder_go_on(offline):
    path = write_config(offline, PLACEHOLDER)
    for verb, *rest in (["down"], ["autoscale"], ["iam", "--admin-policy"]):
        # Past the check, a real run stops at its first request: no credentials here.
        _, error = run_verb(verb, "--name", "dogs", "--config", str(path), *rest)
        assert isinstance(error, AwsError) and "credentials" in str(error), (verb, error)


def test_a_dry_run_says_so_first_warns_of_placeholders_and_plans_on(offline, capsys):
    path = write_config(offline, PLACEHOLDER)
    assert main([*up_argv(offline), "--config", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dry run of `aws up` for dogs: nothing is created")
    assert lines[1].startswith("warning: settings 'data', 'output', 'checkpoints' still name")
    assert lines[1].endswith("a real run stops here")
    assert lines[2] == "[1/8] data"
    assert "deployment dogs: nothing changed" in "\n".join(lines)


def test_a_dry_run_refused_by_a_check_prints_the_error_alone(offline, capsys):
    path = write_config(offline, CONFIG)
    argv = [*up_argv(offline), "--config", str(path), "--dry-run", "--serverless"]
    assert main([*argv, "--memory-mb", "1000"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "serverless memory" in err and err.count("\n") == 1


def test_a_printed_policy_stays_json_and_the_notice_goes_to_stderr(offline, capsys):
    path = write_config(offline, PLACEHOLDER)
    argv = ["aws", "iam", "--name", "dogs", "--config", str(path), "--dry-run"]
    assert main([*argv, "--operator-policy"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["Version"] == "2012-10-17"
    assert "dry run of `aws iam`" in err and "settings 'data', 'output' still name" in err
    assert main([*argv[:-1], "--operator-policy"]) == 2  # a real run: the policy would be wrong


# ---- 2. output a person reads --------------------------------------------------------------


def dry_up(tmp_path: Path, *flags: str) -> str:
    path = write_config(tmp_path, CONFIG)
    ctx, error = run_verb(*up_argv(tmp_path, "--config", str(path), "--dry-run", *flags)[1:])
    assert error is None, error
    return ctx.out.getvalue()


def test_each_step_header_comes_before_its_lines_and_its_outcome_last(offline):
    lines = dry_up(offline).splitlines()
    headers = [i for i, line in enumerate(lines) if re.match(r"^\[\d/8\] ", line)]
    assert [lines[i] for i in headers[:2]] == ["[1/8] data", "[2/8] IAM roles"]
    iam = lines[headers[1] + 1 : headers[2]]
    assert any("created role dogs-sagemaker-execution" in line for line in iam)
    assert all(line.startswith("    ") for line in iam)
    assert iam[-1] == "    -> IAM roles dogs-sagemaker-execution, dogs-lambda: ready"


def test_a_dry_run_sums_an_upload_up_in_one_line_and_verbose_lists_each_file(offline):
    output = dry_up(offline)
    assert "s3.put_object {" not in output
    assert (
        "    (dry run) would upload 2 files (3.0 kB) to s3://dogs-bucket/dogImages/, one "
        "s3.put_object each" in output
    )
    verbose = dry_up(offline, "--verbose")
    assert verbose.count("(dry run) s3.put_object {") == 2


# ---- 3. provisioned concurrency refused: the error names --provisioned 0 --------------------


def lambda_ctx():
    ctx, client = offline_ctx("lambda")
    ctx.out = io.StringIO()
    return ctx, client


NOT_OFFERED = "<!doctype html>\n<title>404 Not Found</title>"


def test_refused_provisioned_concurrency_names_provisioned_0_and_its_cost():
    ctx, client = lambda_ctx()
    with Stubber(client) as stub:
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 5})
        stub.add_client_error(
            "put_provisioned_concurrency_config", "404", NOT_OFFERED, http_status_code=404
        )
        with pytest.raises(AwsError) as raised:
            functions._concurrency(ctx, 5, 2)
    message = str(raised.value)
    assert "does not offer this call" in message and "--provisioned 0" in message
    assert "cold start" in message and "$5.48 a month" in message  # 2 x 256 MB


def test_provisioned_0_goes_on_where_the_emulator_lacks_the_call():
    ctx, client = lambda_ctx()
    with Stubber(client) as stub:
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 5})
        stub.add_client_error(
            "get_provisioned_concurrency_config", "404", NOT_OFFERED, http_status_code=404
        )
        functions._concurrency(ctx, 5, 0)
        stub.assert_no_pending_responses()
    assert "provisioned concurrency of dogs:live: none (the endpoint has no" in ctx.out.getvalue()


# ---- 7. an operator without IAM writes: the administrator's one-time step -------------------


def test_access_denied_on_a_role_names_the_administrators_step():
    ctx, client = offline_ctx("iam")
    ctx.out = io.StringIO()
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("get_role", "NoSuchEntity", "no such role", 404)
        stub.add_client_error("create_role", "AccessDenied", "not authorized", 403)
        with pytest.raises(AwsError) as raised:
            roles.cmd_iam(ctx)
    message = str(raised.value)
    assert message.startswith("iam create_role: AccessDenied: not authorized")
    assert "`dogbreed aws iam --name dogs --admin-policy`" in message
    assert "runs `dogbreed aws iam --name dogs`" in message


# ---- 4. a second `down`: what it found -----------------------------------------------------


def test_a_down_that_finds_nothing_says_so():
    ctx, _ = offline_ctx("sagemaker")
    ctx.out = io.StringIO()
    line = teardown._nothing(ctx, keep_roles=False)
    assert line.startswith("nothing of deployment dogs was left to delete: no endpoint")
    assert "or roles tagged dogbreed:name=dogs (already gone)" in line


# ---- 5, 6. the local twins: a refused connection, InvokeEndpoint's 413 ---------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed


def runtime_client(url: str):
    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name=REGION,
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip


def test_the_gateway_refuses_a_body_over_6_mb_with_413_as_sagemaker_does():
    gateway = InvokeEndpointGateway({"dogs": f"http://127.0.0.1:{closed_port()}"}).start()
    try:
        with pytest.raises(ClientError) as raised:
            runtime_client(gateway.url).invoke_endpoint(
                EndpointName="dogs", ContentType="image/jpeg", Body=b"\xff" * (MAX_BODY_BYTES + 1)
            )
        request = urllib.request.Request(
            f"{gateway.url}/endpoints/dogs/invocations", data=b"\0" * MAX_BODY_BYTES
        )
        with pytest.raises(urllib.error.HTTPError) as at_limit:  # at the limit: forwarded
            urllib.request.urlopen(request, timeout=30)
    finally:
        gateway.shutdown()
        gateway.server_close()
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Message"] == "HTTP content length exceeded 6291456 bytes."
    assert at_limit.value.code == 503 and gateway.last_failure is not None


def test_the_gateway_names_a_model_server_that_refuses_the_connection():
    server = f"http://127.0.0.1:{closed_port()}"
    logged: list[str] = []
    gateway = InvokeEndpointGateway({"dogs": server}, on_failure=logged.append).start()
    try:
        with pytest.raises(ClientError) as raised:
            runtime_client(gateway.url).invoke_endpoint(EndpointName="dogs", Body=b"\xff")
    finally:
        gateway.shutdown()
        gateway.server_close()
    assert raised.value.response["Error"]["Code"] == "ServiceUnavailable"
    said = f"the model server {server} refused the connection (Connection refused)"
    assert raised.value.response["Error"]["Message"].startswith(said)
    assert logged and logged[-1].startswith(said)


def test_lambda_local_says_the_server_refused_the_connection(tmp_path):
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xd9")
    server = f"http://127.0.0.1:{closed_port()}"
    proc = run_cli("lambda-local", "--server", server, photo, timeout=120)
    assert proc.returncode == 7, proc.stderr
    assert f"{photo}: the model server {server} refused the connection" in proc.stderr
    assert "failed to classify" not in proc.stderr
