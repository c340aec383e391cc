"""What an asynchronous endpoint rules out, offline: a switch between real-time and
asynchronous, a Lambda front door, --notify without the role's publish grant, the other
mode's scaling left behind, scaling with no endpoint, an unchecked timeout, the output
setting's placeholder, the operator's listing of the output bucket, and the latency alarm
of an async deploy. Botocore Stubbers answer; nothing leaves the process."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from dogbreed.aws import async_ops, asynchronous, functions
from dogbreed.aws.alarms import Thresholds, alarm_specs
from dogbreed.aws.config import PLACEHOLDER_BUCKET
from dogbreed.aws.endpoint import DeployOptions, ScaleOptions, cmd_deploy
from dogbreed.aws.operator_policy import operator_policy
from dogbreed.aws.policies import sagemaker_policy
from dogbreed.core.errors import AwsError, ConfigError
from support.aws import ACCOUNT, CONFIG, DATA, REGION, offline_ctx
from support.iam_check import Need, allows, run_verb, without_credentials

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
MODEL_DATA = "s3://b/model.tar.gz"
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
TAGGED = [{"Key": "dogbreed:name", "Value": "dogs"}]
WRITES = ("create_", "update_", "put_", "register_", "delete_", "add_tags", "tag_")
LIVE = {"EndpointName": "dogs", "EndpointArn": f"{SM}:endpoint/dogs",
        "EndpointConfigName": "dogs-0000aaaa", "EndpointStatus": "InService",
        "CreationTime": 0, "LastModifiedTime": 0}  # fmt: skip
OUTPUT = {"S3OutputPath": "s3://o/dogs/async/output", "S3FailurePath": "s3://o/dogs/async/failure"}


def running(asynchronous_: bool) -> dict:
    """DescribeEndpointConfig of LIVE's config, asynchronous or real-time."""
    config = {"EndpointConfigName": "dogs-0000aaaa", "EndpointConfigArn": f"{SM}:x",
              "CreationTime": 0, "ProductionVariants": [{"VariantName": "AllTraffic"}]}  # fmt: skip
    if asynchronous_:
        config["AsyncInferenceConfig"] = {"OutputConfig": OUTPUT}
    return config


def with_clients(ctx, *services: str) -> dict:
    """Stubbable clients of `services` for `ctx`, by service."""
    made = {}
    for service in services:
        made[service] = ctx._clients[service] = boto3.client(
            service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
        )
    return made


def writes(ctx) -> list[str]:
    return [r.operation for r in ctx.requests if r.operation.startswith(WRITES)]


def dry(ctx):
    ctx.dry_run, ctx.out = True, io.StringIO()
    return ctx


# ---- 1. real-time <-> asynchronous: refused before any write --------------------------------


@pytest.mark.parametrize(
    ("live_async", "deploy_async", "says"),
    [
        (True, None, "is asynchronous and SageMaker cannot update it to real-time: deploy "
         "with --async (deploy.async), under another --name, or delete it first "
         "(aws down --name dogs)"),
        (False, True, "is real-time and SageMaker cannot update it to asynchronous: deploy "
         "without --async"),
    ],
)  # fmt: skip
def test_a_switch_between_real_time_and_async_is_one_line_before_any_write(
    live_async, deploy_async, says
):
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", LIVE)
        s.add_response("describe_endpoint_config", running(live_async))
        with pytest.raises(ConfigError) as raised:
            cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=deploy_async))
        s.assert_no_pending_responses()
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert writes(ctx) == []


def test_a_deploy_dry_run_records_the_read_of_the_live_config():
    ctx = dry(offline_ctx("sagemaker")[0])
    cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=True))
    reads = [r.params for r in ctx.requests if r.operation == "describe_endpoint_config"]
    assert {"EndpointConfigName": "dogs-00000000"} in reads  # the live one's stand-in


# ---- 2. no Lambda front door on an asynchronous endpoint ------------------------------------


def test_lambda_on_an_async_endpoint_is_refused_before_any_write():
    ctx, sm = offline_ctx("sagemaker")
    with_clients(ctx, "lambda")  # unstubbed: any call fails the test
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", LIVE)
        s.add_response("describe_endpoint_config", running(True))
        with pytest.raises(ConfigError, match=r"async endpoints take `aws invoke --async"):
            functions.cmd_lambda(ctx, functions.LambdaOptions(serverless=False))
    assert [r.service for r in ctx.requests] == ["sagemaker", "sagemaker"]


def test_a_lambda_dry_run_records_the_read_of_the_endpoints_config():
    ctx = dry(offline_ctx("lambda")[0])
    functions.cmd_lambda(ctx, functions.LambdaOptions())
    ops = [r.operation for r in ctx.requests]
    assert ops[:2] == ["describe_endpoint", "describe_endpoint_config"]


# ---- 3. a mode change leaves no scaling of the other mode -----------------------------------


def scaled_ctx():
    ctx, sm = offline_ctx("sagemaker")
    ctx.out = io.StringIO()
    made = with_clients(ctx, "application-autoscaling", "cloudwatch")
    return ctx, sm, made["application-autoscaling"], made["cloudwatch"]


TARGET = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/dogs/variant/AllTraffic",
          "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}  # fmt: skip


def policy(name: str) -> dict:
    return {"PolicyARN": f"arn:{name}", "PolicyName": name, "PolicyType": "StepScaling",
            "CreationTime": 0, **TARGET}  # fmt: skip


def test_real_time_autoscale_deletes_the_backlog_policies_and_ns_wake_alarm():
    ctx, sm, aas, cw = scaled_ctx()
    alarm = {"AlarmName": "dogs-backlog-wake", "AlarmArn": "arn:aws:cloudwatch:alarm:w"}
    with Stubber(sm) as s, Stubber(aas) as a, Stubber(cw) as c:
        s.add_response("describe_endpoint", LIVE)
        s.add_response("describe_endpoint_config", running(False))
        s.add_response("describe_endpoint", LIVE)
        s.add_response("list_tags", {"Tags": TAGGED})
        target = {**TARGET, "MinCapacity": 1, "MaxCapacity": 4, "RoleARN": "r", "CreationTime": 0}
        a.add_response("describe_scalable_targets", {"ScalableTargets": [target]})
        a.add_response("describe_scaling_policies", {"ScalingPolicies": []})
        a.add_response("put_scaling_policy", {"PolicyARN": "arn:p"})
        a.add_response("describe_scaling_policies",
                       {"ScalingPolicies": [policy(ctx.names.backlog_tracking_policy),
                                            policy(ctx.names.backlog_policy)]})  # fmt: skip
        for name in (ctx.names.backlog_tracking_policy, ctx.names.backlog_policy):
            a.add_response("delete_scaling_policy", {}, {"PolicyName": name, **TARGET})
        c.add_response("describe_alarms", {"MetricAlarms": [alarm]})
        c.add_response("list_tags_for_resource", {"Tags": TAGGED})
        c.add_response("delete_alarms", {}, {"AlarmNames": [ctx.names.backlog_alarm]})
        ctx.config["autoscale"]["max"] = 4
        async_ops.cmd_autoscale(ctx, ScaleOptions(min=1))
        a.assert_no_pending_responses()
        c.assert_no_pending_responses()
    assert writes(ctx) == ["put_scaling_policy", *["delete_scaling_policy"] * 2, "delete_alarms"]


def test_real_time_autoscale_leaves_a_wake_alarm_without_ns_tag():
    ctx, _, _, cw = scaled_ctx()
    alarm = {"AlarmName": "dogs-backlog-wake", "AlarmArn": "arn:aws:cloudwatch:alarm:w"}
    with Stubber(cw) as c:
        c.add_response("describe_alarms", {"MetricAlarms": [alarm]})
        c.add_response("list_tags_for_resource", {"Tags": [{"Key": "team", "Value": "x"}]})
        async_ops._drop_wake_alarm(ctx)
        c.assert_no_pending_responses()
    assert writes(ctx) == []


def test_async_autoscale_deletes_the_invocations_policy():
    ctx, sm, aas, _ = scaled_ctx()
    with Stubber(sm) as s, Stubber(aas) as a:
        s.add_response("describe_endpoint", LIVE)
        s.add_response("describe_endpoint_config", running(True))
        s.add_response("list_tags", {"Tags": TAGGED})
        target = {**TARGET, "MinCapacity": 0, "MaxCapacity": 4, "RoleARN": "r", "CreationTime": 0}
        a.add_response("describe_scalable_targets", {"ScalableTargets": [target]})
        a.add_response("describe_scaling_policies",
                       {"ScalingPolicies": [policy(ctx.names.scaling_policy)]})  # fmt: skip
        a.add_response(
            "delete_scaling_policy", {}, {"PolicyName": ctx.names.scaling_policy, **TARGET}
        )
        ctx.config["autoscale"]["max"] = 4
        with pytest.raises(AwsError):  # the backlog policies' requests: not stubbed here
            async_ops.cmd_autoscale(ctx, ScaleOptions())
        a.assert_no_pending_responses()
    assert writes(ctx)[0] == "delete_scaling_policy"


# ---- 4. --notify needs the role's publish grant ---------------------------------------------


def notify_ctx(statements: list[dict]):
    ctx, sm = offline_ctx("sagemaker")
    iam = with_clients(ctx, "iam")["iam"]
    stub_sm, stub_iam = Stubber(sm), Stubber(iam)
    stub_sm.add_client_error("describe_endpoint", "ValidationException", "Could not find")
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    role = ctx.names.sagemaker_role
    answer = {"RoleName": role, "PolicyName": role, "PolicyDocument": document}
    stub_iam.add_response("get_role_policy", answer)
    return ctx, stub_sm, stub_iam


def test_notify_without_the_roles_publish_grant_names_aws_iam_before_any_write():
    granted = sagemaker_policy(REGION, ACCOUNT, "dogs", DATA, CONFIG["output"],
                               CONFIG["checkpoints"], ["r"])["Statement"]  # fmt: skip
    older = [s for s in granted if s.get("Sid") != "PublishOwnAsyncNotifications"]
    ctx, s, i = notify_ctx(older)
    with s, i, pytest.raises(ConfigError, match=r"may not publish .* reruns `dogbreed aws iam"):
        cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=True, notify=True))
    assert writes(ctx) == []
    ctx, s, i = notify_ctx(granted)
    with s, i, pytest.raises(AwsError, match="describe_model"):  # past the check: unstubbed
        cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=True, notify=True))


def test_a_notify_dry_run_records_the_role_read():
    ctx = dry(offline_ctx("sagemaker")[0])
    cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=True, notify=True))
    assert ("iam", "get_role_policy") in [(r.service, r.operation) for r in ctx.requests]


# ---- 5. the output setting's placeholder ----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "stopped"),
    [
        (["deploy", "--image", SERVE, "--model-data", MODEL_DATA], False),
        (["deploy", "--image", SERVE, "--model-data", MODEL_DATA, "--async"], True),
        (["deploy", "--image", SERVE, "--model-data", MODEL_DATA, "--capture-percent", "5"], True),
        (["invoke", "dog.jpg"], False),
        (["invoke", "dog.jpg", "--async"], True),
        (["iam", "--operator-policy"], True),
    ],
)
def test_the_output_placeholder_stops_the_verbs_that_send_it(argv, stopped, monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dog.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 16)
    path = tmp_path / "aws.json"
    path.write_text(json.dumps({**CONFIG, "output": f"s3://{PLACEHOLDER_BUCKET}/output"}))
    argv = [argv[0], "--name", "dogs", "--config", str(path), *argv[1:]]
    if stopped:
        with pytest.raises(ConfigError, match=r"setting 'output' still names the placeholder"):
            run_verb(*argv)
    else:  # past the check, a real run stops at its first request: no credentials here
        _, error = run_verb(*argv)
        assert isinstance(error, AwsError) and "credentials" in str(error), error


# ---- 6. invoke --async checks its timeout ---------------------------------------------------


def test_invoke_async_checks_the_timeout_before_any_request(tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"\xff\xd8\xff" + b"\0" * 16)
    ctx, _ = offline_ctx("s3")
    ctx.config["async"]["timeout_s"] = 3601
    with pytest.raises(ConfigError, match=r"async.timeout_s must be from 1 to 3600 s"):
        asynchronous.cmd_invoke_async(ctx, image, 60)
    assert ctx.requests == []


# ---- 7. no listing of the output bucket: 403 means "not there yet" --------------------------


def test_invoke_async_takes_403_as_not_written_yet(monkeypatch, tmp_path):
    monkeypatch.setattr(asynchronous.time, "sleep", lambda s: None)
    ctx, s3 = offline_ctx("s3")
    ctx.out = io.StringIO()
    answer = json.dumps({"label": "Akita", "index": 3, "score": 0.9}).encode()
    places = {"OutputLocation": "s3://o/dogs/async/output/a.out"}
    with Stubber(s3) as s:
        s.add_client_error("head_object", "403", http_status_code=403)
        s.add_response("head_object", {})
        s.add_response("get_object", {"Body": StreamingBody(io.BytesIO(answer), len(answer))})
        got = asynchronous.await_answer(ctx, tmp_path / "dog.jpg", places, timeout_s=60)
    assert got["breed"] == "Akita"


def test_the_operator_may_not_list_the_output_bucket():
    output = "s3://other-bucket/output"  # apart from the data bucket, which it may list
    policy = operator_policy(offline_ctx("s3")[0].names, REGION, ACCOUNT, DATA, output)
    assert not allows(policy, Need("s3:ListBucket", "arn:aws:s3:::other-bucket"))
    assert allows(policy, Need("s3:GetObject", "arn:aws:s3:::other-bucket/output/dogs/async/a.out"))


# ---- 8. autoscale --async needs an endpoint -------------------------------------------------


def test_autoscale_async_without_an_endpoint_says_deploy_first():
    ctx, sm = offline_ctx("sagemaker")
    with Stubber(sm) as s:
        s.add_client_error("describe_endpoint", "ValidationException", "Could not find")
        with pytest.raises(ConfigError, match=r"no endpoint dogs to scale: deploy first"):
            async_ops.cmd_autoscale(ctx, ScaleOptions(), asynchronous=True)
    assert writes(ctx) == []
    ctx = dry(offline_ctx("sagemaker")[0])
    async_ops.cmd_autoscale(ctx, ScaleOptions(), asynchronous=True)
    assert "register_scalable_target" in writes(ctx)


# ---- 9. an async deploy's latency alarm -----------------------------------------------------


@pytest.mark.parametrize(("flag", "ms"), [(None, 900_000.0), (700.0, 700.0)])
def test_an_async_deploys_latency_alarm_is_its_timeout_unless_the_flag_says(flag, ms):
    ctx = dry(offline_ctx("sagemaker")[0])
    cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA, asynchronous=True, latency_ms=flag))
    sent = [r.params for r in ctx.requests if r.operation == "put_metric_alarm"]
    latency = next(p for p in sent if p["MetricName"] == "ModelLatency")
    wanted = alarm_specs(ctx, Thresholds(0.05, ms, 3))[1]["Threshold"]
    assert latency["Threshold"] == wanted == ms * 1000  # ModelLatency is in microseconds
    ctx = dry(offline_ctx("sagemaker")[0])
    cmd_deploy(ctx, DeployOptions(SERVE, MODEL_DATA))  # real-time: the setting, 500 ms
    sent = [r.params for r in ctx.requests if r.operation == "put_metric_alarm"]
    assert next(p for p in sent if p["MetricName"] == "ModelLatency")["Threshold"] == 500_000
