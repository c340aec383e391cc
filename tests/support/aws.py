"""AWS test helpers: a deployment context whose clients a botocore Stubber answers."""

from __future__ import annotations

import boto3

from dogbreed.aws.config import load_config
from dogbreed.aws.context import Ctx, Names

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"


def offline_ctx(service: str) -> tuple[Ctx, object]:
    """A context for deployment 'dogs' whose `service` client a botocore Stubber will answer."""
    client = boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    ctx = Ctx(Names("dogs"), load_config(None))
    ctx._clients[service] = client
    ctx._identity = (ACCOUNT, REGION)
    return ctx, client
