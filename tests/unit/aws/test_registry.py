"""The model registry's requests (aws/registry.py), answered by botocore's Stubber: each
request is validated against SageMaker's service model and checked field by field."""

from __future__ import annotations

import io

import pytest
from botocore.stub import ANY, Stubber

from dogbreed.aws import registry
from dogbreed.aws.endpoint import DeployOptions
from dogbreed.aws.registry import (
    APPROVED,
    PENDING,
    REJECTED,
    RegisterOptions,
    cmd_approve,
    cmd_register,
    metadata,
    newest_completed_job,
    package_request,
    resolve,
)
from dogbreed.aws.up_registry import up_version
from dogbreed.core.errors import ConfigError
from support.aws import ACCOUNT, REGION, offline_ctx

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
JOB = "dogs-0123abcd"
MODEL = f"s3://dogs-bucket/output/dogs/{JOB}/output/model.tar.gz"
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
GROUP_ARN = f"{SM}:model-package-group/dogs"
TAGGED = [{"Key": "dogbreed:name", "Value": "dogs"}]


def arn(version: int) -> str:
    return f"{SM}:model-package/dogs/{version}"


def job(status: str = "Completed") -> dict:
    return {
        "TrainingJobName": JOB,
        "TrainingJobArn": f"{SM}:training-job/{JOB}",
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 30},
        "StoppingCondition": {},
        "CreationTime": 0,
        "ModelArtifacts": {"S3ModelArtifacts": MODEL},
        "FinalMetricDataList": [
            {"MetricName": "val_acc", "Value": 0.874, "Timestamp": 0},
            {"MetricName": "test_acc", "Value": 0.86125, "Timestamp": 0},
            {"MetricName": "train_loss", "Value": 0.41, "Timestamp": 0},
            {"MetricName": "int8_val_acc", "Value": 0.8702, "Timestamp": 0},
            {"MetricName": "int8_agreement", "Value": 0.97, "Timestamp": 0},
        ],
    }


def summary(version: int, status: str = PENDING, job_name: str = JOB) -> dict:
    return {
        "ModelPackageGroupName": "dogs",
        "ModelPackageVersion": version,
        "ModelPackageArn": arn(version),
        "ModelPackageDescription": f"the model of training job {job_name}",
        "CreationTime": 0,
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": status,
    }


def described(version: int, status: str = PENDING, job_name: str = JOB) -> dict:
    return {
        **summary(version, status, job_name),
        "ModelPackageName": "dogs",
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
        "InferenceSpecification": {
            "Containers": [{"Image": SERVE, "ModelDataUrl": f"s3://b/{version}/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "CustomerMetadataProperties": {"training_job": job_name, "val_acc": "0.8740"},
    }


def stubbed():
    ctx, sm = offline_ctx("sagemaker")
    ctx.out = io.StringIO()
    return ctx, sm, Stubber(sm)


def the_group(s: Stubber) -> None:
    s.add_response(
        "describe_model_package_group",
        {
            "ModelPackageGroupName": "dogs",
            "ModelPackageGroupArn": GROUP_ARN,
            "CreationTime": 0,
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
        },
        {"ModelPackageGroupName": "dogs"},
    )
    s.add_response("list_tags", {"Tags": TAGGED}, {"ResourceArn": GROUP_ARN})


def versions(s: Stubber, listed: list[dict], status: str | None = None) -> None:
    params = {
        "ModelPackageGroupName": "dogs",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
        **({"ModelApprovalStatus": status} if status else {}),
    }
    s.add_response("list_model_packages", {"ModelPackageSummaryList": listed}, params)


# ---- aws register ---------------------------------------------------------------------------


def test_register_creates_the_group_tagged_and_a_pending_version_with_the_jobs_metrics():
    ctx, _, s = stubbed()
    s.add_response("describe_training_job", job(), {"TrainingJobName": JOB})
    s.add_client_error("describe_model_package_group", "ValidationException", "does not exist.")
    s.add_response(
        "create_model_package_group",
        {"ModelPackageGroupArn": GROUP_ARN},
        {"ModelPackageGroupName": "dogs", "ModelPackageGroupDescription": ANY, "Tags": TAGGED},
    )
    versions(s, [])
    expected = package_request(ctx, JOB, job(), SERVE, approve=False)
    s.add_response("create_model_package", {"ModelPackageArn": arn(1)}, expected)
    with s:
        version = cmd_register(ctx, RegisterOptions(SERVE, JOB))
        s.assert_no_pending_responses()
    assert (version.number, version.status, version.model_data) == (1, PENDING, MODEL)
    spec = expected["InferenceSpecification"]
    assert spec["Containers"] == [{"Image": SERVE, "ModelDataUrl": MODEL}]
    assert "ml.m5.large" in spec["SupportedRealtimeInferenceInstanceTypes"]  # deploy's default
    assert spec["SupportedResponseMIMETypes"] == ["application/json", "application/jsonlines"]
    assert expected["CustomerMetadataProperties"] == {
        "training_job": JOB,
        "image": SERVE,
        "val_acc": "0.8740",
        "test_acc": "0.8612",  # train_loss is no metric a version carries
        "int8_val_acc": "0.8702",
        "int8_agreement": "0.9700",
    }
    assert expected["ModelPackageDescription"] == f"the model of training job {JOB}"
    assert expected["ModelApprovalStatus"] == PENDING
    assert "registered training job" in ctx.out.getvalue()


def test_register_approve_registers_it_approved():
    ctx, _, _ = stubbed()
    assert package_request(ctx, JOB, job(), SERVE, approve=True)["ModelApprovalStatus"] == APPROVED


def test_a_job_already_registered_is_not_registered_twice():
    ctx, _, s = stubbed()
    s.add_response("describe_training_job", job(), {"TrainingJobName": JOB})
    the_group(s)
    # Version 2 names another job; version 1 is this job's (its metadata says so).
    versions(s, [summary(2, job_name="dogs-99999999"), summary(1)])
    s.add_response("describe_model_package", described(1), {"ModelPackageName": arn(1)})
    with s:  # no CreateModelPackage: the Stubber refuses any call not queued
        version = cmd_register(ctx, RegisterOptions(SERVE, JOB))
        s.assert_no_pending_responses()
    assert version.number == 1
    assert (
        f"training job {JOB} with image {SERVE} is version 1 of dogs already" in ctx.out.getvalue()
    )


def test_register_refuses_a_job_not_completed_or_not_ns():
    ctx, _, s = stubbed()
    s.add_response("describe_training_job", job("InProgress"), {"TrainingJobName": JOB})
    with s, pytest.raises(Exception, match="InProgress: register it once Completed"):
        cmd_register(ctx, RegisterOptions(SERVE, JOB))
    with pytest.raises(ConfigError, match="--training-job cats-0123abcd: not one of dogs's"):
        cmd_register(ctx, RegisterOptions(SERVE, "cats-0123abcd"))


def test_the_default_job_is_ns_newest_completed_one():
    ctx, _, s = stubbed()
    jobs = [
        {"TrainingJobName": name, "TrainingJobArn": "x", "CreationTime": 0,
         "TrainingJobStatus": "Completed"}
        for name in ("dogs-v2-0123abcd", "dogs-00000002", "dogs-00000001")
    ]  # fmt: skip
    s.add_response("list_training_jobs", {"TrainingJobSummaries": jobs})
    with s:
        assert newest_completed_job(ctx) == "dogs-00000002"  # not dogs-v2's


def test_metadata_keeps_to_sagemakers_limits():
    with pytest.raises(ConfigError, match=r"--image is 256 characters: .* takes 255 at most"):
        registry.check_image("x" * 256)  # ContainerImage: 255 at most
    values = metadata(JOB, None, SERVE)  # a job that reported no metric
    assert values == {"training_job": JOB, "image": SERVE}
    assert all(1 <= len(v) <= 256 and 1 <= len(k) <= 128 for k, v in values.items())


def test_the_content_types_are_what_the_server_takes_and_answers():
    from dogbreed.serve import codec

    assert set(registry.CONTENT_TYPES) == {*codec.IMAGE_TYPES, codec.JSON, *codec.JSON_LINES_TYPES}
    assert set(registry.RESPONSE_TYPES) == {codec.JSON, codec.JSON_LINES}


# ---- aws approve ----------------------------------------------------------------------------


def test_approve_approves_the_newest_version_keeping_its_metadata():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(2), summary(1, APPROVED)])
    s.add_response("describe_model_package", described(2), {"ModelPackageName": arn(2)})
    s.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(2)},
        {
            "ModelPackageArn": arn(2),
            "ModelApprovalStatus": APPROVED,
            "CustomerMetadataProperties": described(2)["CustomerMetadataProperties"],
        },
    )
    with s:
        assert cmd_approve(ctx).status == APPROVED
        s.assert_no_pending_responses()
    assert ctx.out.getvalue().strip() == f"version 2 of dogs: {PENDING} -> {APPROVED}"


def test_reject_names_its_reason_and_needs_one():
    with pytest.raises(ConfigError, match="--reject needs --reason"):
        cmd_approve(stubbed()[0], 1, reject=True)
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(2), summary(1, APPROVED)])
    s.add_response("describe_model_package", described(1, APPROVED), {"ModelPackageName": arn(1)})
    s.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(1)},
        {
            "ModelPackageArn": arn(1),
            "ModelApprovalStatus": REJECTED,
            "ApprovalDescription": "top-1 fell on huskies",
            "CustomerMetadataProperties": ANY,
        },
    )
    with s:
        cmd_approve(ctx, 1, reject=True, reason="top-1 fell on huskies")
        s.assert_no_pending_responses()
    assert "version 1 of dogs: Approved -> Rejected (top-1 fell on huskies)" in ctx.out.getvalue()


def test_approve_names_the_versions_there_are():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(2), summary(1)])
    with s, pytest.raises(ConfigError, match=r"--version 7: .* \(its versions: 2, 1\)"):
        cmd_approve(ctx, 7)


# ---- aws deploy --model-package -------------------------------------------------------------


def test_approved_is_the_newest_approved_version():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(3, APPROVED), summary(1, APPROVED)], status=APPROVED)
    s.add_response("describe_model_package", described(3, APPROVED), {"ModelPackageName": arn(3)})
    with s:
        version = resolve(ctx, "approved")
    assert (version.number, version.image, version.model_data) == (
        3,
        SERVE,
        "s3://b/3/model.tar.gz",
    )


@pytest.mark.parametrize("status", [PENDING, REJECTED])
def test_deploy_refuses_a_version_not_approved(status):
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(2, status), summary(1, APPROVED)])
    s.add_response("describe_model_package", described(2, status), {"ModelPackageName": arn(2)})
    with s, pytest.raises(ConfigError) as refused:
        registry.cmd_deploy_package(ctx, DeployOptions("", ""), "2")
    assert f"version 2 of dogs is {status}, not Approved" in str(refused.value)
    assert "aws approve --name dogs --version 2" in str(refused.value)
    assert "endpoint" not in ctx.out.getvalue()  # refused before any deploy request


def test_approved_with_none_approved_says_how_to_approve_one():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [], status=APPROVED)
    with s, pytest.raises(ConfigError, match=r"no Approved version; approve one first"):
        resolve(ctx, "approved")
    with pytest.raises(ConfigError, match="`approved` or a version number"):
        resolve(ctx, "newest")


# ---- aws up's step 4 ------------------------------------------------------------------------


def test_up_deploy_approved_keeps_the_approved_version_while_the_new_one_is_pending():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(1, APPROVED, "dogs-00000001")])
    s.add_response("create_model_package", {"ModelPackageArn": arn(2)})
    the_group(s)
    versions(s, [summary(1, APPROVED, "dogs-00000001")], status=APPROVED)
    s.add_response("describe_model_package", described(1, APPROVED), {"ModelPackageName": arn(1)})
    with s:
        deployed, line = up_version(ctx, JOB, job(), SERVE, False, True)
        s.assert_no_pending_responses()
    assert deployed.number == 1 and deployed.model_data == "s3://b/1/model.tar.gz"
    assert line.startswith(f"model version 2 of dogs ({PENDING}): not Approved")
    assert "Approved version 1" in line


def test_up_approve_deploys_the_jobs_own_version():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [])
    s.add_response("create_model_package", {"ModelPackageArn": arn(1)})
    with s:
        deployed, line = up_version(ctx, JOB, job(), SERVE, True, True)
    assert (deployed.number, deployed.status, deployed.model_data) == (1, APPROVED, MODEL)
    assert line == f"model version 1 of dogs ({APPROVED}): {MODEL}"


# ---- (job, image) keys a version; what up deploys; the limits --------------------------------

SERVE_V2 = SERVE.replace("abc1234", "v2")


def test_a_job_registered_with_another_image_becomes_a_new_version_up_deploys():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(1, APPROVED)])  # the job with SERVE
    s.add_response("describe_model_package", described(1, APPROVED), {"ModelPackageName": arn(1)})
    expected = package_request(ctx, JOB, job(), SERVE_V2, approve=True)
    s.add_response("create_model_package", {"ModelPackageArn": arn(2)}, expected)
    with s:
        deployed, _ = up_version(ctx, JOB, job(), SERVE_V2, True, False)
        s.assert_no_pending_responses()
    assert (deployed.number, deployed.image) == (2, SERVE_V2)
    assert "registered training job" in ctx.out.getvalue()


def test_up_never_deploys_a_rejected_version_and_approve_does_not_lift_the_rejection():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(1, REJECTED)])
    s.add_response("describe_model_package", described(1, REJECTED), {"ModelPackageName": arn(1)})
    with s, pytest.raises(ConfigError) as refused:
        up_version(ctx, JOB, job(), SERVE, True, False)
    assert "version 1 of dogs is Rejected: aws up does not deploy it" in str(refused.value)
    assert "aws approve --name dogs --version 1" in str(refused.value)
    assert "--approve not applied: version 1 of dogs is Rejected" in ctx.out.getvalue()


def test_up_says_when_it_deploys_a_pending_version():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [summary(1)])
    s.add_response("describe_model_package", described(1), {"ModelPackageName": arn(1)})
    with s:
        deployed, line = up_version(ctx, JOB, job(), SERVE, False, False)
    assert deployed.number == 1 and line.startswith(f"model version 1 of dogs ({PENDING})")
    assert f"version 1 is {PENDING}: deploying it unapproved" in ctx.out.getvalue()


def test_a_reason_over_sagemakers_limit_is_refused_before_any_request():
    ctx, _, s = stubbed()
    with s, pytest.raises(ConfigError, match="--reason is 1025 characters: SageMaker takes 1024"):
        cmd_approve(ctx, 1, reject=True, reason="x" * 1025)  # the Stubber has nothing queued


def test_register_refuses_an_image_over_255_characters_before_any_request():
    ctx, _, s = stubbed()
    with s, pytest.raises(ConfigError, match="--image is 256 characters"):
        registry.register_job(ctx, JOB, job(), "x" * 256, False)


def test_approve_on_a_group_without_versions_says_how_to_make_one():
    ctx, _, s = stubbed()
    the_group(s)
    versions(s, [])
    with s, pytest.raises(ConfigError) as refused:
        cmd_approve(ctx)
    assert "no versions registered yet: aws register --name dogs" in str(refused.value)
    assert "aws up" in str(refused.value) and "None" not in str(refused.value)


def test_the_int8_check_is_read_from_the_training_log_as_two_metrics():
    """SageMaker reads metrics from the job's log by METRIC_DEFINITIONS' regexes: the line
    train/quantize.py logs when it keeps the int8 model gives the version its int8 check."""
    import re

    from dogbreed.aws.training import METRIC_DEFINITIONS

    line = (
        "INFO int8 model kept: val_acc 0.8123 (fp32 0.8200), top-1 agreement 0.9712 on 835 images"
    )
    found = {
        d["Name"]: m.group(1) for d in METRIC_DEFINITIONS if (m := re.search(d["Regex"], line))
    }
    assert found == {"int8_val_acc": "0.8123", "int8_agreement": "0.9712"}
    kept_not = "WARNING int8 model not kept: val_acc 0.5 is more than 0.02 below 0.8"
    assert not any(re.search(d["Regex"], kept_not) for d in METRIC_DEFINITIONS)
