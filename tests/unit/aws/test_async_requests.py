"""Asynchronous endpoints and data capture, offline: the requests `aws deploy --async
--notify --capture-percent`, `aws autoscale` on an async endpoint and `aws invoke
--async` send, checked against botocore's service models (Stubber where a call is
answered), the serve container's settings they set, and the execution role's grants.
"""

from __future__ import annotations

import io
import json
import re

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from dogbreed.aws import async_ops, asynchronous
from dogbreed.aws.config import digest
from dogbreed.aws.context import Names
from dogbreed.aws.endpoint import DeployOptions, ScaleOptions, cmd_deploy, make_plan
from dogbreed.aws.policies import sagemaker_policy
from dogbreed.core.errors import AwsError, ConfigError
from dogbreed.core.serve_settings import ServeSettings
from support.aws import ACCOUNT, CONFIG, DATA, REGION, offline_ctx
from support.cli import run_cli
from support.iam_check import Need, allows

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
MODEL_DATA = "s3://b/model.tar.gz"
PREFIX = "s3://my-dogbreed-bucket/output/dogs"  # offline_ctx: the defaults' output
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/dogs"
TAGGED = [{"Key": "dogbreed:name", "Value": "dogs"}]


def input_errors(service: str, op: str, params: dict) -> str:
    model = boto3.client(service, region_name=REGION).meta.service_model
    shape = model.operation_model(op).input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


def extras(**opts):
    ctx, _ = offline_ctx("sagemaker")
    options = DeployOptions(SERVE, MODEL_DATA, **opts)
    return ctx, asynchronous.prepare(ctx, options, make_plan(ctx, options).serverless)


def test_async_notify_and_capture_fit_create_endpoint_config():
    _, found = extras(asynchronous=True, notify=True, capture_percent=10)
    variants = [{"VariantName": "AllTraffic", "ModelName": "dogs-12345678",
                 "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]  # fmt: skip
    request = {"EndpointConfigName": "dogs-12345678", "ProductionVariants": variants}
    assert input_errors("sagemaker", "CreateEndpointConfig", {**request, **found.config}) == ""
    config = found.config["AsyncInferenceConfig"]
    assert config["OutputConfig"]["S3OutputPath"] == f"{PREFIX}/async/output"
    assert config["OutputConfig"]["S3FailurePath"] == f"{PREFIX}/async/failure"
    topics = [f"arn:aws:sns:{REGION}:{ACCOUNT}:dogs-async-{k}" for k in ("success", "error")]
    notify = config["OutputConfig"]["NotificationConfig"]
    assert [notify["SuccessTopic"], notify["ErrorTopic"]] == topics
    assert config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 2
    assert found.config["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 10,
        "DestinationS3Uri": f"{PREFIX}/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }


def test_the_async_model_settings_are_what_the_serve_container_reads():
    """Workers = SageMaker's concurrency = the queue; the payload and timeout async allows;
    a Java heap that holds that many maximum-size bodies."""
    from dogbreed.serve.mms import front_end_limit
    from dogbreed.serve.server import DEFAULT_WORKERS

    _, found = extras(asynchronous=True)
    opts = ServeSettings.read(found.environment)
    at_once = found.config["AsyncInferenceConfig"]["ClientConfig"]
    assert opts.workers == opts.job_queue == at_once["MaxConcurrentInvocationsPerInstance"]
    assert asynchronous.ASYNC_WORKERS == DEFAULT_WORKERS
    assert (opts.timeout_s, opts.max_payload_bytes) == (900, 100 * 1024 * 1024)
    heap = int(re.search(r"-Xmx(\d+)m", opts.vmargs).group(1)) * 1024 * 1024
    direct = int(re.search(r"MaxDirectMemorySize=(\d+)m", opts.vmargs).group(1)) * 1024 * 1024
    assert front_end_limit(opts) == asynchronous.FRONT_END_BODY_MB * 1024 * 1024
    assert direct >= opts.workers * front_end_limit(opts) + 256 * 1024 * 1024
    # On the heap each body is held twice while it is handed to a worker (the request's
    # bytes and the encoded message): one copy each ran it out with two 200 MB bodies.
    assert heap >= 2 * opts.workers * front_end_limit(opts) + 256 * 1024 * 1024


def test_async_and_capture_make_their_own_endpoint_config_and_plain_keeps_its_name():
    def config_name(**opts) -> str:
        ctx, _ = offline_ctx("sagemaker")
        ctx.dry_run, ctx.out = True, io.StringIO()
        cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, **opts))
        return re.search(r"created endpoint config (\S+)", ctx.out.getvalue()).group(1)

    plain, capture = config_name(), config_name(capture_percent=10)
    both = config_name(asynchronous=True, capture_percent=10)
    assert len({plain, capture, both}) == 3
    ctx, _ = offline_ctx("sagemaker")
    model = re.search(r"created model (\S+)", _dry(ctx, DeployOptions(SERVE, MODEL_DATA))).group(1)
    variants = [{"VariantName": "AllTraffic", "ModelName": model,
                 "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]  # fmt: skip
    assert plain == f"dogs-{digest(variants)}"  # the name earlier deploys gave it


def _dry(ctx, opts: DeployOptions) -> str:
    ctx.dry_run, ctx.out = True, io.StringIO()
    cmd_deploy(ctx, opts)
    return ctx.out.getvalue()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--async", "--serverless"], "a serverless endpoint cannot be asynchronous"),
        (["--capture-percent", "101"], "--capture-percent (deploy.capture_percent) must be"),
        (["--capture-percent", "5", "--serverless"], "a serverless endpoint has no data capture"),
        (["--notify"], "--notify (async.notify) is for an asynchronous endpoint"),
    ],
)
def test_bad_async_flags_are_one_line_before_any_request(flags, says):
    proc = run_cli(
        "aws", "deploy", "--name", "dogs", "--image", SERVE, "--model-data", MODEL_DATA,
        "--region", REGION, "--dry-run", *flags,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_the_scaling_requests_fit_the_service_models():
    ctx, _ = offline_ctx("sagemaker")
    pick = async_ops.scale_settings(ctx, ScaleOptions())
    assert (pick["min"], pick["target"]) == (0, 5.0)
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/dogs/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    tracking = async_ops.tracking_config(ctx, pick)
    step = async_ops.step_config(pick)
    for kind, config in (("TargetTrackingScaling", tracking), ("StepScaling", step)):
        request = {"PolicyName": "p", "PolicyType": kind, **target,
                   async_ops.POLICY_CONFIG[kind]: config}  # fmt: skip
        assert input_errors("application-autoscaling", "PutScalingPolicy", request) == ""
    metric = tracking["CustomizedMetricSpecification"]
    assert metric == {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "dogs"}],
        "Statistic": "Average",
    }
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]
    alarm = async_ops.wake_alarm_spec(ctx, "arn:aws:autoscaling:policy")
    assert input_errors("cloudwatch", "PutMetricAlarm", {**alarm, "Tags": TAGGED}) == ""
    assert (alarm["MetricName"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "HasBacklogWithoutCapacity",
        1.0,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["AlarmActions"] == ["arn:aws:autoscaling:policy"]


@pytest.mark.parametrize(("low", "high"), [(-1, 2), (3, 2), (0, 0)])
def test_bad_async_scaling_bounds_are_one_line(low, high):
    ctx, _ = offline_ctx("sagemaker")
    with pytest.raises(ConfigError, match=r"from --min \(async.min"):
        async_ops.scale_settings(ctx, ScaleOptions(min=low, max=high))


def test_autoscale_async_on_an_endpoint_that_is_not_says_so():
    ctx, sm = offline_ctx("sagemaker")
    live = {"EndpointName": "dogs", "EndpointArn": ARN, "EndpointConfigName": "dogs-1",
            "EndpointStatus": "InService", "CreationTime": 0, "LastModifiedTime": 0}  # fmt: skip
    config = {"EndpointConfigName": "dogs-1", "EndpointConfigArn": ARN, "CreationTime": 0,
              "ProductionVariants": [{"VariantName": "AllTraffic"}]}  # fmt: skip
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", live)
        s.add_response("describe_endpoint_config", config)
        with pytest.raises(ConfigError, match=r"--async: endpoint dogs is not asynchronous"):
            async_ops.cmd_autoscale(ctx, ScaleOptions(), asynchronous=True)


# ---- invoke --async -------------------------------------------------------------------------


def s3_ctx():
    ctx, s3 = offline_ctx("s3")
    ctx.out = io.StringIO()
    return ctx, s3


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


ANSWER = {"OutputLocation": "s3://out/dogs/a.out", "FailureLocation": "s3://out/dogs/a-error.out"}


def test_invoke_async_waits_for_the_answer(monkeypatch, tmp_path):
    monkeypatch.setattr(asynchronous.time, "sleep", lambda s: None)
    ctx, s3 = s3_ctx()
    answer = json.dumps({"label": "Akita", "index": 3, "score": 0.9}).encode()
    with Stubber(s3) as s:
        for _ in range(2):  # not yet: neither place written
            s.add_client_error("head_object", "404", http_status_code=404)
            s.add_client_error("head_object", "404", http_status_code=404)
        s.add_response("head_object", {})
        s.add_response("get_object", {"Body": body(answer)})
        got = asynchronous.await_answer(ctx, tmp_path / "dog.jpg", ANSWER, timeout_s=60)
    assert got == {"breed": "Akita", "index": 3, "score": 0.9}
    assert "waiting for the answer" in ctx.out.getvalue()


def test_invoke_async_reports_the_failure_in_one_line(monkeypatch, tmp_path):
    ctx, s3 = s3_ctx()
    with Stubber(s3) as s:
        s.add_client_error("head_object", "404", http_status_code=404)
        s.add_response("head_object", {})
        s.add_response("get_object", {"Body": body(b"worker died:\n  out of memory\n")})
        with pytest.raises(AwsError) as caught:
            asynchronous.await_answer(ctx, tmp_path / "dog.jpg", ANSWER, timeout_s=60)
    assert "\n" not in str(caught.value)
    assert str(caught.value).endswith("worker died: out of memory")


def test_invoke_async_gives_up_at_its_timeout(monkeypatch, tmp_path):
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(asynchronous.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(asynchronous.time, "sleep", lambda s: None)
    ctx, s3 = s3_ctx()
    with Stubber(s3) as s:
        for _ in range(8):
            s.add_client_error("head_object", "404", http_status_code=404)
        with pytest.raises(AwsError, match=r"no answer at s3://out/dogs/a.out within 15 s"):
            asynchronous.await_answer(ctx, tmp_path / "dog.jpg", ANSWER, timeout_s=15)


def test_invoke_async_dry_run_uploads_by_digest_with_the_image_type(tmp_path):
    image = tmp_path / "Dog.PNG"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    ctx, _ = offline_ctx("s3")
    ctx.dry_run, ctx.out = True, io.StringIO()
    assert asynchronous.cmd_invoke_async(ctx, image, 60) is None
    sent = {r.operation: r.params for r in ctx.requests}
    key = sent["put_object"]["Key"]
    assert re.fullmatch(r"output/dogs/async/input/[0-9a-f]{64}\.png", key), key
    assert sent["put_object"]["ContentType"] == "image/png"
    invoke = sent["invoke_endpoint_async"]
    assert invoke["InputLocation"] == f"s3://my-dogbreed-bucket/{key}"
    assert input_errors("sagemaker-runtime", "InvokeEndpointAsync", invoke) == ""


# ---- the execution role ---------------------------------------------------------------------


def test_the_execution_role_writes_capture_and_async_objects_under_ns_prefix_only():
    policy = sagemaker_policy(
        REGION, ACCOUNT, "dogs", DATA, CONFIG["output"], CONFIG["checkpoints"], ["r"]
    )
    output = CONFIG["output"].removeprefix("s3://")

    def put(key: str) -> bool:
        return allows(policy, Need("s3:PutObject", f"arn:aws:s3:::{output}/{key}"))

    assert put("dogs/capture/AllTraffic/2026/01/01/00/x.jsonl")
    assert put("dogs/async/output/id.out") and put("dogs/async/failure/id-error.out")
    assert not put("dogs-v2/capture/x.jsonl") and not put("cats/async/output/id.out")
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:dogs-async-success"
    assert allows(policy, Need("sns:Publish", topic))
    assert not allows(policy, Need("sns:Publish", topic.replace("dogs-", "cats-")))


def test_the_async_names_are_checked_with_ns_others():
    names = Names("d" * 44).check()  # the longest N the role names allow
    kinds = dict((name, kind) for kind, name in names.derived())
    assert kinds[names.async_topics[0]] == "SNS topic"
    assert kinds[names.backlog_alarm] in ("CloudWatch alarm", "scaling policy")
    assert names.backlog_tracking_policy in kinds
