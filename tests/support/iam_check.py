"""What an IAM policy allows, checked against the requests the CLI records.

`needs(request)` turns one recorded request (service, operation, parameters) into
the permissions IAM checks for it: the action, the resource ARN built from the
request's own names, and the condition keys the request carries. Beside the
call's own action come the ones AWS documents as checked with it: iam:PassRole for
a role handed to a service, the service's tagging action for a create with Tags,
and what Application Auto Scaling checks on the caller for a SageMaker variant.
`allows(policy, need)` is a small evaluator: Allow statements only, `*` and `?`
wildcards, the condition operators our policies use. It knows the services the
CLI calls and fails loudly on any other, so a new call extends it on purpose.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore import xform_name

from dogbreed.aws.asynchronous import ASYNC_PREFIX
from dogbreed.aws.context import Ctx
from dogbreed.core.errors import DogbreedError


@dataclass(frozen=True)
class Need:
    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        keys = f" {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{keys}"


# ---- running the CLI in-process -------------------------------------------------------------


def run_verb(*argv: str) -> tuple[Ctx, DogbreedError | None]:
    """`dogbreed aws ARGV` as the CLI runs it; the context (its recorded requests) and the
    error it ended with, if any. Output goes to a buffer."""
    from dogbreed.cli.aws_cmds import VERBS, aws_context
    from dogbreed.cli.main import build_parser

    args = build_parser().parse_args(["aws", *argv])
    ctx = aws_context(args)
    ctx.out = io.StringIO()
    try:
        VERBS[args.verb](ctx, args)
    except DogbreedError as exc:
        return ctx, exc
    return ctx, None


def aws_verbs() -> dict[str, Any]:
    """Verb -> its argparse parser, as `dogbreed aws --help` lists them."""
    from dogbreed.cli.main import build_parser

    def subparsers(parser):
        # argparse offers no public way to list a parser's subcommands.
        return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")

    aws = subparsers(build_parser()).choices["aws"]
    return dict(subparsers(aws).choices)


CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def without_credentials(monkeypatch, tmp_path) -> None:
    """No AWS credentials anywhere botocore looks (a dry run then sends nothing; a call
    that must send fails before any traffic), and loopback as the endpoint regardless."""
    for key in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


# ---- what IAM checks for one request ---------------------------------------------------------

IAM_PREFIX = {"sagemaker-runtime": "sagemaker"}
# Operations whose IAM action is not their API name.
ACTIONS = {
    # s3:ListBucket on the bucket makes a missing key answer 404 rather than 403.
    ("s3", "head_object"): ("s3:GetObject", "s3:ListBucket"),
    ("s3", "list_objects_v2"): ("s3:ListBucket",),
    ("lambda", "invoke"): ("lambda:InvokeFunction",),
    ("sts", "get_caller_identity"): (),  # needs no permission
}
SAGEMAKER_NAMES = {
    "TrainingJobName": "training-job",
    "HyperParameterTuningJobName": "hyper-parameter-tuning-job",
    "ModelName": "model",
    "EndpointConfigName": "endpoint-config",
    "EndpointName": "endpoint",
    "TransformJobName": "transform-job",
    "ModelPackageGroupName": "model-package-group",
}
# Names a call carries that IAM reads as a condition key, not as a resource it checks:
# CreateTransformJob is checked on the job, its model comes as sagemaker:ModelArn (the
# Service Authorization Reference).
SAGEMAKER_KEYS = {("create_transform_job", "ModelName"): ("sagemaker:ModelArn", "model")}
PACKAGE_VERSION = 1  # a new version's number, which SageMaker picks
TAGGING = {
    "iam": "iam:TagRole",
    "sagemaker": "sagemaker:AddTags",
    "lambda": "lambda:TagResource",
    "application-autoscaling": "application-autoscaling:TagResource",
    "cloudwatch": "cloudwatch:TagResource",
    "logs": "logs:TagResource",
    "sns": "sns:TagResource",
}
PASSED_TO = {"sagemaker": "sagemaker.amazonaws.com", "lambda": "lambda.amazonaws.com"}
ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/")
# Stand-ins for names AWS picks: a scalable target's ID, a target-tracking alarm's suffix,
# and the config a variant runs (one of N's, N-<digest>).
TARGET_ID = "0123456789abcdef0123456789abcdef"
ALARM_SUFFIX = "AlarmHigh-01234567-89ab-cdef-0123-456789abcdef"
CONFIG_DIGEST = "0123abcd"
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"


@functools.cache
def _api_names(service: str) -> dict[str, str]:
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def actions(service: str, op: str) -> tuple[str, ...]:
    if (service, op) in ACTIONS:
        return ACTIONS[service, op]
    return (f"{IAM_PREFIX.get(service, service)}:{_api_names(service)[op]}",)


def resources(service: str, op: str, params: dict[str, Any], region: str, account: str) -> list:
    """The ARNs IAM checks the call against, from the request's own names."""
    if service == "sts":
        return []
    if service == "iam":
        return [f"arn:aws:iam::{account}:role/{params['RoleName']}"]
    if service in ("sagemaker", "sagemaker-runtime"):
        return _sagemaker(op, params, region, account)
    if service == "lambda":
        if "Resource" in params:  # tagging calls name the function by its ARN
            return [params["Resource"]]
        function = f"arn:aws:lambda:{region}:{account}:function:{params['FunctionName']}"
        qualifier = params.get("Qualifier")
        return [f"{function}:{qualifier}" if qualifier else function]
    if service == "application-autoscaling":
        if op.startswith("describe_"):
            return ["*"]  # no resource-level permissions
        return [f"arn:aws:application-autoscaling:{region}:{account}:scalable-target/{TARGET_ID}"]
    if service == "logs":
        return [f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}"]
    if service == "s3":
        if "Key" not in params:  # a listing: the bucket
            return [f"arn:aws:s3:::{params['Bucket']}"]
        return [f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"]
    if service == "sns":  # CreateTopic names the topic; the others take its ARN
        if "Name" in params:
            return [f"arn:aws:sns:{region}:{account}:{params['Name']}"]
        return [params.get("TopicArn") or params["ResourceArn"]]
    if "ResourceARN" in params:  # tagging calls name the resource by its ARN
        return [params["ResourceARN"]]
    if service == "cloudwatch":
        names = params.get("AlarmNames") or [params.get("AlarmName", "*")]
        return [f"arn:aws:cloudwatch:{region}:{account}:alarm:{n}" for n in names]
    raise AssertionError(f"tests/support/iam_check.py does not know {service} {op}: add it")


def _sagemaker(op: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    if op in ("list_tags", "add_tags"):  # the resource by its ARN, matched in lower case
        arn = params["ResourceArn"]
        prefix, _, resource = arn.partition("/")
        return [f"{prefix}/{resource.lower()}"]
    if op.startswith("list_"):
        return ["*"]  # no resource-level permissions
    if op == "create_model_package":  # the new version, then its group (both checked)
        group = params["ModelPackageGroupName"].lower()
        return [
            f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/{PACKAGE_VERSION}",
            f"arn:aws:sagemaker:{region}:{account}:model-package-group/{group}",
        ]
    version = params.get("ModelPackageArn") or params.get("ModelPackageName")
    if version:  # a version, by its ARN: model-package/<group>/<version>
        return [version.lower()]
    # IAM matches SageMaker ARNs in lower case.
    found = [
        f"arn:aws:sagemaker:{region}:{account}:{kind}/{params[key].lower()}"
        for key, kind in SAGEMAKER_NAMES.items()
        if key in params and (op, key) not in SAGEMAKER_KEYS
    ]
    if not found:
        raise AssertionError(f"no SageMaker resource named in {op} {sorted(params)}")
    return found


def needs(request, region: str, account: str) -> list[Need]:
    """Every permission IAM checks for one recorded request."""
    service, op, params = request
    arns = resources(service, op, params, region, account)
    keys = {**_context(service, params), **_sagemaker_keys(service, op, params, region, account)}
    found = [
        Need(a, _bucket(arn) if a == "s3:ListBucket" else arn, keys)
        for a in actions(service, op)
        for arn in arns
        if not (a == "s3:ListBucket" and _missing_by_403(op, params))
    ]
    found += _passed_roles(service, params)
    if "Tags" in params and not op.startswith("tag_"):
        found.append(Need(TAGGING[service], arns[0]))  # tag on create: the created resource
    if service == "application-autoscaling":
        found += _autoscaling(op, params, region, account)
    return found


def _missing_by_403(op: str, params: dict[str, Any]) -> bool:
    """HeadObject under N's async prefix: `invoke --async` takes 403 as "not there yet"
    (asynchronous.present), so it needs no s3:ListBucket."""
    return op == "head_object" and f"/{ASYNC_PREFIX}/" in f"/{params.get('Key', '')}"


def _bucket(object_arn: str) -> str:
    return object_arn.split("/", 1)[0]  # arn:aws:s3:::bucket/key -> arn:aws:s3:::bucket


def _context(service: str, params: dict[str, Any]) -> dict[str, str]:
    if service == "application-autoscaling" and "ServiceNamespace" in params:
        keys = {"application-autoscaling:service-namespace": params["ServiceNamespace"]}
        if "ScalableDimension" in params:
            keys["application-autoscaling:scalable-dimension"] = params["ScalableDimension"]
        return keys
    return {}


def _sagemaker_keys(
    service: str, op: str, params: dict[str, Any], region: str, account: str
) -> dict[str, str]:
    """The SageMaker condition keys a request carries (SAGEMAKER_KEYS)."""
    if service != "sagemaker":
        return {}
    return {
        key: f"arn:aws:sagemaker:{region}:{account}:{kind}/{params[name].lower()}"
        for (operation, name), (key, kind) in SAGEMAKER_KEYS.items()
        if operation == op and name in params
    }


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _passed_roles(service: str, params: dict[str, Any]) -> list[Need]:
    """iam:PassRole for every role ARN the request hands to the service."""
    if service == "iam":
        return []
    return [
        Need("iam:PassRole", arn, {"iam:PassedToService": PASSED_TO[service]})
        for arn in sorted(set(_strings(params)))
        if ROLE_ARN.match(arn)
    ]


def _autoscaling(op: str, params: dict[str, Any], region: str, account: str) -> list[Need]:
    """Application Auto Scaling checks the caller's rights on the SageMaker variant and on
    CloudWatch, and creates its service-linked role on first use (its user guide's
    'Permissions required for actions on target services and CloudWatch')."""
    if params.get("ServiceNamespace") != "sagemaker" or op.startswith("describe_"):
        return []
    resource = params["ResourceId"]  # endpoint/<N>/variant/<variant>
    endpoint = resource.split("/")[1].lower()
    sagemaker = f"arn:aws:sagemaker:{region}:{account}"
    alarm = f"arn:aws:cloudwatch:{region}:{account}:alarm:TargetTracking-{resource}-{ALARM_SUFFIX}"
    found = [
        Need(f"sagemaker:{a}", f"{sagemaker}:endpoint/{endpoint}")
        for a in ("DescribeEndpoint", "UpdateEndpointWeightsAndCapacities")
    ]
    found.append(
        Need(
            "sagemaker:DescribeEndpointConfig",
            f"{sagemaker}:endpoint-config/{endpoint}-{CONFIG_DIGEST}",
        )
    )
    if op == "register_scalable_target":
        role = (
            f"arn:aws:iam::{account}:role/aws-service-role/{AUTOSCALING_SERVICE}/"
            "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
        )
        found.append(
            Need("iam:CreateServiceLinkedRole", role, {"iam:AWSServiceName": AUTOSCALING_SERVICE})
        )
    if op == "put_scaling_policy" and params.get("PolicyType") == "TargetTrackingScaling":
        found += [Need(f"cloudwatch:{a}", alarm) for a in ("PutMetricAlarm", "DescribeAlarms")]
    if op in ("delete_scaling_policy", "deregister_scalable_target"):
        found.append(Need("cloudwatch:DeleteAlarms", alarm))
    return found


# ---- the evaluator --------------------------------------------------------------------------


def _wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


CONDITIONS = {
    "StringEquals": lambda wanted, value: wanted == value,
    "StringLike": _wild,
    "ArnLike": _wild,
    "ArnEquals": lambda wanted, value: wanted == value,
}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """Every key of every operator present and matching one of its values."""
    for operator, keys in condition.items():
        test = CONDITIONS[operator]  # a KeyError here: teach the evaluator that operator
        for key, wanted in keys.items():
            if key not in context or not any(test(w, context[key]) for w in _listed(wanted)):
                return False
    return True


def statement_allows(statement: dict[str, Any], need: Need) -> bool:
    assert statement["Effect"] == "Allow", "the evaluator knows Allow statements only"
    return (
        any(_wild(a, need.action, ignore_case=True) for a in _listed(statement["Action"]))
        and (
            "Resource" not in statement  # a trust policy: the role itself
            or any(_wild(r, need.resource) for r in _listed(statement["Resource"]))
        )
        and _holds(statement.get("Condition", {}), need.context)
    )


def allows(policy: dict[str, Any], need: Need) -> bool:
    return any(statement_allows(s, need) for s in policy["Statement"])


def policy_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] for a in _listed(s["Action"])}


# ---- privilege escalation: the known paths, and whether a policy opens one ------------------

# Known IAM privilege-escalation paths (Rhino Security Labs' and Bishop Fox's lists, which
# parliament's community auditor encodes, plus the SageMaker and Lambda variants): the
# actions that together let a holder gain permissions beyond its policy. sts:AssumeRole is
# not required where a rewritten trust policy can name the holder itself.
ESCALATION_PATHS: dict[str, tuple[str, ...]] = {
    "CreatePolicyVersion": ("iam:CreatePolicyVersion",),
    "SetDefaultPolicyVersion": ("iam:SetDefaultPolicyVersion",),
    "CreateAccessKey": ("iam:CreateAccessKey",),
    "CreateLoginProfile": ("iam:CreateLoginProfile",),
    "UpdateLoginProfile": ("iam:UpdateLoginProfile",),
    "AttachUserPolicy": ("iam:AttachUserPolicy",),
    "AttachGroupPolicy": ("iam:AttachGroupPolicy",),
    "AttachRolePolicy": ("iam:AttachRolePolicy",),
    "PutUserPolicy": ("iam:PutUserPolicy",),
    "PutGroupPolicy": ("iam:PutGroupPolicy",),
    "PutRolePolicy": ("iam:PutRolePolicy",),
    "AddUserToGroup": ("iam:AddUserToGroup",),
    "UpdateAssumeRolePolicy": ("iam:UpdateAssumeRolePolicy",),
    "PutRolePermissionsBoundary": ("iam:PutRolePermissionsBoundary",),
    "DeleteRolePermissionsBoundary": ("iam:DeleteRolePermissionsBoundary",),
    "PutUserPermissionsBoundary": ("iam:PutUserPermissionsBoundary",),
    "DeleteUserPermissionsBoundary": ("iam:DeleteUserPermissionsBoundary",),
    "AssumeRole": ("sts:AssumeRole",),
    "PassRoleToEC2": ("iam:PassRole", "ec2:RunInstances"),
    "PassRoleToECSTask": ("iam:PassRole", "ecs:RunTask"),
    "PassRoleToNewLambdaThenInvoke": (
        "iam:PassRole",
        "lambda:CreateFunction",
        "lambda:InvokeFunction",
    ),
    "PassRoleToNewLambdaThenEventSource": (
        "iam:PassRole",
        "lambda:CreateFunction",
        "lambda:CreateEventSourceMapping",
    ),
    "PassRoleToNewLambdaThenUrl": (
        "iam:PassRole",
        "lambda:CreateFunction",
        "lambda:CreateFunctionUrlConfig",
    ),
    "EditLambdaCode": ("lambda:UpdateFunctionCode",),
    "SwitchLambdaRole": ("iam:PassRole", "lambda:UpdateFunctionConfiguration"),
    "PassRoleToGlueDevEndpoint": ("iam:PassRole", "glue:CreateDevEndpoint"),
    "UpdateGlueDevEndpoint": ("glue:UpdateDevEndpoint",),
    "PassRoleToCloudFormation": ("iam:PassRole", "cloudformation:CreateStack"),
    "PassRoleToDataPipeline": ("iam:PassRole", "datapipeline:CreatePipeline"),
    "PassRoleToCodeBuild": ("iam:PassRole", "codebuild:CreateProject"),
    "PassRoleToSageMakerNotebook": ("iam:PassRole", "sagemaker:CreateNotebookInstance"),
    "SageMakerNotebookUrl": ("sagemaker:CreatePresignedNotebookInstanceUrl",),
    "PassRoleToSageMakerTrainingJob": ("iam:PassRole", "sagemaker:CreateTrainingJob"),
    "PassRoleToSageMakerProcessingJob": ("iam:PassRole", "sagemaker:CreateProcessingJob"),
    "PassRoleToSageMakerModel": ("iam:PassRole", "sagemaker:CreateModel"),
}
# Paths that run the holder's code as a role it passes (or that a function already has):
# they reach that role's permissions, no more.
RUNS_AS_A_ROLE = {"iam:PassRole", "lambda:UpdateFunctionCode"}
# Writes that change what a role may do or who may assume it.
ROLE_WRITES = (
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
)


@dataclass(frozen=True)
class Escalation:
    path: str
    verdict: str  # "not granted", "bounded" or "OPEN"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path:<36} {self.verdict}{': ' + self.detail if self.detail else ''}"


def _granted(policy: dict[str, Any], action: str) -> list[str]:
    """The resources `policy` allows `action` on (wildcards as written)."""
    return [
        resource
        for s in policy["Statement"]
        if any(_wild(a, action, ignore_case=True) for a in _listed(s["Action"]))
        for resource in _listed(s.get("Resource", "*"))
    ]


def escalations(
    policy: dict[str, Any], roles: dict[str, dict[str, Any]], runs_as: tuple[str, ...] = ()
) -> list[Escalation]:
    """Each known path (ESCALATION_PATHS) against `policy`. `roles`: ARN -> the inline
    policy of each role the holder may pass; `runs_as`: ARNs of the roles the holder's
    functions already run as. A path whose every action is granted is OPEN, unless it only
    runs code as roles of `roles` that the policy cannot change and whose own documents
    open no path: then it is bounded (it reaches those fixed documents, no more)."""
    report = []
    for path, actions in ESCALATION_PATHS.items():
        if not all(_granted(policy, a) for a in actions):
            report.append(Escalation(path, "not granted"))
            continue
        if not RUNS_AS_A_ROLE & set(actions):
            report.append(Escalation(path, "OPEN", f"grants {', '.join(actions)}"))
            continue
        reached = set(_granted(policy, "iam:PassRole")) | set(runs_as)
        report.append(_bounded(path, policy, reached, roles))
    return report


def _bounded(
    path: str, policy: dict[str, Any], reached: set[str], roles: dict[str, dict[str, Any]]
) -> Escalation:
    unknown = sorted(r for r in reached if r not in roles)
    if unknown:
        return Escalation(path, "OPEN", f"runs code as roles not checked: {', '.join(unknown)}")
    writable = sorted(r for w in ROLE_WRITES for r in _granted(policy, w))
    if writable:
        return Escalation(path, "OPEN", f"and the policy rewrites roles: {', '.join(writable)}")
    for arn in sorted(reached):
        inner = [e for e in escalations(roles[arn], {}) if e.verdict != "not granted"]
        if inner:
            return Escalation(path, "OPEN", f"{arn} itself opens {inner[0].path}")
    names = ", ".join(arn.rsplit("/", 1)[1] for arn in sorted(reached))
    return Escalation(path, "bounded", f"reaches only {names}, which it cannot change")
