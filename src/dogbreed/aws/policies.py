"""Least-privilege IAM documents of the two roles a deployment runs as.

No `*` action and no AWS-managed FullAccess policy. The SageMaker execution role
reads the data prefix, writes N's own output and checkpoint prefixes (so one
deployment's job cannot overwrite another's), pulls the two ECR repositories and
writes the logs of N's jobs and endpoint; the Lambda role writes its own log group
and invokes exactly one endpoint. Each role trusts its service only when the
service acts for this account. The operator's policy is in operator_policy.py.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from dogbreed.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: context.py loads botocore, which the images lack
    from dogbreed.aws.context import Ctx

VERSION = "2012-10-17"
# training.py names tuning jobs N[:23]-<digest> (32 characters at most), and models,
# endpoint configs and training jobs N-<digest> with config.digest's 8 hex digits.
TUNING_NAME_CHARS = 23
DIGEST = "?" * 8  # IAM's `?` matches one character: N-???????? is not N-v2-????????
TRANSFORM_INPUT = "transform.input"  # the setting of what transform jobs may read
# Statements of the execution role's policy that commands look for (role_grants) before
# relying on them: `aws transform` on transform.input, `aws deploy --notify`.
READ_TRANSFORM_SID = "ReadTransformInput"
PUBLISH_SID = "PublishOwnAsyncNotifications"


def split_s3(uri: str, setting: str = "S3 URI") -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b'); `setting` names the value in the error."""
    scheme, _, path = uri.partition("://")
    bucket, _, prefix = path.partition("/")
    if scheme != "s3" or not bucket:
        raise ConfigError(f"{setting} {uri!r} is not an S3 location: expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


def input_prefix(uri: str, setting: str = "lambda.s3_input") -> str:
    """The prefix `s3_uri` may read, as s3://bucket/prefix/; a whole bucket is refused,
    since `s3_uri` could then name any object the role reads there."""
    bucket, prefix = split_s3(uri, setting)
    if not prefix:
        raise ConfigError(
            f"{setting} {uri!r} is a whole bucket: give a prefix, e.g. s3://{bucket}/uploads/"
        )
    return f"s3://{bucket}/{prefix}/"


def deployment_uri(uri: str, name: str) -> str:
    """N's own prefix below a shared location: ('s3://b/output', 'dogs') -> 's3://b/output/dogs'.

    Training jobs write there and the execution role may write nowhere else."""
    return f"{uri.rstrip('/')}/{name}"


# ---- trust ----------------------------------------------------------------------------------


def trust_policy(service: str, account: str, source_arn: str | None = None) -> dict[str, Any]:
    """`service` may assume the role only when acting for `account` (and `source_arn`)."""
    condition: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": account}}
    if source_arn:
        condition["ArnLike"] = {"aws:SourceArn": source_arn}
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": f"{service}.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": condition,
            }
        ],
    }


def sagemaker_trust(region: str, account: str) -> dict[str, Any]:
    # SageMaker's confused-deputy guidance: aws:SourceArn with a wildcard for the parts
    # not known in advance. Training jobs, the training jobs of a tuning job and the
    # endpoint's model assume this role, each with its own ARN: all SageMaker resources
    # of this account and region.
    return trust_policy("sagemaker", account, f"arn:aws:sagemaker:{region}:{account}:*")


def lambda_trust(account: str) -> dict[str, Any]:
    # aws:SourceAccount only: Lambda documents aws:SourceArn for policies whose target is
    # the function, not for assuming its execution role, and a condition on a key the
    # request lacks denies, which would stop the function from ever running.
    return trust_policy("lambda", account)


# ---- the SageMaker execution role -----------------------------------------------------------


def objects_arn(uri: str) -> str:
    bucket, prefix = split_s3(uri)
    return f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"


def _list(uris: list[str], sid: str) -> list[dict[str, Any]]:
    """ListBucket per bucket, limited to the given prefixes."""
    by_bucket: dict[str, list[str]] = {}
    for uri in uris:
        bucket, prefix = split_s3(uri)
        by_bucket.setdefault(bucket, []).extend([prefix, f"{prefix}/*"] if prefix else ["*"])
    return [
        {
            "Sid": f"{sid}{i}",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": sorted(set(prefixes))}},
        }
        for i, (bucket, prefixes) in enumerate(sorted(by_bucket.items()))
    ]


def job_name_patterns(name: str) -> list[str]:
    """Names of N's training jobs, and of the training jobs N's tuning jobs start
    (SageMaker names those <tuning job>-<index>-<id>), as IAM wildcards."""
    return [f"{name}-{DIGEST}", f"{name[:TUNING_NAME_CHARS]}-{DIGEST}-*"]


def _sagemaker_logs(region: str, account: str, name: str) -> list[dict[str, Any]]:
    """CreateLogGroup and DescribeLogStreams on the two groups N's jobs and endpoint log
    to; streams only N's: a job's are <job>/algo-<n>-<time>, the endpoint's <variant>/<id>."""
    prefix = f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker"
    jobs, endpoint = f"{prefix}/TrainingJobs", f"{prefix}/Endpoints/{name}"
    streams = [f"{jobs}:log-stream:{job}/*" for job in job_name_patterns(name)]
    # Batch transform jobs (transform.py, N-<digest>): streams <job>/<instance>[/data-log].
    transform = f"{prefix}/TransformJobs"
    streams.append(f"{transform}:log-stream:{name}-{DIGEST}/*")
    return [
        {
            "Sid": "OwnLogGroups",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:DescribeLogStreams"],
            # Group actions are also checked against <group>:log-stream: (hence <group>:*).
            "Resource": [jobs, f"{jobs}:*", endpoint, f"{endpoint}:*", transform, f"{transform}:*"],
        },
        {
            "Sid": "OwnLogStreams",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [*streams, f"{endpoint}:log-stream:*"],
        },
    ]


def sagemaker_policy(
    region: str,
    account: str,
    name: str,
    data: str,
    output: str,
    checkpoints: str,
    repositories: list[str],
    transform_input: str | None = None,
) -> dict[str, Any]:
    """The execution role of N's jobs and endpoint; `output` and `checkpoints` are the
    shared locations, N writes below them (deployment_uri). `transform_input`: the prefix
    N's batch transform jobs read (the setting transform.input), when set. Transform jobs
    write under N's output prefix, which WriteOwnOutputAndCheckpoints covers."""
    # Here, not at the top: context.py loads botocore, which the images lack, and their
    # CLI parser reads this module's neighbour config.py.
    from dogbreed.aws.context import Names

    own = [deployment_uri(output, name), deployment_uri(checkpoints, name)]
    repos = [f"arn:aws:ecr:{region}:{account}:repository/{r}" for r in repositories]
    reads = [data]
    transform_reads = []
    if transform_input:
        input_prefix(transform_input, TRANSFORM_INPUT)  # no whole bucket, as lambda.s3_input
        reads.append(transform_input)
        transform_reads.append(
            {
                "Sid": READ_TRANSFORM_SID,
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [objects_arn(transform_input)],
            }
        )
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ReadData",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [objects_arn(data)],
            },
            *transform_reads,
            # Get and Put only: SageMaker documents GetObject, PutObject and ListBucket as
            # what CreateTrainingJob and CreateModel need (checkpoints are uploaded and
            # downloaded, never deleted by it), and no command of ours deletes objects.
            {
                "Sid": "WriteOwnOutputAndCheckpoints",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": [objects_arn(uri) for uri in own],
            },
            *_list([*reads, *own], "ListPrefixes"),
            {
                "Sid": "PullImages",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                "Resource": repos,
            },
            # The token call has no resource-level permissions: "*" is the only valid resource.
            {
                "Sid": "RegistryLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
            *_sagemaker_logs(region, account, name),
            # An asynchronous endpoint deployed with --notify publishes each answer to N's
            # two topics (granted always: they are N's own, and `aws deploy --notify` then
            # needs no new grant from the administrator).
            {
                "Sid": PUBLISH_SID,
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": [
                    f"arn:aws:sns:{region}:{account}:{topic}" for topic in Names(name).async_topics
                ],
            },
            {
                "Sid": "Metrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            },
        ],
    }


# ---- the execution role's policy as IAM holds it --------------------------------------------


def _role_statements(ctx: Ctx) -> list[dict[str, Any]] | None:
    """The statements of N's execution role's policy (GetRolePolicy) as `aws iam` last
    wrote it, [] when there is none; None in a dry run, which records the read."""
    role = ctx.names.sagemaker_role
    found = ctx.find("iam", "get_role_policy", RoleName=role, PolicyName=role)
    if ctx.dry_run:
        return None
    doc = (found or {}).get("PolicyDocument") or {}
    if isinstance(doc, str):  # IAM answers URL-encoded JSON; boto3 may have parsed it
        doc = json.loads(urllib.parse.unquote(doc))
    return doc.get("Statement", [])


def role_grants(ctx: Ctx, sid: str, resource: str | None = None) -> bool:
    """Whether the execution role's policy has statement `sid` (listing `resource` when
    given), i.e. `aws iam` ran since that grant was added; True in a dry run."""
    statements = _role_statements(ctx)
    if statements is None:
        return True
    return any(
        s.get("Sid") == sid and (resource is None or resource in _listed(s.get("Resource", [])))
        for s in statements
    )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---- the Lambda role ------------------------------------------------------------------------


def endpoint_arn(region: str, account: str, endpoint: str) -> str:
    # IAM matches SageMaker endpoint ARNs in lower case.
    return f"arn:aws:sagemaker:{region}:{account}:endpoint/{endpoint.lower()}"


def lambda_policy(
    region: str, account: str, function: str, endpoint: str, s3_input: str | None = None
) -> dict[str, Any]:
    group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "CreateOwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup"],
            "Resource": group,
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{group}:*",
        },
        {
            "Sid": "InvokeOneEndpoint",
            "Effect": "Allow",
            "Action": ["sagemaker:InvokeEndpoint"],
            "Resource": endpoint_arn(region, account, endpoint),
        },
    ]
    if s3_input:
        input_prefix(s3_input)  # refused here too: `aws iam` grants no whole bucket
        statements.append(
            {
                "Sid": "ReadInputImages",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": objects_arn(s3_input),
            }
        )
    return {"Version": VERSION, "Statement": statements}
