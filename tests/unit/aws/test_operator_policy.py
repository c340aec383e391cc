"""`dogbreed aws iam --operator-policy`: every request each `dogbreed aws` verb records in
its dry run (reads included) is allowed by the printed day-to-day policy, which parliament
passes, but the role writes: those only the administrator's (`--admin-policy`) allows. The
day-to-day policy opens no known privilege-escalation path.

The verbs come from the CLI's own parser: a new verb is covered without a change here,
once its required arguments have sample values (SAMPLES says which one is missing).
"""

from __future__ import annotations

import json
import warnings

import pytest

from dogbreed.aws import policies
from dogbreed.aws.context import Names
from dogbreed.aws.operator_policy import admin_policy, operator_policy
from dogbreed.cli.main import main
from support.aws import ACCOUNT, CONFIG, DATA, REGION
from support.iam_check import (
    ESCALATION_PATHS,
    ROLE_WRITES,
    allows,
    aws_verbs,
    escalations,
    needs,
    policy_actions,
    run_verb,
    without_credentials,
)

NAME = "Dogs"  # upper case on purpose: IAM matches SageMaker ARNs in lower case
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed:abc1234"
TRANSFORM_INPUT = "s3://dogs-bucket/transform-in"  # the setting transform.input
MODEL_DATA = f"{CONFIG['output']}/{NAME}/{NAME}-0123abcd/output/model.tar.gz"
# Runs beyond each verb with its required arguments: flags that take another path.
VARIANTS = {
    "invoke": [["--endpoint"], ["--async"]],
    "deploy": [["--async", "--notify", "--capture-percent", "10", "--adopt"], ["--adopt"]],
    "autoscale": [["--async", "--adopt"]],
    "iam": [["--operator-policy"], ["--admin-policy"], ["--adopt"]],
    "up": [
        ["--data", DATA, "--serverless", "--retrain", "--public-url", "--adopt"],
        ["--approve", "--deploy-approved"],
        ["--deploy-approved"],
    ],
    "status": [["--json"]],
    "down": [["--keep-roles"]],
    "lambda": [["--provisioned", "0", "--adopt"]],
    "transform": [
        ["--jsonlines", "--wait", "--instance-count", "2"],
        ["--model-data", MODEL_DATA, "--image", IMAGE, "--adopt"],
        ["--output", f"{CONFIG['output']}/{NAME}/scores"],
        ["--again"],
    ],
    "register": [["--training-job", f"{NAME}-0123abcd", "--approve", "--adopt"]],
    "approve": [["--version", "2"], ["--reject", "--reason", "x", "--adopt"]],
}
# Required choices (an argparse group that takes exactly one): each run of the verb takes
# one of these in turn.
ONE_OF = {
    "deploy": [
        ["--image", "IMAGE", "--model-data", "MODEL_DATA"],
        ["--model-package", "approved"],
        ["--model-package", "3", "--image", "IMAGE"],
    ],
}
# What the administrator's policy alone allows: creating, changing, adopting and deleting
# N's two roles.
ADMIN_ONLY = {*ROLE_WRITES, "iam:TagRole", "iam:DeleteRole"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    settings = {**CONFIG, "transform": {"input": TRANSFORM_INPUT}}
    (tmp_path / "aws.json").write_text(json.dumps(settings))
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (tmp_path / "dogImages" / "train" / "akita").mkdir(parents=True)
    (tmp_path / "dogImages" / "train" / "akita" / "1.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    return tmp_path


def samples(tmp_path) -> dict[str, str]:
    """A value for each required argument any verb has, by its dest."""
    return {
        "name": NAME,
        "image": IMAGE,  # --image of train, tune, deploy
        "image_train": IMAGE,
        "image_serve": IMAGE,
        "model_data": MODEL_DATA,
        "input": f"{TRANSFORM_INPUT}/batch-1",  # transform --input
        "data": DATA,
        "photo": str(tmp_path / "photo.jpg"),  # the positional image of invoke
        "local": str(tmp_path / "dogImages"),
        "source": str(tmp_path / "dogImages"),  # up --data: a local directory, uploaded
        "uri": DATA,
    }


def required_args(verb: str, tmp_path) -> list[str]:
    values, argv = samples(tmp_path), []
    for action in aws_verbs()[verb]._actions:
        if not action.option_strings:  # a positional
            dest = "photo" if (verb, action.dest) == ("invoke", "image") else action.dest
            argv.append(values.get(dest) or pytest.fail(f"no sample for {verb} {dest}"))
        elif action.required:
            value = values.get(action.dest) or pytest.fail(f"no sample for {verb} {action.dest}")
            argv += [action.option_strings[0], value]
    return argv


def dry_runs(verb: str, tmp_path) -> list:
    """The contexts of the verb's dry runs (its VARIANTS too), requests recorded."""
    base = [verb, *required_args(verb, tmp_path), "--config", str(tmp_path / "aws.json")]
    values = {"IMAGE": IMAGE, "MODEL_DATA": samples(tmp_path)["model_data"]}
    contexts = []
    for choice in ONE_OF.get(verb, [[]]):
        chosen = [values.get(word, word) for word in choice]
        for extra in [[], *VARIANTS.get(verb, [])]:
            ctx, error = run_verb(*base, *chosen, "--dry-run", *extra)
            # Only a call that must be sent even in a dry run (invoke) can fail here, and it
            # is the last request: nothing after it is missed.
            assert error is None or "Unable to locate credentials" in str(error), error
            contexts.append(ctx)
    return contexts


def operator() -> dict:
    return operator_policy(Names(NAME), REGION, ACCOUNT, DATA, CONFIG["output"])


def admin() -> dict:
    return admin_policy(Names(NAME), ACCOUNT)


def known_actions() -> set[str]:
    """Every IAM action AWS defines (parliament's copy of the service authorization data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports pkg_resources
        from parliament import iam_definition
    return {
        f"{s['prefix']}:{p['privilege']}".lower() for s in iam_definition for p in s["privileges"]
    }


@pytest.mark.parametrize("verb", sorted(aws_verbs()))
def test_the_operator_policy_allows_every_request_of_the_verb(offline, verb):
    policy, known = operator(), known_actions()
    contexts = dry_runs(verb, offline)
    requests = [r for ctx in contexts for r in ctx.requests]
    assert requests, f"{verb} recorded no request"
    denied = []
    for request in requests:
        for need in needs(request, REGION, ACCOUNT):
            assert need.action.lower() in known, f"{need.action} is no IAM action ({request[:2]})"
            if need.action in ADMIN_ONLY:
                assert allows(admin(), need) and not allows(policy, need), need
            elif not allows(policy, need):
                denied.append(f"{request.service}.{request.operation}: {need}")
    assert not denied, "add to operator_policy.OPERATOR:\n" + "\n".join(denied)


def test_the_operator_policy_denies_other_deployments(offline):
    """The same requests for another deployment, and for one whose name extends N, fall
    outside N's policy (roles, jobs, models, endpoint, function)."""
    policy = operator()
    for other in ("Cats", f"{NAME}-v2"):
        argv = ["--name", other, "--config", str(offline / "aws.json"), "--dry-run"]
        runs = [
            run_verb("iam", *argv),
            run_verb("train", "--image", IMAGE, *argv),
            run_verb("deploy", "--image", IMAGE, "--model-data", "s3://b/m.tar.gz", *argv),
            run_verb("lambda", *argv),
            run_verb("transform", "--input", f"{TRANSFORM_INPUT}/b", *argv),
            run_verb(
                "transform",
                "--input",
                f"{TRANSFORM_INPUT}/b",
                "--image",
                IMAGE,
                *argv,
                "--model-data",
                "s3://b/m.tar.gz",
            ),
        ]
        for ctx, _ in runs:
            for request in ctx.requests:
                if request.service == "sts":
                    continue
                allowed = [n for n in needs(request, REGION, ACCOUNT) if allows(policy, n)]
                assert not allowed, (other, request.operation, [str(n) for n in allowed])


def test_the_operator_policy_passes_parliament_and_passes_roles_only_to_their_service():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import parliament  # a real IAM policy linter

    policy = operator()
    findings = parliament.analyze_policy_string(json.dumps(policy)).findings
    assert findings == [], [(f.issue, f.detail) for f in findings]
    passing = [s for s in policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert {tuple(s["Resource"]) for s in passing} == {
        (f"arn:aws:iam::{ACCOUNT}:role/{NAME}-sagemaker-execution",),
        (f"arn:aws:iam::{ACCOUNT}:role/{NAME}-lambda",),
    }
    assert all(s["Action"] == ["iam:PassRole"] for s in passing)
    assert {s["Condition"]["StringEquals"]["iam:PassedToService"] for s in passing} == {
        "sagemaker.amazonaws.com",
        "lambda.amazonaws.com",
    }
    assert not any("*" in a for a in policy_actions(policy))
    assert not any(a.startswith("s3:Delete") for a in policy_actions(policy))


def test_iam_operator_policy_prints_the_policy_as_json(offline, capsys):
    argv = ["aws", "iam", "--name", NAME, "--operator-policy", "--dry-run"]
    assert main([*argv, "--config", str(offline / "aws.json")]) == 0
    assert json.loads(capsys.readouterr().out) == operator()


# ---- no escalation: the day-to-day policy writes no IAM -------------------------------------


def role_documents() -> dict[str, dict]:
    """ARN -> the inline policy of each of N's two roles (what passing one reaches)."""
    n, output, checkpoints = Names(NAME), CONFIG["output"], CONFIG["checkpoints"]
    repos = ["dogbreed-train", "dogbreed-serve"]
    return {
        f"arn:aws:iam::{ACCOUNT}:role/{n.sagemaker_role}": policies.sagemaker_policy(
            REGION, ACCOUNT, NAME, DATA, output, checkpoints, repos
        ),
        f"arn:aws:iam::{ACCOUNT}:role/{n.lambda_role}": policies.lambda_policy(
            REGION, ACCOUNT, n.function, n.endpoint, "s3://in-bucket/uploads"
        ),
    }


def lambda_role() -> tuple[str]:
    return (f"arn:aws:iam::{ACCOUNT}:role/{Names(NAME).lambda_role}",)


def test_the_day_to_day_policy_opens_no_known_escalation_path():
    report = escalations(operator(), role_documents(), runs_as=lambda_role())
    assert [e.path for e in report] == list(ESCALATION_PATHS)
    assert not [str(e) for e in report if e.verdict == "OPEN"], "\n".join(map(str, report))
    bounded = {e.path for e in report if e.verdict == "bounded"}
    # Running code as N's roles is the job (a function, training jobs, models): bounded.
    assert "EditLambdaCode" in bounded and "PassRoleToSageMakerTrainingJob" in bounded
    iam = {a for a in policy_actions(operator()) if a.startswith("iam:")}
    assert iam == {
        "iam:GetRole",
        "iam:GetRolePolicy",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
    }


def test_the_role_writes_are_the_administrators_and_the_check_sees_them_escalate():
    """The former single policy (operator + role writes) escalated: rewrite N-lambda's trust
    and policy, then assume it. The check finds that, and it is the admin's policy only."""
    report = escalations(admin(), role_documents())
    opened = {e.path for e in report if e.verdict == "OPEN"}
    assert {"PutRolePolicy", "UpdateAssumeRolePolicy"} <= opened
    merged = {"Statement": [*operator()["Statement"], *admin()["Statement"]]}
    report = escalations(merged, role_documents(), runs_as=lambda_role())
    assert next(e for e in report if e.path == "EditLambdaCode").verdict == "OPEN"
    assert policy_actions(admin()) == {"iam:GetRole", "iam:GetRolePolicy", *ADMIN_ONLY} - {
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:PutRolePermissionsBoundary",
        "iam:DeleteRolePermissionsBoundary",
    }


def test_parliaments_escalation_auditor_finds_only_the_bounded_paths():
    """parliament's community auditor (Bishop Fox's paths, by actions alone): its findings
    on the day-to-day policy are paths the check above shows bounded to N's roles."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import parliament

    findings = parliament.analyze_policy_string(
        json.dumps(operator()), include_community_auditors=True
    ).findings
    found = {f.location["type"] for f in findings if f.issue == "PRIVILEGE_ESCALATION"}
    assert found == {"PassExistingRoleToNewLambdaThenInvoke", "EditExistingLambdaFunctionWithRole"}
    report = {e.path: e.verdict for e in escalations(operator(), role_documents(), lambda_role())}
    assert report["PassRoleToNewLambdaThenInvoke"] == report["EditLambdaCode"] == "bounded"


def test_iam_admin_policy_prints_the_administrators_policy(offline, capsys):
    argv = ["aws", "iam", "--name", NAME, "--admin-policy", "--dry-run"]
    assert main([*argv, "--config", str(offline / "aws.json")]) == 0
    assert json.loads(capsys.readouterr().out) == admin()
