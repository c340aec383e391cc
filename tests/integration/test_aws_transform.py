"""`dogbreed aws transform` against moto's server, run as a user runs it: roles, an
endpoint, then Batch Transform jobs on its model (or on --model-data with --image),
checked by DescribeTransformJob; `status` shows the newest, `down` leaves the records.

moto 5.2.1 keeps a transform job as sent and answers it Completed at once; it ignores
ListTransformJobs' SortBy (status sorts by CreationTime itself)."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from support.aws import ACCOUNT, REGION, aws, moto_env

SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc1234"
INPUT = "s3://dogs-bucket/transform-in"
CONFIG = {
    "region": REGION,
    "data": "s3://dogs-bucket/dogImages",
    "output": "s3://dogs-bucket/output",
    "checkpoints": "s3://dogs-bucket/checkpoints",
    "transform": {"input": INPUT},
}


@pytest.fixture
def aws_env(moto_url, tmp_path, monkeypatch):
    return moto_env(moto_url, monkeypatch, tmp_path, CONFIG)


def created(out: str) -> str:
    return out.split("created transform job ")[1].split()[0]


def test_transform_on_the_endpoints_model_then_status_and_down(aws_env):
    name = f"Dog{uuid.uuid4().hex[:6]}"
    aws(aws_env, "iam", "--name", name)
    model_data = f"{CONFIG['output']}/{name}/job/output/model.tar.gz"
    aws(aws_env, "deploy", "--name", name, "--image", SERVE, "--model-data", model_data)
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    model = config["ProductionVariants"][0]["ModelName"]

    args = ["transform", "--name", name, "--input", f"{INPUT}/batch-1"]
    job = created(aws(aws_env, *args).stdout)
    assert "unchanged" in aws(aws_env, *args).stdout  # same request, same job
    described = sm.describe_transform_job(TransformJobName=job)
    assert described["ModelName"] == model
    assert described["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{INPUT}/batch-1"}},
        "ContentType": "application/x-image",
        "SplitType": "None",
    }
    own = f"{CONFIG['output']}/{name}"
    assert described["TransformOutput"]["S3OutputPath"] == f"{own}/transform/{job}"
    assert described["TransformResources"] == {"InstanceType": "ml.c6i.xlarge", "InstanceCount": 1}
    assert "MaxPayloadInMB" not in described and "MaxConcurrentTransforms" not in described
    tags = sm.list_tags(ResourceArn=described["TransformJobArn"])["Tags"]
    assert {"Key": "dogbreed:name", "Value": name} in tags

    lines = aws(aws_env, *args, "--jsonlines", "--wait", "--instance-count", "2").stdout
    second = created(lines)
    assert f"transform job {second}: Completed" in lines
    described = sm.describe_transform_job(TransformJobName=second)
    assert described["BatchStrategy"] == "MultiRecord"
    assert described["TransformInput"]["SplitType"] == "Line"
    assert described["TransformOutput"]["AssembleWith"] == "Line"

    # --model-data with --image: the model `aws deploy` makes of them, here a new one.
    other_data = f"{own}/job-2/output/model.tar.gz"
    out = aws(aws_env, *args, "--model-data", other_data, "--image", SERVE).stdout
    third = created(out)
    made = sm.describe_transform_job(TransformJobName=third)["ModelName"]
    assert made != model and f"created model {made}" in out
    assert sm.describe_model(ModelName=made)["PrimaryContainer"]["ModelDataUrl"] == other_data

    status = json.loads(aws(aws_env, "status", "--name", name, "--json").stdout)
    row = next(r for r in status["resources"] if r["resource"] == "transform job")
    assert row["name"] in {job, second, third} and row["state"] == "Completed"
    assert "newest of 3" in row["detail"] and f"{INPUT}/batch-1 -> {own}/" in row["detail"]

    down = aws(aws_env, "down", "--name", name).stdout
    assert "transform job records" in down and f"{own}/transform/" in down
    assert sm.describe_transform_job(TransformJobName=job)["TransformJobStatus"] == "Completed"


def test_transform_refuses_what_the_role_cannot_do_and_a_missing_endpoint(aws_env):
    name = f"Dog{uuid.uuid4().hex[:6]}"
    aws(aws_env, "iam", "--name", name)
    base = ["transform", "--name", name]
    for extra, says in [
        (["--input", "s3://dogs-bucket/elsewhere"], "lies outside transform.input"),
        (["--input", INPUT, "--output", "s3://dogs-bucket/x"], "may write only there"),
        (["--input", INPUT], "aws deploy"),  # no endpoint yet
    ]:
        run = aws(aws_env, *base, *extra, check=False)
        assert run.returncode != 0 and says in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1, run.stderr
    jobs = boto3.client("sagemaker").list_transform_jobs(NameContains=name)
    assert jobs["TransformJobSummaries"] == []
