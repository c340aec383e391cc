"""Least-privilege IAM documents for the two roles a deployment needs.

No `*` action and no AWS-managed FullAccess policy: the SageMaker execution role
reads the data prefix, writes the output and checkpoint prefixes, pulls the two
ECR repositories and writes its logs and metrics; the Lambda role writes its own
log group and invokes exactly one endpoint.
"""

from __future__ import annotations

from typing import Any

from dogbreed.core.errors import ConfigError

VERSION = "2012-10-17"


def split_s3(uri: str, setting: str = "S3 URI") -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b'); `setting` names the value in the error."""
    scheme, _, path = uri.partition("://")
    bucket, _, prefix = path.partition("/")
    if scheme != "s3" or not bucket:
        raise ConfigError(f"{setting} {uri!r} is not an S3 location: expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


def trust_policy(service: str) -> dict[str, Any]:
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": f"{service}.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _objects(uri: str) -> str:
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


def sagemaker_policy(
    region: str, account: str, data: str, output: str, checkpoints: str, repositories: list[str]
) -> dict[str, Any]:
    repos = [f"arn:aws:ecr:{region}:{account}:repository/{r}" for r in repositories]
    logs = f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/*"
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ReadData",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [_objects(data)],
            },
            {
                "Sid": "WriteOutputAndCheckpoints",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": [_objects(output), _objects(checkpoints)],
            },
            *_list([data, output, checkpoints], "ListPrefixes"),
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
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                "Resource": [logs, f"{logs}:*"],
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
        statements.append(
            {
                "Sid": "ReadInputImages",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(s3_input),
            }
        )
    return {"Version": VERSION, "Statement": statements}
