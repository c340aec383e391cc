"""The operator's policies: what the person or CI role that runs `dogbreed aws` for N needs.

Two tables. OPERATOR, the day-to-day policy: the actions the commands call, each on
N's resources (ARNs built from N's names, the region and the account), plus what AWS
checks along with a call (tagging on create, Application Auto Scaling's checks on the
caller). It reads N's two roles and passes each to its own service, and writes no IAM
at all: whoever could rewrite a role's trust or permissions could make it an
administrator and assume it. ADMIN, the administrator's: creating, changing, adopting
and deleting those two roles (`aws iam`, `aws down` without --keep-roles), run once.
`dogbreed aws iam --name N --operator-policy` (or `--admin-policy`) prints one filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dogbreed.aws.policies import (
    DIGEST,
    TUNING_NAME_CHARS,
    VERSION,
    deployment_uri,
    objects_arn,
    split_s3,
)

if TYPE_CHECKING:
    from dogbreed.aws.context import Names


@dataclass(frozen=True)
class Grant:
    """One statement of the operator's policy. Resources and condition values are
    templates over _operator_fields: {region}, {account}, {n} (context.Names: {n.function},
    {n.sagemaker_role}, ...), {sm} (N in lower case, as IAM matches SageMaker ARNs),
    {tuning} (the tuning job prefix), {digest}, {data_objects}, {data_bucket}."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, dict[str, str]] | None = None


SM = "arn:aws:sagemaker:{region}:{account}"
ROLE = "arn:aws:iam::{account}:role"
FUNCTION = "arn:aws:lambda:{region}:{account}:function:{n.function}"
VARIANT_INSTANCES = "sagemaker:variant:DesiredInstanceCount"  # endpoint.SCALABLE_DIMENSION
THE_TWO_ROLES = (ROLE + "/{n.sagemaker_role}", ROLE + "/{n.lambda_role}")
AUTOSCALING_ROLE = (
    ROLE + "/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)

# What each command calls, on N's resources. A command that calls something new adds its
# action here (tests/unit/aws/test_operator_policy.py runs every verb and says what is
# missing). Tag-on-create needs the service's tagging action too.
OPERATOR: tuple[Grant, ...] = (
    # iam, up, status, down: the two roles read (ADMIN changes them).
    Grant("ReadTheTwoRoles", ("iam:GetRole", "iam:GetRolePolicy"), THE_TWO_ROLES),
    # train, tune, deploy hand a role to a service: each role to its own service only.
    Grant(
        "PassExecutionRoleToSageMaker",
        ("iam:PassRole",),
        (ROLE + "/{n.sagemaker_role}",),
        {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
    ),
    Grant(
        "PassFunctionRoleToLambda",
        ("iam:PassRole",),
        (ROLE + "/{n.lambda_role}",),
        {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
    ),
    # train, tune
    Grant(
        "TrainingJobs",
        ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:AddTags"),
        (SM + ":training-job/{sm}-{digest}",),
    ),
    Grant(
        "TuningJobs",
        (
            "sagemaker:CreateHyperParameterTuningJob",
            "sagemaker:DescribeHyperParameterTuningJob",
            "sagemaker:AddTags",
        ),
        (SM + ":hyper-parameter-tuning-job/{tuning}-{digest}",),
    ),
    # transform: CreateTransformJob is checked on the job alone; the model it runs comes as
    # the condition key sagemaker:ModelArn, which keeps the job to N's models (N-<digest>).
    Grant(
        "TransformJobsOfOwnModels",
        ("sagemaker:CreateTransformJob",),
        (SM + ":transform-job/{sm}-{digest}",),
        {"ArnLike": {"sagemaker:ModelArn": SM + ":model/{sm}-{digest}"}},
    ),
    # transform, status (AddTags: tags on create)
    Grant(
        "TransformJobs",
        ("sagemaker:DescribeTransformJob", "sagemaker:AddTags"),
        (SM + ":transform-job/{sm}-{digest}",),
    ),
    # deploy, status, down (ListTags: down deletes only what carries N's tag)
    Grant(
        "Models",
        (
            "sagemaker:CreateModel",
            "sagemaker:DescribeModel",
            "sagemaker:DeleteModel",
            "sagemaker:AddTags",
            "sagemaker:ListTags",
        ),
        (SM + ":model/{sm}-{digest}",),
    ),
    Grant(
        "EndpointConfigs",
        (
            "sagemaker:CreateEndpointConfig",
            "sagemaker:DescribeEndpointConfig",
            "sagemaker:DeleteEndpointConfig",
            "sagemaker:AddTags",
            "sagemaker:ListTags",
        ),
        (SM + ":endpoint-config/{sm}-{digest}",),
    ),
    # These two act on the endpoint and the config it runs: both must be allowed.
    Grant(
        "PointTheEndpointAtAConfig",
        ("sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"),
        (SM + ":endpoint/{sm}", SM + ":endpoint-config/{sm}-{digest}"),
    ),
    # deploy, autoscale (Application Auto Scaling acts on the endpoint with the caller's
    # rights: DescribeEndpoint and UpdateEndpointWeightsAndCapacities), invoke, down
    Grant(
        "Endpoint",
        (
            "sagemaker:DescribeEndpoint",
            "sagemaker:DeleteEndpoint",
            "sagemaker:AddTags",
            "sagemaker:ListTags",
            "sagemaker:UpdateEndpointWeightsAndCapacities",
            "sagemaker:InvokeEndpoint",
        ),
        (SM + ":endpoint/{sm}",),
    ),
    # status, down: List calls have no resource-level permissions, "*" is the only valid
    # resource.
    Grant(
        "ListJobsModelsAndConfigs",
        (
            "sagemaker:ListTrainingJobs",
            "sagemaker:ListEndpointConfigs",
            "sagemaker:ListModels",
            "sagemaker:ListTransformJobs",
        ),
        ("*",),
    ),
    # register, approve, deploy --model-package, up, status, down: N's model registry, the
    # model package group N (model-package-group/<name>) and its versions
    # (model-package/<group>/<version>). CreateModelPackage is checked on both. Nothing
    # deletes them: a registry is a record.
    Grant(
        "ModelPackageGroup",
        (
            "sagemaker:CreateModelPackageGroup",
            "sagemaker:DescribeModelPackageGroup",
            "sagemaker:CreateModelPackage",
            "sagemaker:AddTags",
            "sagemaker:ListTags",
        ),
        (SM + ":model-package-group/{sm}",),
    ),
    Grant(
        "ModelVersions",
        (
            "sagemaker:CreateModelPackage",
            "sagemaker:DescribeModelPackage",
            "sagemaker:UpdateModelPackage",
            "sagemaker:AddTags",
        ),
        (SM + ":model-package/{sm}/*",),
    ),
    # The service authorization reference gives ListModelPackages an optional
    # model-package resource, but a listing names no version: "*".
    Grant("ListModelVersions", ("sagemaker:ListModelPackages",), ("*",)),
    # autoscale, down: a scalable target's ARN holds an ID AWS picks, so the condition keys
    # narrow these to SageMaker variants; the sagemaker actions above narrow them to N's.
    Grant(
        "ReadScaling",
        (
            "application-autoscaling:DescribeScalableTargets",
            "application-autoscaling:DescribeScalingPolicies",
        ),
        ("*",),
    ),
    Grant(
        "ScaleTheVariant",
        (
            "application-autoscaling:RegisterScalableTarget",
            "application-autoscaling:PutScalingPolicy",
            "application-autoscaling:DeleteScalingPolicy",
            "application-autoscaling:DeregisterScalableTarget",
        ),
        ("arn:aws:application-autoscaling:{region}:{account}:scalable-target/*",),
        {
            "StringEquals": {
                "application-autoscaling:service-namespace": "sagemaker",
                "application-autoscaling:scalable-dimension": VARIANT_INSTANCES,
            }
        },
    ),
    # The first RegisterScalableTarget for SageMaker in an account creates this role.
    Grant(
        "AutoscalingServiceLinkedRole",
        ("iam:CreateServiceLinkedRole",),
        (AUTOSCALING_ROLE,),
        {"StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}},
    ),
    # Target tracking's alarms, named after the scalable resource.
    Grant(
        "TargetTrackingAlarms",
        ("cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"),
        ("arn:aws:cloudwatch:{region}:{account}:alarm:TargetTracking-{n.scaling_resource}-*",),
    ),
    # deploy, down: the endpoint's alarms (alarms.py), created tagged and deleted only when
    # ListTagsForResource shows N's tag.
    Grant(
        "EndpointAlarms",
        (
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:TagResource",
            "cloudwatch:DescribeAlarms",
            "cloudwatch:ListTagsForResource",
            "cloudwatch:DeleteAlarms",
        ),
        (
            "arn:aws:cloudwatch:{region}:{account}:alarm:{n.alarms[0]}",
            "arn:aws:cloudwatch:{region}:{account}:alarm:{n.alarms[1]}",
        ),
    ),
    # lambda, invoke, down: the function, its versions and alias (FUNCTION:*).
    Grant(
        "Function",
        (
            "lambda:GetFunction",
            "lambda:CreateFunction",
            "lambda:TagResource",
            "lambda:UpdateFunctionCode",
            "lambda:UpdateFunctionConfiguration",
            "lambda:GetFunctionConfiguration",
            "lambda:PublishVersion",
            "lambda:GetAlias",
            "lambda:CreateAlias",
            "lambda:UpdateAlias",
            "lambda:GetFunctionConcurrency",
            "lambda:PutFunctionConcurrency",
            "lambda:PutProvisionedConcurrencyConfig",
            "lambda:GetProvisionedConcurrencyConfig",
            "lambda:DeleteProvisionedConcurrencyConfig",
            "lambda:InvokeFunction",
            "lambda:DeleteFunction",
        ),
        (FUNCTION, FUNCTION + ":*"),
    ),
    # lambda: the function URL on 'live', and with --public-url the grant that opens it.
    Grant(
        "FunctionUrl",
        (
            "lambda:GetFunctionUrlConfig",
            "lambda:CreateFunctionUrlConfig",
            "lambda:UpdateFunctionUrlConfig",
            "lambda:GetPolicy",
            "lambda:AddPermission",
            "lambda:RemovePermission",
        ),
        (FUNCTION, FUNCTION + ":*"),
    ),
    Grant(
        "FunctionLogGroup",
        ("logs:DeleteLogGroup",),
        (
            "arn:aws:logs:{region}:{account}:log-group:{n.log_group}",
            "arn:aws:logs:{region}:{account}:log-group:{n.log_group}:*",
        ),
    ),
    # deploy --async --notify, status, down: N's two SNS topics, created tagged and deleted
    # only when ListTagsForResource shows N's tag.
    Grant(
        "AsyncTopics",
        (
            "sns:CreateTopic",
            "sns:TagResource",
            "sns:ListTagsForResource",
            "sns:GetTopicAttributes",
            "sns:DeleteTopic",
        ),
        (
            "arn:aws:sns:{region}:{account}:{n.async_topics[0]}",
            "arn:aws:sns:{region}:{account}:{n.async_topics[1]}",
        ),
    ),
    # autoscale on an asynchronous endpoint, status, down: the alarm that wakes it from zero.
    Grant(
        "WakeAlarm",
        (
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:TagResource",
            "cloudwatch:DescribeAlarms",
            "cloudwatch:ListTagsForResource",
            "cloudwatch:DeleteAlarms",
        ),
        ("arn:aws:cloudwatch:{region}:{account}:alarm:{n.backlog_alarm}",),
    ),
    # invoke --async: the request under N's async prefix, then its answer or failure there.
    # No s3:ListBucket on the output bucket (it would list every deployment's objects):
    # HeadObject then answers 403 for a key not written yet, which invoke --async takes
    # as missing (asynchronous.present).
    Grant("InvokeAsync", ("sagemaker:InvokeEndpointAsync",), (SM + ":endpoint/{sm}",)),
    Grant("AsyncObjects", ("s3:GetObject", "s3:PutObject"), ("{async_objects}",)),
    # upload-data and up to the configured data prefix: HeadObject (s3:GetObject) then
    # PutObject.
    Grant("UploadData", ("s3:GetObject", "s3:PutObject"), ("{data_objects}",)),
    # HeadObject answers 404 for a missing key only to a caller allowed s3:ListBucket on
    # the bucket (403 otherwise). That check is no listing request, so an s3:prefix
    # condition could not match it: the bucket, unconditioned. `up --data s3://...` lists
    # one key of the data prefix to check the dataset is there.
    Grant("TellMissingDataObjects", ("s3:ListBucket",), ("{data_bucket}",)),
)


# The administrator's: `aws iam` (create, update, --adopt's tag) and `aws down` (delete).
ADMIN: tuple[Grant, ...] = (
    Grant(
        "ManageTheTwoRoles",
        (
            "iam:GetRole",
            "iam:CreateRole",
            "iam:TagRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:GetRolePolicy",
            "iam:PutRolePolicy",
            "iam:DeleteRolePolicy",
            "iam:DeleteRole",
        ),
        THE_TWO_ROLES,
    ),
)


# Grants on N's output prefix: left out of a policy made without the output setting.
ON_OUTPUT = ("AsyncObjects",)


def _operator_fields(
    names: Names, region: str, account: str, data: str, output: str | None
) -> dict[str, Any]:
    bucket, _ = split_s3(data, "data")
    fields: dict[str, Any] = {}
    if output:
        fields["async_objects"] = objects_arn(f"{deployment_uri(output, names.name)}/async")
    return {
        **fields,
        "region": region,
        "account": account,
        "n": names,
        "sm": names.name.lower(),
        "tuning": names.name[:TUNING_NAME_CHARS].lower(),
        "digest": DIGEST,
        "data_objects": objects_arn(data),
        "data_bucket": f"arn:aws:s3:::{bucket}",
    }


def _fill(template: Any, fields: dict[str, Any]) -> Any:
    if isinstance(template, str):
        return template.format(**fields)
    if isinstance(template, dict):
        return {k: _fill(v, fields) for k, v in template.items()}
    return [_fill(v, fields) for v in template]


def _policy(grants: tuple[Grant, ...], fields: dict[str, Any]) -> dict[str, Any]:
    statements = []
    for grant in grants:
        statement: dict[str, Any] = {
            "Sid": grant.sid,
            "Effect": "Allow",
            "Action": list(grant.actions),
            "Resource": _fill(list(grant.resources), fields),
        }
        if grant.condition:
            statement["Condition"] = _fill(grant.condition, fields)
        statements.append(statement)
    return {"Version": VERSION, "Statement": statements}


def operator_policy(
    names: Names, region: str, account: str, data: str, output: str | None = None
) -> dict[str, Any]:
    """What the person or CI role running `dogbreed aws` for N needs day to day: OPERATOR,
    filled in (`output`: the output setting; without it no grant on N's output prefix)."""
    grants = tuple(g for g in OPERATOR if output or g.sid not in ON_OUTPUT)
    return _policy(grants, _operator_fields(names, region, account, data, output))


def admin_policy(names: Names, account: str) -> dict[str, Any]:
    """What creating, changing and deleting N's two roles needs: ADMIN, filled in."""
    return _policy(ADMIN, {"account": account, "n": names})
