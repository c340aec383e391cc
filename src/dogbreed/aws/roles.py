"""`dogbreed aws iam`: the SageMaker execution role and the Lambda role, each with
its trust policy and one inline least-privilege policy (documents in policies.py)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from dogbreed.aws import policies
from dogbreed.aws.context import Ctx


def cmd_iam(ctx: Ctx) -> None:
    docs = role_policies(ctx)
    ensure_role(ctx, ctx.names.sagemaker_role, "sagemaker", docs[ctx.names.sagemaker_role])
    ensure_role(ctx, ctx.names.lambda_role, "lambda", docs[ctx.names.lambda_role])


def role_policies(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Role name -> its inline policy document."""
    cfg, n = ctx.config, ctx.names
    return {
        n.sagemaker_role: policies.sagemaker_policy(
            ctx.region,
            ctx.account,
            cfg["data"],
            cfg["output"],
            cfg["checkpoints"],
            cfg["repositories"],
        ),
        n.lambda_role: policies.lambda_policy(
            ctx.region, ctx.account, n.function, n.endpoint, cfg["lambda"]["s3_input"]
        ),
    }


def ensure_role(ctx: Ctx, role: str, service: str, policy: dict[str, Any]) -> None:
    """Create the role or bring its trust and inline policy up to date."""
    trust = policies.trust_policy(service)
    found = ctx.find("iam", "get_role", RoleName=role)
    if found is None:
        ctx.write(
            "iam",
            "create_role",
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"dogbreed {ctx.names.name}: {service}",
            Tags=ctx.names.tags,
        )
        ctx.say(f"created role {role}")
    elif _doc(found["Role"]["AssumeRolePolicyDocument"]) != trust:
        ctx.write(
            "iam", "update_assume_role_policy", RoleName=role, PolicyDocument=json.dumps(trust)
        )
        ctx.say(f"updated trust policy of {role}")
    current = ctx.find("iam", "get_role_policy", RoleName=role, PolicyName=role)
    if current is not None and _doc(current["PolicyDocument"]) == policy:
        ctx.say(f"role {role} unchanged")
        return
    ctx.write(
        "iam", "put_role_policy", RoleName=role, PolicyName=role, PolicyDocument=json.dumps(policy)
    )
    ctx.say(f"{'set' if current is None else 'updated'} inline policy {role} on {role}")


def _doc(value: Any) -> Any:
    """IAM answers policy documents URL-encoded JSON, or (boto3) already parsed."""
    return json.loads(urllib.parse.unquote(value)) if isinstance(value, str) else value
