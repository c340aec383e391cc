"""The roles' documents, checked against the requests the CLI sends (its dry runs):
N's jobs write only below N's prefixes and log only to N's streams, nothing may
delete objects, and each service may assume its role only for this account."""

from __future__ import annotations

import json
import warnings

import pytest

from dogbreed.aws import policies
from dogbreed.aws.context import Names
from dogbreed.aws.operator_policy import operator_policy
from support.aws import ACCOUNT, REGION
from support.iam_check import Need, allows, policy_actions, run_verb, without_credentials

NAME = "Dogs"
OUTPUT, CHECKPOINTS = "s3://dogs-bucket/output", "s3://dogs-bucket/checkpoints"
CONFIG = {
    "region": REGION,
    "data": "s3://dogs-bucket/dogImages",
    "output": OUTPUT,
    "checkpoints": CHECKPOINTS,
}
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc1234"
LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker"


@pytest.fixture
def config(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(CONFIG))
    return str(path)


def sent(config: str, verb: str, *argv: str, name: str = NAME) -> dict:
    """verb's dry run: operation -> the parameters of its (last) request."""
    ctx, error = run_verb(verb, "--name", name, "--config", config, "--dry-run", *argv)
    assert error is None, error
    return {r.operation: r.params for r in ctx.requests}


def role_policy(config: str, name: str = NAME) -> dict:
    """The execution role's inline policy, as `aws iam` would put it."""
    puts = run_verb("iam", "--name", name, "--config", config, "--dry-run")[0].requests
    role = f"{name}-sagemaker-execution"
    put = next(
        r.params for r in puts if r.operation == "put_role_policy" and r.params["RoleName"] == role
    )
    return json.loads(put["PolicyDocument"])


def s3(action: str, uri: str) -> Need:
    return Need(action, "arn:aws:s3:::" + uri.removeprefix("s3://"))


def test_a_training_job_writes_below_its_deployment_prefixes_only(config):
    job = sent(config, "train", "--image", IMAGE)["create_training_job"]
    output, checkpoints = job["OutputDataConfig"]["S3OutputPath"], job["CheckpointConfig"]["S3Uri"]
    assert output == f"{OUTPUT}/{NAME}"
    assert checkpoints.startswith(f"{CHECKPOINTS}/{NAME}/")
    policy = role_policy(config)
    # What SageMaker writes: the model under <output>/<job>/output/, checkpoints as synced.
    for key in (f"{output}/{job['TrainingJobName']}/output/model.tar.gz", f"{checkpoints}/last.pt"):
        assert allows(policy, s3("s3:PutObject", key)) and allows(policy, s3("s3:GetObject", key))
    others = run_verb("train", "--name", "Dogs2", "--image", IMAGE, "--config", config, "--dry-run")
    other = next(r.params for r in others[0].requests if r.operation == "create_training_job")
    for uri in (other["OutputDataConfig"]["S3OutputPath"], other["CheckpointConfig"]["S3Uri"]):
        assert not allows(policy, s3("s3:PutObject", f"{uri}/last.pt")), uri
        assert not allows(policy, s3("s3:GetObject", f"{uri}/last.pt")), uri
    bucket = "arn:aws:s3:::dogs-bucket"
    listing = Need("s3:ListBucket", bucket, {"s3:prefix": f"checkpoints/{NAME}/x/last.pt"})
    assert allows(policy, listing)
    assert not allows(policy, Need("s3:ListBucket", bucket, {"s3:prefix": "checkpoints/Dogs2/"}))


def test_no_document_lets_anyone_delete_objects(config):
    documents = [
        role_policy(config),
        policies.lambda_policy(REGION, ACCOUNT, NAME, NAME, "s3://in-bucket/uploads"),
        operator_policy(Names(NAME), REGION, ACCOUNT, CONFIG["data"]),
    ]
    for doc in documents:
        assert not [a for a in policy_actions(doc) if a.startswith("s3:") and "Delete" in a]
        assert "s3:AbortMultipartUpload" not in policy_actions(doc)


def stream(group: str, name: str) -> Need:
    return Need("logs:PutLogEvents", f"{LOGS}/{group}:log-stream:{name}")


def test_the_role_logs_to_its_own_jobs_and_endpoint_streams_only(config):
    long_name = "A-deployment-name-of-thirty-chars"[:30]
    for name in (NAME, long_name):
        policy = role_policy(config, name)
        job = sent(config, "train", "--image", IMAGE, name=name)["create_training_job"]
        tune = sent(config, "tune", "--image", IMAGE, name=name)[
            "create_hyper_parameter_tuning_job"
        ]
        # SageMaker names a tuning job's training jobs <tuning job>-<index>-<id>.
        child = f"{tune['HyperParameterTuningJobName']}-001-0a1b2c3d"
        for job_name in (job["TrainingJobName"], child):
            assert allows(policy, stream("TrainingJobs", f"{job_name}/algo-1-1700000000"))
            create = f"{LOGS}/TrainingJobs:log-stream:{job_name}/algo-2-1"
            assert allows(policy, Need("logs:CreateLogStream", create))
        assert allows(policy, stream(f"Endpoints/{name}", "AllTraffic/i-0123456789abcdef0"))
        assert allows(policy, Need("logs:CreateLogGroup", f"{LOGS}/Endpoints/{name}"))
        for other in ("Cats-0123abcd", f"{name}-v2-0123abcd", "Cats-0123abcd-001-0a1b2c3d"):
            assert not allows(policy, stream("TrainingJobs", f"{other}/algo-1-1700000000")), other
        assert not allows(policy, stream("Endpoints/Cats", "AllTraffic/i-0123456789abcdef0"))
        assert not allows(policy, Need("logs:CreateLogGroup", f"{LOGS}/Endpoints/Cats"))
        assert not allows(policy, stream("ProcessingJobs", f"{job['TrainingJobName']}/algo-1-1"))


def assume(account: str | None = None, source: str | None = None) -> Need:
    """AssumeRole by a service acting for `account` (and resource `source`)."""
    context = {"aws:SourceAccount": account, "aws:SourceArn": source}
    return Need("sts:AssumeRole", "", {k: v for k, v in context.items() if v})


def test_each_role_trusts_its_service_only_for_this_account(config):
    ctx, _ = run_verb("iam", "--name", NAME, "--config", config, "--dry-run")
    created = [r.params for r in ctx.requests if r.operation == "create_role"]
    trusts = {p["RoleName"]: json.loads(p["AssumeRolePolicyDocument"]) for p in created}
    sagemaker, lam = trusts[f"{NAME}-sagemaker-execution"], trusts[f"{NAME}-lambda"]
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/dogs-0123abcd"
    other = "210987654321"
    assert allows(sagemaker, assume(ACCOUNT, job))
    assert not allows(sagemaker, assume(other, job.replace(ACCOUNT, other)))
    assert not allows(sagemaker, assume(ACCOUNT, job.replace(REGION, "eu-west-1")))
    assert not allows(sagemaker, assume(ACCOUNT))
    assert allows(lam, assume(ACCOUNT))
    assert not allows(lam, assume(other))
    assert not allows(lam, assume())
    principals = {s["Principal"]["Service"] for doc in trusts.values() for s in doc["Statement"]}
    assert principals == {"sagemaker.amazonaws.com", "lambda.amazonaws.com"}


def test_the_role_documents_pass_parliament(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources
        import parliament  # a real IAM policy linter

    for doc in (
        role_policy(config),
        role_policy(config, "A-deployment-name-of-thirty-chars"),
        policies.lambda_policy(REGION, ACCOUNT, NAME, NAME, "s3://in-bucket/uploads"),
    ):
        findings = parliament.analyze_policy_string(json.dumps(doc)).findings
        assert findings == [], [(f.issue, f.detail) for f in findings]
