"""The model registry against moto's server (real HTTP on loopback), as a user runs it:
register a training job's model, find it pending, be refused a deploy of it, approve it,
deploy it, see it live, reject it. moto completes a training job as soon as it is created,
with canned final metrics (no val_acc or test_acc: the unit tests check those), and drops
a version's metadata on an update that leaves it out (approve sends it back unchanged)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from support.aws import ACCOUNT, REGION, aws, moto_env

TRAIN = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
CONFIG = {
    "region": REGION,
    "data": "s3://reg-bucket/dogImages",
    "output": "s3://reg-bucket/output",
    "checkpoints": "s3://reg-bucket/checkpoints",
}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    return moto_env(moto_url, monkeypatch, tmp_path, CONFIG)


def training_job(name: str) -> str:
    """A Completed training job of N on moto (N-<digest>), as `aws train` names it."""
    job = f"{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("sagemaker").create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": TRAIN, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}-sagemaker-execution",
        OutputDataConfig={"S3OutputPath": f"{CONFIG['output']}/{name}"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return job


def version_row(env_config, name: str, version: int) -> str:
    """`aws status`'s row of version `version` of N's registry."""
    out = aws(env_config, "status", "--name", name).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return next(" ".join(r) for r in rows if r[:3] == ["model", "version", f"{name}/{version}"])


def test_register_approve_deploy_and_reject_a_model_version(aws_env):
    name = f"Dog{uuid.uuid4().hex[:6]}"  # upper case on purpose: ARNs are lower case
    aws(aws_env, "iam", "--name", name)
    job = training_job(name)
    sm = boto3.client("sagemaker")
    model_data = sm.describe_training_job(TrainingJobName=job)["ModelArtifacts"]["S3ModelArtifacts"]

    # The job defaults to N's newest Completed one; a second run registers nothing.
    first = aws(aws_env, "register", "--name", name, "--image", SERVE).stdout
    assert f"created model package group {name}" in first
    assert f"registered training job {job} as version 1" in first
    again = aws(aws_env, "register", "--name", name, "--training-job", job, "--image", SERVE)
    assert f"is version 1 of {name} already" in again.stdout
    versions = sm.list_model_packages(ModelPackageGroupName=name)["ModelPackageSummaryList"]
    assert len(versions) == 1
    version = sm.describe_model_package(ModelPackageName=versions[0]["ModelPackageArn"])
    assert version["ModelApprovalStatus"] == "PendingManualApproval"
    assert version["InferenceSpecification"]["Containers"] == [
        {"Image": SERVE, "ModelDataUrl": model_data}
    ]
    assert version["CustomerMetadataProperties"] == {"training_job": job, "image": SERVE}
    group = sm.describe_model_package_group(ModelPackageGroupName=name)
    tags = sm.list_tags(ResourceArn=group["ModelPackageGroupArn"])["Tags"]
    assert {"Key": "dogbreed:name", "Value": name} in tags
    assert "PendingManualApproval" in version_row(aws_env, name, 1)

    # Pending: refused, before any endpoint request.
    deploy = ["deploy", "--name", name, "--model-package", "approved"]
    refused = aws(aws_env, *deploy, check=False)
    assert refused.returncode != 0 and "has no Approved version" in refused.stderr
    assert "aws approve" in refused.stderr
    assert sm.list_endpoints(NameContains=name)["Endpoints"] == []

    approved = aws(aws_env, "approve", "--name", name).stdout
    assert f"version 1 of {name}: PendingManualApproval -> Approved" in approved
    out = aws(aws_env, *deploy).stdout
    assert f"model package {name} version 1 (Approved)" in out and f"created endpoint {name}" in out
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Image"] == SERVE  # the version's: no --image given
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data
    line = version_row(aws_env, name, 1)
    assert "Approved" in line and f"job {job}" in line and f"LIVE on endpoint {name}" in line

    rejected = aws(aws_env, "approve", "--name", name, "--version", "1", "--reject",
                   "--reason", "worse on huskies").stdout  # fmt: skip
    assert f"version 1 of {name}: Approved -> Rejected (worse on huskies)" in rejected
    version = sm.describe_model_package(ModelPackageName=versions[0]["ModelPackageArn"])
    assert version["ModelApprovalStatus"] == "Rejected"
    assert version["ApprovalDescription"] == "worse on huskies"
    refused = aws(aws_env, "deploy", "--name", name, "--model-package", "1", check=False)
    assert "version 1 of" in refused.stderr and "is Rejected, not Approved" in refused.stderr

    # down deletes the deployment and names the registry it leaves.
    down = aws(aws_env, "down", "--name", name).stdout
    assert f"the model package group {name} with versions 1 (a registry is a record)" in down
    assert sm.list_model_packages(ModelPackageGroupName=name)["ModelPackageSummaryList"]
