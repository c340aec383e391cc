"""AWS test helpers: a deployment context whose clients a botocore Stubber answers, and
the environment that points boto3 (here and in the CLI's subprocesses) at moto's server."""

from __future__ import annotations

import boto3

from dogbreed.aws.config import load_config
from dogbreed.aws.context import Ctx, Names

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
DATA = "s3://dogs-bucket/dogImages"
# A deployment's settings file, as the tests write it (the rest: defaults.json).
CONFIG = {
    "region": REGION,
    "data": DATA,
    "output": "s3://dogs-bucket/output",
    "checkpoints": "s3://dogs-bucket/checkpoints",
}


def offline_ctx(service: str) -> tuple[Ctx, object]:
    """A context for deployment 'dogs' whose `service` client a botocore Stubber will answer."""
    client = boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    ctx = Ctx(Names("dogs"), load_config(None))
    ctx._clients[service] = client
    ctx._identity = (ACCOUNT, REGION)
    return ctx, client


def use_moto(moto_url: str, monkeypatch) -> dict[str, str]:
    """Point this process's boto3 at moto's server; the same variables for subprocesses."""
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
