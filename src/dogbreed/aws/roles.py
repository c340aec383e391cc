"""`dogbreed aws iam`: the SageMaker execution role and the Lambda role, each with
its trust policy and one inline least-privilege policy (documents in policies.py);
`--operator-policy`: what the person or CI role running the commands day to day
needs, and `--admin-policy`: what creating and changing the roles needs
(operator_policy.py).

A role is created tagged dogbreed:name=N. A same-named role without that tag is
someone else's: `aws iam` refuses to rewrite its trust and permissions unless told
to take it over (--adopt).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from dogbreed.aws import operator_policy as operator
from dogbreed.aws import policies
from dogbreed.aws.context import Ctx, denied
from dogbreed.core.errors import AwsError


def cmd_iam(ctx: Ctx) -> None:
    try:
        _iam(ctx)
    except AwsError as exc:
        if not denied(exc):
            raise
        raise AwsError(f"{exc}. {admin_step(ctx)}") from None


def admin_step(ctx: Ctx) -> str:
    """The fix for a day-to-day operator refused an IAM call: the administrator's one-time
    step (the operator policy has no IAM writes, so that it cannot escalate)."""
    n = ctx.names.name
    return (
        f"Creating or changing the roles of {n} is an administrator's one-time step: an "
        f"administrator (holding the policy that `dogbreed aws iam --name {n} --admin-policy` "
        f"prints) runs `dogbreed aws iam --name {n}`, then you rerun this command"
    )


def _iam(ctx: Ctx) -> None:
    docs, trusts = role_policies(ctx), role_trusts(ctx)
    found = {role: ctx.find("iam", "get_role", RoleName=role) for role in trusts}
    for role, current in found.items():  # refuse before changing anything
        if current is not None:
            tag = {"RoleName": role, "Tags": ctx.names.tags}
            ctx.claim("role", role, current["Role"].get("Tags"), lambda t=tag: _tag(ctx, t))
    for role, (service, trust) in trusts.items():
        ensure_role(ctx, role, service, trust, docs[role], found[role])


def _tag(ctx: Ctx, request: dict[str, Any]) -> None:
    ctx.write("iam", "tag_role", **request)


def operator_policy(ctx: Ctx) -> dict[str, Any]:
    """The day-to-day policy: every verb but the role writes (no IAM write at all)."""
    cfg = ctx.config
    return operator.operator_policy(
        ctx.names, ctx.region, ctx.account, cfg["data"], output=cfg["output"]
    )


def admin_policy(ctx: Ctx) -> dict[str, Any]:
    """The administrator's policy: creating, changing and deleting N's two roles."""
    return operator.admin_policy(ctx.names, ctx.account)


def role_trusts(ctx: Ctx) -> dict[str, tuple[str, dict[str, Any]]]:
    """Role name -> (the service that assumes it, its trust policy)."""
    n = ctx.names
    return {
        n.sagemaker_role: ("sagemaker", policies.sagemaker_trust(ctx.region, ctx.account)),
        n.lambda_role: ("lambda", policies.lambda_trust(ctx.account)),
    }


def role_policies(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Role name -> its inline policy document."""
    cfg, n = ctx.config, ctx.names
    return {
        n.sagemaker_role: policies.sagemaker_policy(
            ctx.region,
            ctx.account,
            n.name,
            cfg["data"],
            cfg["output"],
            cfg["checkpoints"],
            cfg["repositories"],
            cfg["transform"]["input"],
        ),
        n.lambda_role: policies.lambda_policy(
            ctx.region, ctx.account, n.function, n.endpoint, cfg["lambda"]["s3_input"]
        ),
    }


def ensure_role(
    ctx: Ctx,
    role: str,
    service: str,
    trust: dict[str, Any],
    policy: dict[str, Any],
    found: dict[str, Any] | None,
) -> None:
    """Create the role or bring its trust and inline policy up to date (`found`: GetRole's
    answer, None when there is no such role)."""
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
