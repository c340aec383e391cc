"""Resource names, and the one layer every AWS call goes through.

Every resource name derives from the deployment name N. Calls are sent by
`Ctx`: reads (`read`, `find`), changes (`write`, `delete`; printed instead of
sent in a dry run) and plain calls (`call`). A failed call is an AwsError naming
the service, operation and error code; "the resource does not exist" is decided
by the error code alone, from the per-call table MISSING. `Ctx.requests` records
every request sent, or in a dry run every request a real run would send first
(reads included): the operator's policy is checked against it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.core.errors import AwsError, ConfigError

VARIANT = "AllTraffic"
TAG_KEY = "dogbreed:name"  # every resource a command creates for N carries TAG_KEY=N
DRY_RUN_ACCOUNT = "123456789012"
LIST_PAGE = 100  # the most SageMaker's list calls answer at once (NextToken for the rest)
# N: what every service takes in a name (SageMaker's pattern is the narrowest: letters,
# digits and hyphens, a letter or digit at each end). No `*`, `?` or `/`, which IAM
# policies and ARNs would read as wildcards or paths.
NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
DIGEST_CHARS = 8  # config.digest's default: models, endpoint configs, training jobs N-<digest>
# The longest name each service takes, by kind of resource (the services' API references).
MAX_CHARS = {
    "IAM role": 64,
    "Lambda function": 64,
    "SageMaker endpoint": 63,
    "SageMaker endpoint config": 63,
    "SageMaker model": 63,
    "SageMaker training job": 63,
    "SageMaker transform job": 63,
    "CloudWatch alarm": 255,
    "scaling policy": 256,
    "log group": 512,
    "model package group": 63,
    "SNS topic": 256,
}

# Error codes that mean "no such resource", per call. Checked against the operation's
# error shapes in botocore's service models (botocore/data/<service>/<version>/
# service-2.json) and against moto 5.2.1's answers; a call absent here is never "missing".
MISSING: dict[tuple[str, str], tuple[str, ...]] = {
    ("iam", "get_role"): ("NoSuchEntity",),
    ("iam", "get_role_policy"): ("NoSuchEntity",),
    ("iam", "delete_role_policy"): ("NoSuchEntity",),
    ("iam", "delete_role"): ("NoSuchEntity",),
    # The model lists ResourceNotFound; SageMaker (and moto) answer ValidationException.
    ("sagemaker", "describe_training_job"): ("ResourceNotFound", "ValidationException"),
    ("sagemaker", "describe_hyper_parameter_tuning_job"): ("ResourceNotFound",),
    # The same for transform jobs: moto 5.2.1 answers ValidationException "Could not find".
    ("sagemaker", "describe_transform_job"): ("ResourceNotFound", "ValidationException"),
    # No error shapes in the model: SageMaker answers ValidationException "Could not find
    # ...". A malformed name answers the same code, and then fails at the create call.
    ("sagemaker", "describe_model"): ("ValidationException",),
    ("sagemaker", "describe_endpoint_config"): ("ValidationException",),
    ("sagemaker", "describe_endpoint"): ("ValidationException",),
    # No error shapes either: SageMaker (and moto) answer ValidationException "... does not
    # exist."
    ("sagemaker", "describe_model_package_group"): ("ValidationException",),
    ("sagemaker", "delete_model"): ("ValidationException",),
    ("sagemaker", "delete_endpoint_config"): ("ValidationException",),
    ("sagemaker", "delete_endpoint"): ("ValidationException",),
    # moto answers ValidationException here: teardown deletes only what a describe listed.
    ("application-autoscaling", "delete_scaling_policy"): ("ObjectNotFoundException",),
    ("application-autoscaling", "deregister_scalable_target"): ("ObjectNotFoundException",),
    ("lambda", "get_function"): ("ResourceNotFoundException",),
    ("lambda", "get_alias"): ("ResourceNotFoundException",),
    ("lambda", "delete_function"): ("ResourceNotFoundException",),
    ("lambda", "get_function_url_config"): ("ResourceNotFoundException",),
    ("lambda", "get_policy"): ("ResourceNotFoundException",),  # no resource policy yet
    ("lambda", "get_provisioned_concurrency_config"): (
        "ProvisionedConcurrencyConfigNotFoundException",
    ),
    ("logs", "delete_log_group"): ("ResourceNotFoundException",),
    # Teardown deletes only the alarms DescribeAlarms listed: this covers one gone meanwhile.
    ("cloudwatch", "delete_alarms"): ("ResourceNotFound",),
    # A HEAD answer has no body: botocore reports its HTTP status as the code.
    ("s3", "head_object"): ("404", "NoSuchKey"),
    ("sns", "get_topic_attributes"): ("NotFound",),
}


# The codes of "your identity may not do this" (IAM and STS answer AccessDenied, most
# other services AccessDeniedException).
DENIED_CODES = ("AccessDenied", "AccessDeniedException")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(service: str, op: str, exc: ClientError) -> bool:
    """True when the error code says the resource does not exist (message text is not read)."""
    return error_code(exc) in MISSING.get((service, op), ())


def aws_error(service: str, op: str, exc: Exception) -> AwsError:
    """One line: service, operation, error code and AWS's message. The error code is kept
    as the AwsError's `code` attribute ("" when the call got no AWS answer)."""
    code = error_code(exc) if isinstance(exc, ClientError) else ""
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        if lacks_call(exc):
            error = AwsError(
                f"{service} {op}: HTTP {code}: the endpoint does not offer "
                "this call (an emulator may lack it)"
            )
        else:
            error = AwsError(f"{service} {op}: {code}: {message}")
    else:
        error = AwsError(f"{service} {op}: {exc}")
    error.code = code  # type: ignore[attr-defined]
    error.lacks_call = isinstance(exc, ClientError) and lacks_call(exc)  # type: ignore[attr-defined]
    return error


def lacks_call(exc: ClientError) -> bool:
    """A web page instead of an AWS error: the endpoint (an emulator) lacks the API. AWS
    itself always answers an error document."""
    message = exc.response.get("Error", {}).get("Message", "")
    return error_code(exc).isdigit() and message.lstrip().startswith("<")


def denied(exc: AwsError) -> bool:
    """Whether AWS refused the call for want of a permission."""
    return getattr(exc, "code", "") in DENIED_CODES


@dataclass
class Names:
    """Every resource name of deployment N."""

    name: str

    def derived(self) -> list[tuple[str, str]]:
        """(kind, name) of every resource named after N, at its longest (MAX_CHARS's kinds)."""
        digested = f"{self.name}-{'0' * DIGEST_CHARS}"
        return [
            ("IAM role", self.sagemaker_role),
            ("IAM role", self.lambda_role),
            ("Lambda function", self.function),
            ("SageMaker endpoint", self.endpoint),
            ("SageMaker endpoint config", digested),
            ("SageMaker model", digested),
            ("SageMaker training job", digested),
            ("SageMaker transform job", digested),
            *[("CloudWatch alarm", alarm) for alarm in self.alarms],
            ("scaling policy", self.scaling_policy),
            ("log group", self.log_group),
            ("model package group", self.name),
            *[("SNS topic", topic) for topic in self.async_topics],
            ("CloudWatch alarm", self.backlog_alarm),
            ("scaling policy", self.backlog_policy),
            ("scaling policy", self.backlog_tracking_policy),
        ]

    def check(self) -> Names:
        """N itself, or a ConfigError (one line) before any request: characters every
        service takes, and every derived name within its service's length limit."""
        if not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError(
                f"--name {self.name!r}: use letters, digits and hyphens only, starting and "
                "ending with a letter or digit (SageMaker's rule; `*`, `?`, `/`, `_` and `.` "
                "would break names or policies)"
            )
        for kind, derived in self.derived():
            if len(derived) > MAX_CHARS[kind]:
                room = MAX_CHARS[kind] - (len(derived) - len(self.name))
                raise ConfigError(
                    f"--name {self.name!r} is {len(self.name)} characters: the {kind} "
                    f"{derived} would be {len(derived)}, over its {MAX_CHARS[kind]}; "
                    f"use {room} characters or fewer"
                )
        return self

    @property
    def sagemaker_role(self) -> str:
        return f"{self.name}-sagemaker-execution"

    @property
    def lambda_role(self) -> str:
        return f"{self.name}-lambda"

    @property
    def endpoint(self) -> str:
        return self.name

    @property
    def function(self) -> str:
        return self.name

    @property
    def scaling_resource(self) -> str:
        return f"endpoint/{self.endpoint}/variant/{VARIANT}"

    @property
    def scaling_policy(self) -> str:
        return f"{self.name}-invocations-per-instance"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function}"

    @property
    def alarms(self) -> tuple[str, str]:
        """The endpoint's CloudWatch alarms: 5XX error rate, then model latency."""
        return (f"{self.name}-5xx-errors", f"{self.name}-model-latency")

    @property
    def async_topics(self) -> tuple[str, str]:
        """An asynchronous endpoint's SNS topics (--notify): success, then error."""
        return (f"{self.name}-async-success", f"{self.name}-async-error")

    @property
    def backlog_alarm(self) -> str:
        """The alarm that wakes an asynchronous endpoint scaled to zero."""
        return f"{self.name}-backlog-without-capacity"

    @property
    def backlog_policy(self) -> str:
        """The step scaling policy that alarm runs: one instance when requests wait."""
        return f"{self.name}-backlog-without-capacity"

    @property
    def backlog_tracking_policy(self) -> str:
        """Target tracking of an asynchronous endpoint's backlog per instance."""
        return f"{self.name}-backlog-per-instance"

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": TAG_KEY, "Value": self.name}]

    @property
    def stand_in(self) -> str:
        """A name of N's form (N-<digest>) that a dry run's reads use where a real run reads a
        name from an earlier answer (the endpoint's config, a listed model)."""
        return f"{self.name}-{'0' * 8}"

    @property
    def tag_dict(self) -> dict[str, str]:
        """N's tag as Lambda takes it."""
        return {TAG_KEY: self.name}

    def tagged(self, tags: Any) -> bool:
        """Whether a resource's tags (a list of {"Key", "Value"}, or Lambda's dict) say N's."""
        key, value = TAG_KEY, self.name
        if isinstance(tags, dict):
            return tags.get(key) == value
        return {"Key": key, "Value": value} in (tags or [])

    def owns(self, resource: str) -> bool:
        """Models and endpoint configs this deployment made: N-<8 hex digits>."""
        prefix, _, tail = resource.rpartition("-")
        return prefix == self.name and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail)


class Request(NamedTuple):
    """One API request, as boto3 takes it: ("sagemaker", "create_model", {...})."""

    service: str
    operation: str
    params: dict[str, Any]


@dataclass
class Ctx:
    names: Names
    config: dict[str, Any]
    dry_run: bool = False
    out: Any = field(default_factory=lambda: sys.stdout)  # stdout when the command runs
    adopt: bool = False  # take over same-named resources without N's tag (--adopt)
    verbose: bool = False  # a dry run prints every request, not a summary of repeated ones
    deleted: int = 0  # resources `delete` removed (teardown tells "nothing left" from it)
    requests: list[Request] = field(default_factory=list)  # sent, or a dry run's
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _identity: tuple[str, str] | None = None

    @property
    def session(self):
        if self._session is None:
            import boto3

            self._session = boto3.Session(region_name=self.config.get("region") or None)
        return self._session

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise ConfigError(
                "no AWS region: set it in dogbreed-aws.json, AWS_REGION or `aws configure`"
            )
        return region

    @property
    def account(self) -> str:
        if self._identity is None:
            try:
                account = self.call("sts", "get_caller_identity")["Account"]
            except AwsError:
                if not self.dry_run:
                    raise
                account = DRY_RUN_ACCOUNT  # a dry run works without credentials
            self._identity = (account, self.region)
        return self._identity[0]

    def role_arn(self, role: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{role}"

    def sagemaker_arn(self, kind: str, name: str) -> str:
        """A SageMaker resource's ARN (SageMaker writes names in lower case there)."""
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def say(self, message: str) -> None:
        # A dry run changes nothing: its messages tell what a real run would do.
        print(f"(dry run) {message}" if self.dry_run else message, file=self.out, flush=True)

    # ---- the calls ---------------------------------------------------------------------------

    def call(self, service: str, op: str, **params) -> Any:
        """Send the call, dry run or not; any failure is an AwsError."""
        return self._send(service, op, params, missing_ok=False)

    def read(self, service: str, op: str, **params) -> Any:
        """A describe/get/list call (None in a dry run); any failure is an AwsError."""
        if self.dry_run:
            self.requests.append(Request(service, op, params))
            return None
        return self.call(service, op, **params)

    def find(self, service: str, op: str, **params) -> Any:
        """A describe/get call of one resource: None when it does not exist (or in a dry run)."""
        if self.dry_run:
            self.requests.append(Request(service, op, params))
            return None
        return self._send(service, op, params, missing_ok=True)

    def would_read(self, service: str, op: str, **params) -> None:
        """Record, in a dry run, a read that a real run makes only once it has found something
        (a rerun's comparison, a tag check before a delete): the dry run's requests then hold
        every read a real run can send. A real run sends nothing here."""
        if self.dry_run:
            self.requests.append(Request(service, op, params))

    def write(self, service: str, op: str, **params) -> Any:
        """A call that changes something; printed instead of sent in a dry run."""
        if self.dry_run:
            self.requests.append(Request(service, op, params))
            self.say(f"{service}.{op} {_shown(params)}")
            return {}
        return self.call(service, op, **params)

    def would_write(self, service: str, op: str, **params) -> None:
        """Record, in a dry run, one of many like writes (a file of an upload) that the caller
        sums up in a line of its own: printed only when verbose. A real run sends nothing."""
        if not self.dry_run:
            return
        if self.verbose:
            self.write(service, op, **params)
        else:
            self.requests.append(Request(service, op, params))

    def delete(self, service: str, op: str, **params) -> bool:
        """Delete one resource; False when it was already gone."""
        if self.dry_run:
            self.write(service, op, **params)
            return False
        if self._send(service, op, params, missing_ok=True) is None:
            return False
        self.deleted += 1
        kind = op.removeprefix("delete_").removeprefix("deregister_")
        named = next(iter(params.values()))  # a name, or a list of names (cloudwatch alarms)
        shown = ", ".join(named) if isinstance(named, list) else named
        self.say(f"deleted: {service} {kind} {shown}")
        return True

    def pages(self, service: str, op: str, key: str, **params) -> list[dict[str, Any]]:
        """Every item of a listing (`key` of each answer), following NextToken to the end;
        [] in a dry run."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self.read(service, op, **params, **({"NextToken": token} if token else {}))
            if page is None:
                return items
            items += page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return items

    def claim(self, kind: str, name: str, tags: Any, tag_it: Callable[[], Any]) -> None:
        """Go on with a found resource only when it carries N's tag, or --adopt takes it
        over (`tag_it` sends the tagging request); otherwise a ConfigError, sent before
        this command changes anything of it."""
        if self.names.tagged(tags):
            return
        shown = f"{TAG_KEY}={self.names.name}"
        if not self.adopt:
            raise ConfigError(
                f"{kind} {name} exists without the tag {shown}: dogbreed did not create it "
                f"for {self.names.name}; choose another --name, or pass --adopt to take it over"
            )
        tag_it()
        self.say(f"adopted {kind} {name} (tagged {shown})")

    def _send(self, service: str, op: str, params: dict[str, Any], missing_ok: bool) -> Any:
        self.requests.append(Request(service, op, params))
        try:
            return getattr(self.client(service), op)(**params)
        except ClientError as exc:
            if missing_ok and is_missing(service, op, exc):
                return None
            raise aws_error(service, op, exc) from None
        except BotoCoreError as exc:  # no credentials, no connection, a parameter botocore refuses
            raise aws_error(service, op, exc) from None


def _shown(params: dict[str, Any]) -> str:
    """A request as a dry run prints it: zip bytes elided."""
    shown = {
        k: ("<zip bytes>" if isinstance(v, bytes | bytearray) else v) for k, v in params.items()
    }
    if "ZipFile" in shown.get("Code", {}):
        shown["Code"] = {"ZipFile": "<zip bytes>"}
    return json.dumps(shown, sort_keys=True, default=str)
