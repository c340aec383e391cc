"""`aws up`'s step 4: the job's model as a version of N's registry, and the version the
endpoint gets.

The version is the one of (training job, serve image): `aws register`'s, so a rerun with
another --image-serve registers a new version and deploys that image. A Rejected version
is never deployed; a PendingManualApproval one is, with a line saying so (unless
--deploy-approved keeps the newest Approved one on the endpoint).
"""

from __future__ import annotations

from dogbreed.aws.context import Ctx
from dogbreed.aws.registry import (
    APPROVED,
    NEWEST_APPROVED,
    PENDING,
    REJECTED,
    Version,
    group_name,
    register_job,
    resolve,
)
from dogbreed.core.errors import ConfigError


def up_version(
    ctx: Ctx, name: str, job: dict | None, image: str, approve: bool, deploy_approved: bool
) -> tuple[Version, str]:
    """Register the job's model with `image`; the version to deploy (with
    `deploy_approved`, the newest Approved one while the job's is not) and the line."""
    version = register_job(ctx, name, job, image, approve)
    line = f"model version {version.number} of {group_name(ctx)} ({version.status}): "
    if version.status == APPROVED:
        return version, line + version.model_data
    if deploy_approved:
        deployed = resolve(ctx, NEWEST_APPROVED, image, "--deploy-approved")
        return deployed, line + (
            f"not Approved, so the endpoint gets (or keeps) Approved version "
            f"{deployed.number}, {deployed.model_data}"
        )
    if version.status == REJECTED:
        raise ConfigError(_rejected(ctx, version))
    if version.status == PENDING:
        ctx.say(
            f"version {version.number} is {PENDING}: deploying it unapproved (approve it: "
            f"aws approve --name {ctx.names.name} --version {version.number}; or pass "
            "--deploy-approved to keep the newest Approved version on the endpoint)"
        )
    return version, line + version.model_data


def _rejected(ctx: Ctx, version: Version) -> str:
    n = ctx.names.name
    return (
        f"model version {version.number} of {group_name(ctx)} is {REJECTED}: aws up does not "
        f"deploy it; approve it explicitly (aws approve --name {n} --version {version.number}) "
        "or train a new job (another request, e.g. other --hp), or pass --deploy-approved"
    )
