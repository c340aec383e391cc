"""`aws transform` offline: the CreateTransformJob request (botocore's Stubber checks each
request against the service model), its idempotent name, and the checks that refuse a
job before any request: input outside transform.input, output outside N's prefix, no
model to run."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import transform
from dogbreed.aws.context import Names
from dogbreed.aws.policies import sagemaker_policy
from dogbreed.aws.transform import TransformOptions, cmd_transform, transform_request
from dogbreed.core.errors import AwsError, ConfigError
from support.aws import ACCOUNT, REGION, offline_ctx

INPUT = "s3://dogs-bucket/in"
OUTPUT = "s3://dogs-bucket/output"
OWN = f"{OUTPUT}/dogs"
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
MODEL = "dogs-0123abcd"
CONFIG_NAME = "dogs-4567cdef"
TAGS = [{"Key": "dogbreed:name", "Value": "dogs"}]
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"


def context(transform_input: str | None = INPUT):
    """Deployment 'dogs' with SageMaker and IAM answered by Stubbers."""
    ctx, sagemaker = offline_ctx("sagemaker")
    ctx.config.update(output=OUTPUT, data="s3://dogs-bucket/dogImages")
    ctx.config["checkpoints"] = "s3://dogs-bucket/checkpoints"
    ctx.config["transform"]["input"] = transform_input
    iam = boto3.client("iam", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    ctx._clients["iam"] = iam
    ctx.out = io.StringIO()
    return ctx, Stubber(sagemaker), Stubber(iam)


def role_policy(stub: Stubber, transform_input: str | None = INPUT) -> None:
    """The execution role's inline policy, as `aws iam` wrote it for `transform_input`."""
    doc = sagemaker_policy(
        REGION,
        ACCOUNT,
        "dogs",
        "s3://dogs-bucket/dogImages",
        OUTPUT,
        "s3://dogs-bucket/checkpoints",
        ["dogbreed-serve"],
        transform_input,
    )
    role = "dogs-sagemaker-execution"
    stub.add_response(
        "get_role_policy",
        {"RoleName": role, "PolicyName": role, "PolicyDocument": json.dumps(doc)},
        {"RoleName": role, "PolicyName": role},
    )


def endpoint_model(stub: Stubber, model: str = MODEL) -> None:
    """N's endpoint runs `model` (tagged for N)."""
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": "dogs",
            "EndpointArn": f"{ARN}:endpoint/dogs",
            "EndpointConfigName": CONFIG_NAME,
            "EndpointStatus": "InService",
            "CreationTime": "2026-01-01",
            "LastModifiedTime": "2026-01-01",
        },
        {"EndpointName": "dogs"},
    )
    stub.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": CONFIG_NAME,
            "EndpointConfigArn": f"{ARN}:endpoint-config/{CONFIG_NAME}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model}],
            "CreationTime": "2026-01-01",
        },
        {"EndpointConfigName": CONFIG_NAME},
    )
    if not Names("dogs").owns(model):
        return
    stub.add_response(
        "describe_model",
        {"ModelName": model, "ModelArn": f"{ARN}:model/{model}", "CreationTime": "2026-01-01"},
        {"ModelName": model},
    )
    stub.add_response("list_tags", {"Tags": TAGS}, {"ResourceArn": f"{ARN}:model/{model}"})


def no_job(stub: Stubber, name: str) -> None:
    stub.add_client_error(
        "describe_transform_job",
        "ValidationException",
        f"Could not find job {name}",
        expected_params={"TransformJobName": name},
    )


def expected(ctx, opts: TransformOptions) -> dict:
    source = transform.job_input(ctx, opts.input)
    output = transform.job_output(ctx, opts.output)
    resources = transform._resources(ctx, opts)
    return transform_request(ctx, MODEL, source, output, resources, opts.jsonlines)


def run(opts: TransformOptions, found: dict | None = None) -> tuple[str, dict, str]:
    """cmd_transform on N's endpoint model: its job name, the create request, the output."""
    ctx, sm, iam = context()
    request = expected(ctx, opts)
    name = request["TransformJobName"]
    role_policy(iam)
    endpoint_model(sm)
    if found is None:
        no_job(sm, name)
        sm.add_response(
            "create_transform_job", {"TransformJobArn": f"{ARN}:transform-job/{name}"}, request
        )
    else:
        sm.add_response("describe_transform_job", found, {"TransformJobName": name})
        no_job(sm, transform.attempt_name(ctx, name, 1))
    with sm, iam:
        assert cmd_transform(ctx, opts) == name
        sm.assert_no_pending_responses()
    return name, request, ctx.out.getvalue()


def test_the_default_job_sends_each_image_whole_and_lets_the_container_size_it():
    name, request, out = run(TransformOptions(INPUT))
    assert name.startswith("dogs-") and Names("dogs").owns(name)
    assert request["ModelName"] == MODEL
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{INPUT}/"}},
        "ContentType": "application/x-image",  # one of serve/codec.py's IMAGE_TYPES
        "SplitType": "None",
    }
    assert request["TransformOutput"] == {
        "S3OutputPath": f"{OWN}/transform/{name}",
        "Accept": "application/json",
        "AssembleWith": "None",
    }
    assert request["TransformResources"] == {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1}
    # SageMaker asks the container's GET /execution-parameters for these.
    for unset in ("MaxConcurrentTransforms", "MaxPayloadInMB", "BatchStrategy", "Environment"):
        assert unset not in request
    assert request["Tags"] == TAGS
    assert f"created transform job {name} on model {MODEL}" in out


def test_jsonlines_split_by_line_several_records_a_request():
    _, request, _ = run(TransformOptions(INPUT, jsonlines=True, instance_count=2))
    assert request["TransformInput"]["ContentType"] == "application/jsonlines"
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["BatchStrategy"] == "MultiRecord"
    assert request["TransformOutput"]["Accept"] == "application/jsonlines"
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["TransformResources"]["InstanceCount"] == 2
    assert "MaxPayloadInMB" not in request and "MaxConcurrentTransforms" not in request


def test_the_name_is_a_digest_of_the_request_and_a_rerun_finds_the_job():
    ctx, _, _ = context()
    first = expected(ctx, TransformOptions(INPUT))["TransformJobName"]
    assert expected(ctx, TransformOptions(f"{INPUT}/"))["TransformJobName"] == first
    others = [
        TransformOptions(INPUT, jsonlines=True),
        TransformOptions(f"{INPUT}/batch-2"),
        TransformOptions(INPUT, instance_type="ml.m5.xlarge"),
        TransformOptions(INPUT, output=f"{OWN}/scores"),
    ]
    assert first not in {expected(ctx, o)["TransformJobName"] for o in others}
    found = {
        "TransformJobName": first,
        "TransformJobArn": f"{ARN}:transform-job/{first}",
        "TransformJobStatus": "InProgress",
        "ModelName": MODEL,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": INPUT}}
        },
        "TransformOutput": {"S3OutputPath": OWN},
        "TransformResources": {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1},
        "CreationTime": "2026-01-01",
    }
    name, _, out = run(TransformOptions(INPUT), found=found)
    assert name == first and "unchanged" in out and "created" not in out


@pytest.mark.parametrize(
    ("opts", "says"),
    [
        (TransformOptions(INPUT, output="s3://dogs-bucket/elsewhere"), "may write only there"),
        (TransformOptions(INPUT, output=f"{OUTPUT}/dogs-v2/x"), "lies outside"),
        (TransformOptions(INPUT, output=OUTPUT), "lies outside"),
        (TransformOptions("s3://dogs-bucket/input2"), "lies outside transform.input"),
        (TransformOptions("s3://other/in"), "lies outside transform.input"),
        (TransformOptions("/local/dir"), "is not an S3 location"),
        (TransformOptions(INPUT, instance_count=0), "--instance-count"),
        (TransformOptions(INPUT, image=SERVE), "--model-data and --image go together"),
    ],
)
def test_a_job_outside_the_roles_prefixes_is_refused_before_any_request(opts, says):
    ctx, sm, iam = context()
    with sm, iam, pytest.raises(ConfigError, match=says) as caught:  # no call answered
        cmd_transform(ctx, opts)
    assert "\n" not in str(caught.value) and ctx.requests == []


def test_an_own_output_prefix_is_taken_as_given():
    _, request, _ = run(TransformOptions(INPUT, output=f"{OWN}/scores/"))
    assert request["TransformOutput"]["S3OutputPath"] == f"{OWN}/scores"


def test_without_transform_input_set_the_job_is_refused_naming_the_setting_and_aws_iam():
    ctx, sm, iam = context(transform_input=None)
    with sm, iam, pytest.raises(ConfigError) as caught:
        cmd_transform(ctx, TransformOptions(INPUT))
    message = str(caught.value)
    assert "transform.input is not set" in message and "dogbreed aws iam --name dogs" in message
    assert ctx.requests == []


def test_a_role_not_yet_granted_the_input_is_refused_before_the_job():
    ctx, sm, iam = context()
    role_policy(iam, transform_input=None)  # `aws iam` ran before transform.input was set
    with sm, iam, pytest.raises(ConfigError, match=r"reruns `dogbreed aws iam --name dogs`"):
        cmd_transform(ctx, TransformOptions(INPUT))
    assert [r.operation for r in ctx.requests] == ["get_role_policy"]


def test_without_an_endpoint_the_error_names_deploy_and_the_model_flags():
    ctx, sm, iam = context()
    role_policy(iam)
    sm.add_client_error(
        "describe_endpoint",
        "ValidationException",
        "Could not find endpoint",
        expected_params={"EndpointName": "dogs"},
    )
    with sm, iam, pytest.raises(ConfigError) as caught:
        cmd_transform(ctx, TransformOptions(INPUT))
    message = str(caught.value)
    assert "endpoint dogs does not exist" in message and "aws deploy" in message
    assert "--model-data" in message and "--image" in message and "\n" not in message


def test_an_endpoint_running_another_deployments_model_is_refused():
    ctx, sm, iam = context()
    role_policy(iam)
    endpoint_model(sm, model="cats-0123abcd")
    with sm, iam, pytest.raises(ConfigError, match="not one of dogs's"):
        cmd_transform(ctx, TransformOptions(INPUT))
    assert "create_transform_job" not in [r.operation for r in ctx.requests]


def test_model_data_and_image_make_the_model_deploy_would():
    ctx, sm, iam = context()
    role_policy(iam)
    sm.add_client_error("describe_model", "ValidationException", "Could not find model")
    sm.add_response("create_model", {"ModelArn": f"{ARN}:model/dogs-x"})
    sm.add_client_error("describe_transform_job", "ValidationException", "Could not find job")
    sm.add_response("create_transform_job", {"TransformJobArn": f"{ARN}:transform-job/x"})
    with sm, iam:
        cmd_transform(ctx, TransformOptions(INPUT, model_data=f"{OWN}/m.tar.gz", image=SERVE))
    created = {r.operation: r.params for r in ctx.requests}
    model = created["create_model"]
    assert model["EnableNetworkIsolation"] is True  # as an instance endpoint's model
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"{OWN}/m.tar.gz"
    assert created["create_transform_job"]["ModelName"] == model["ModelName"]


def test_wait_prints_each_status_and_fails_with_sagemakers_reason(monkeypatch):
    monkeypatch.setattr(transform.time, "sleep", lambda _s: None)
    ctx, sm, _ = context()
    base = {
        "TransformJobName": "dogs-0123abcd",
        "TransformJobArn": f"{ARN}:transform-job/dogs-0123abcd",
        "ModelName": MODEL,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": INPUT}}
        },
        "TransformResources": {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1},
        "CreationTime": "2026-01-01",
    }
    for status in ("InProgress", "InProgress", "Failed"):
        extra = (
            {"FailureReason": "ClientError: 415 from the container"} if status == "Failed" else {}
        )
        sm.add_response("describe_transform_job", {**base, "TransformJobStatus": status, **extra})
    with sm, pytest.raises(AwsError, match="Failed: ClientError: 415 from the container"):
        transform.wait_transform(ctx, "dogs-0123abcd", timeout_s=60)
    lines = ctx.out.getvalue().splitlines()
    assert lines == [
        "transform job dogs-0123abcd: InProgress",
        "transform job dogs-0123abcd: Failed",
    ]


def test_the_job_name_is_one_of_the_names_checked_against_its_limit():
    from dogbreed.aws.context import MAX_CHARS

    assert MAX_CHARS["SageMaker transform job"] == 63
    assert ("SageMaker transform job", f"{'d' * 44}-00000000") in Names("d" * 44).derived()


# ---- what the execution role grants for transform jobs --------------------------------------


def role(transform_input: str | None) -> dict:
    return sagemaker_policy(
        REGION, ACCOUNT, "dogs", "s3://d/data", OUTPUT, "s3://d/ckpt", ["r"], transform_input
    )


def test_the_role_reads_transform_input_and_lists_only_its_prefix():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources
        import parliament

    doc = role(INPUT)
    findings = parliament.analyze_policy_string(json.dumps(doc)).findings
    assert findings == [], [(f.issue, f.detail) for f in findings]
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ReadTransformInput"]["Resource"] == ["arn:aws:s3:::dogs-bucket/in/*"]
    listed = [s for s in doc["Statement"] if s["Action"] == ["s3:ListBucket"]]
    prefixes = {p for s in listed for p in s["Condition"]["StringLike"]["s3:prefix"]}
    assert {"in", "in/*", "output/dogs", "output/dogs/*"} <= prefixes
    # The default output OUTPUT/N/transform/<job> is inside what the role already writes.
    writes = by_sid["WriteOwnOutputAndCheckpoints"]["Resource"]
    assert "arn:aws:s3:::dogs-bucket/output/dogs/*" in writes
    streams = by_sid["OwnLogStreams"]["Resource"]
    assert any("/aws/sagemaker/TransformJobs:log-stream:dogs-????????/*" in s for s in streams)
    assert "ReadTransformInput" not in {s["Sid"] for s in role(None)["Statement"]}


def test_a_whole_bucket_transform_input_is_refused():
    with pytest.raises(ConfigError, match=r"transform\.input 's3://dogs-bucket' is a whole bucket"):
        role("s3://dogs-bucket")


# ---- attempts: --again after a failure, or for new input ------------------------------------


def described(name: str, status: str, reason: str | None = None) -> dict:
    return {
        "TransformJobName": name,
        "TransformJobArn": f"{ARN}:transform-job/{name}",
        "TransformJobStatus": status,
        "ModelName": MODEL,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": INPUT}}
        },
        "TransformOutput": {"S3OutputPath": OWN},
        "TransformResources": {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1},
        "CreationTime": "2026-01-01",
        **({"FailureReason": reason} if reason else {}),
    }


def attempts(statuses: list[str], again: bool, reason: str | None = None) -> tuple[list, str]:
    """cmd_transform where the request's attempts 0.. have `statuses`: the attempts' names
    and the output; the next attempt is created when `again`."""
    ctx, sm, iam = context()
    first = expected(ctx, TransformOptions(INPUT))
    names = [transform.attempt_name(ctx, first["TransformJobName"], k) for k in range(4)]
    role_policy(iam)
    endpoint_model(sm)
    for k, status in enumerate(statuses):
        found = described(names[k], status, reason)
        sm.add_response("describe_transform_job", found, {"TransformJobName": names[k]})
    no_job(sm, names[len(statuses)])
    if again:
        nxt = transform.attempt_request(ctx, first, len(statuses), True)
        sm.add_response("create_transform_job", {"TransformJobArn": "x"}, nxt)
    with sm, iam:
        cmd_transform(ctx, TransformOptions(INPUT, again=again))
        sm.assert_no_pending_responses()
    return names, ctx.out.getvalue()


def test_a_failed_job_is_reported_with_its_reason_and_again_starts_the_next_attempt():
    with pytest.raises(AwsError, match=r"Failed: 415 from the container. .* rerun with --again"):
        attempts(["Failed"], again=False, reason="415 from the container")
    names, out = attempts(["Failed"], again=True)
    assert names[1] != names[0] and Names("dogs").owns(names[1])
    assert f"created transform job {names[1]}" in out
    assert f"{OWN}/transform/{names[1]}" in out  # the attempt's own output folder


def test_again_processes_new_input_after_completed_attempts_and_without_it_reports_the_latest():
    names, out = attempts(["Completed", "Completed"], again=False)
    assert f"transform job {names[1]} exists (same request): unchanged, Completed" in out
    names, out = attempts(["Completed", "Stopped"], again=True)
    assert f"created transform job {names[2]}" in out


def test_again_waits_for_a_running_job_and_attempts_are_bounded():
    with pytest.raises(ConfigError, match="is InProgress; let it end first"):
        attempts(["InProgress"], again=True)
    ctx, sm, iam = context()
    role_policy(iam)
    endpoint_model(sm)
    for _ in range(transform.MAX_ATTEMPTS):
        sm.add_response("describe_transform_job", described("dogs-00000000", "Failed"))
    with sm, iam, pytest.raises(AwsError, match="10 transform jobs of this request exist"):
        cmd_transform(ctx, TransformOptions(INPUT, again=True))
