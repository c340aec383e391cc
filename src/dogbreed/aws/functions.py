"""`dogbreed aws lambda` and `dogbreed aws invoke`: the Lambda function in front of
the endpoint, its published version behind alias 'live', its concurrency and its
function URL (the front door a browser or HTTP client calls).

A new version is published only when the code or configuration differs from what
'live' runs, so a rerun changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogbreed.aws.async_checks import refuse_front_door
from dogbreed.aws.context import Ctx
from dogbreed.aws.endpoint import is_serverless
from dogbreed.aws.policies import input_prefix
from dogbreed.core.errors import AwsError, ConfigError

ALIAS = "live"
SOURCE = Path(__file__).parent / "lambda_function.py"
HANDLER = "lambda_function.lambda_handler"
SERVERLESS_MAX_BYTES = 4 * 1024 * 1024  # a serverless endpoint's payload limit
ENDPOINT_MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit (instance endpoints)
INVOKE_MAX_BYTES = 6 * 1024 * 1024  # a synchronous Lambda Invoke's request payload limit
# Lambda's price of provisioned concurrency while it is configured (x86, us-east-1, as of
# 2026-09-27; AWS's Lambda pricing page has the current one), and a month as up.py counts it.
PROVISIONED_PER_GB_SECOND = 0.0000041667
PROVISIONED_PRICE = "$0.0000041667 a GB-second, us-east-1, x86"
HOURS_A_MONTH = 730
# Keys of GetFunctionConfiguration that differ between versions of equal functions.
PER_VERSION = (
    "Version",
    "FunctionArn",
    "LastModified",
    "RevisionId",
    "ResponseMetadata",
    "LastUpdateStatus",
    "State",
)
# The two statements a public function URL needs (since October 2025 Lambda checks
# both lambda:InvokeFunctionUrl and lambda:InvokeFunction for a URL call).
PUBLIC_URL_PERMISSIONS = {
    "FunctionURLAllowPublicAccess": {
        "Action": "lambda:InvokeFunctionUrl",
        "FunctionUrlAuthType": "NONE",
    },
    "FunctionURLInvokeAllowPublicAccess": {
        "Action": "lambda:InvokeFunction",
        "InvokedViaFunctionUrl": True,
    },
}


@dataclass(frozen=True)
class LambdaOptions:
    """None falls back to a zip built from lambda_function.py / the config's `lambda` section."""

    zip_path: Path | None = None
    reserved: int | None = None
    provisioned: int | None = None
    allow_url_fetch: bool | None = None  # None: the config's lambda.allow_url_fetch (false)
    public_url: bool = False  # True: a function URL anyone may call (AuthType NONE)
    serverless: bool | None = None  # the endpoint's kind; None: DescribeEndpoint tells


@dataclass(frozen=True)
class InvokeOptions:
    image: Path
    endpoint: bool = False  # call the endpoint directly instead of the function


def lambda_zip() -> bytes:
    """The function's zip: one file, fixed timestamps, so equal code gives equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(SOURCE.name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED  # a ZipInfo's own default is stored
        zf.writestr(info, SOURCE.read_bytes())
    return buf.getvalue()


def cmd_lambda(ctx: Ctx, opts: LambdaOptions) -> str | None:
    """Function, version, alias, concurrency and function URL; the URL (None in a dry run)."""
    zip_bytes = _read_file(opts.zip_path, "--zip") if opts.zip_path else lambda_zip()
    sha = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    endpoint = ctx.find("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)
    refuse_front_door(ctx, endpoint)  # before any write
    serverless = opts.serverless
    if serverless is None:
        serverless = endpoint is not None and is_serverless(endpoint)
    settings = function_settings(ctx, opts.allow_url_fetch, serverless)
    _ensure_function(ctx, zip_bytes, sha, settings)
    _wait_function(ctx)
    _publish_and_alias(ctx, sha)
    _concurrency(ctx, *concurrency_settings(ctx, opts))
    return ensure_function_url(ctx, opts.public_url)


def concurrency_settings(ctx: Ctx, opts: LambdaOptions) -> tuple[int, int]:
    """(reserved, provisioned): the flags given, else the config's `lambda` section."""
    cfg = ctx.config["lambda"]
    reserved = cfg["reserved"] if opts.reserved is None else opts.reserved
    return reserved, cfg["provisioned"] if opts.provisioned is None else opts.provisioned


def function_settings(
    ctx: Ctx, allow_url_fetch: bool | None = None, serverless: bool = False
) -> dict[str, Any]:
    """The function's configuration (what CreateFunction and UpdateFunctionConfiguration take);
    `serverless`: the endpoint is, and takes payloads up to 4 MB only."""
    n, cfg = ctx.names, ctx.config["lambda"]
    fetch = cfg["allow_url_fetch"] if allow_url_fetch is None else allow_url_fetch
    variables = {"ENDPOINT_NAME": n.endpoint, "ALLOW_URL_FETCH": "true" if fetch else "false"}
    if cfg["s3_input"]:
        variables["S3_PREFIX"] = s3_input_prefix(cfg["s3_input"])
    if serverless:  # larger images would reach the endpoint only to be refused there
        variables["MAX_IMAGE_BYTES"] = str(SERVERLESS_MAX_BYTES)
    return {
        "Runtime": cfg["runtime"],
        "Role": ctx.role_arn(n.lambda_role),
        "Handler": HANDLER,
        "Timeout": cfg["timeout_s"],
        "MemorySize": cfg["memory_mb"],
        # Read by lambda_function.py (standalone: it does not import this package).
        "Environment": {"Variables": variables},
    }


def s3_input_prefix(uri: str) -> str:
    """lambda.s3_input as the function's S3_PREFIX, s3://bucket/prefix/ (a whole bucket is
    refused: policies.input_prefix)."""
    return input_prefix(uri, "lambda.s3_input")


def _ensure_function(ctx: Ctx, zip_bytes: bytes, sha: str, settings: dict[str, Any]) -> None:
    n = ctx.names
    current = ctx.find("lambda", "get_function", FunctionName=n.function)
    if current is None:
        ctx.write(
            "lambda",
            "create_function",
            FunctionName=n.function,
            Code={"ZipFile": zip_bytes},
            Tags=n.tag_dict,
            **settings,
        )
        ctx.say(f"created function {n.function}")
        return
    conf = current["Configuration"]
    # Its code, configuration, role, alias, concurrency and URL are N's only when it is.
    arn = conf["FunctionArn"]
    ctx.claim("function", n.function, current.get("Tags") or {}, lambda: _tag(ctx, arn))
    if conf["CodeSha256"] != sha:
        ctx.write("lambda", "update_function_code", FunctionName=n.function, ZipFile=zip_bytes)
        ctx.say(f"updated code of {n.function}")
        _wait_function(ctx)  # Lambda refuses a configuration update while code updates
    if any(conf.get(k) != v for k, v in settings.items()):
        ctx.write("lambda", "update_function_configuration", FunctionName=n.function, **settings)
        ctx.say(f"updated configuration of {n.function}")


def _tag(ctx: Ctx, arn: str) -> None:
    ctx.write("lambda", "tag_resource", Resource=arn, Tags=ctx.names.tag_dict)


def _wait_function(ctx: Ctx, timeout_s: float = 120) -> None:
    """Until the function is neither Pending nor updating."""
    deadline = time.monotonic() + timeout_s
    while True:
        conf = ctx.read("lambda", "get_function_configuration", FunctionName=ctx.names.function)
        if conf is None:  # a dry run: the read recorded, nothing to wait for
            return
        if (
            conf.get("State", "Active") != "Pending"
            and conf.get("LastUpdateStatus", "Successful") != "InProgress"
        ):
            return
        if time.monotonic() > deadline:
            raise AwsError(f"function {ctx.names.function} still updating")
        time.sleep(1)


def _publish_and_alias(ctx: Ctx, sha: str) -> None:
    n = ctx.names
    alias = ctx.find("lambda", "get_alias", FunctionName=n.function, Name=ALIAS)
    # A rerun compares what 'live' runs with $LATEST: a dry run records those reads too.
    ctx.would_read("lambda", "get_function_configuration", FunctionName=n.function, Qualifier="1")
    ctx.would_read("lambda", "get_function_configuration", FunctionName=n.function)
    if alias is not None and _live_is_current(ctx, alias["FunctionVersion"], sha):
        ctx.say(f"alias {ALIAS} -> version {alias['FunctionVersion']} unchanged")
        return
    published = ctx.write("lambda", "publish_version", FunctionName=n.function, CodeSha256=sha)
    version = published.get("Version", "1")  # a dry run publishes nothing
    op = "create_alias" if alias is None else "update_alias"
    ctx.write("lambda", op, FunctionName=n.function, Name=ALIAS, FunctionVersion=version)
    ctx.say(f"published version {version}; alias {ALIAS} -> {version}")


def _live_is_current(ctx: Ctx, version: str, sha: str) -> bool:
    """Whether the aliased version has this code and $LATEST's configuration."""
    function = ctx.names.function
    live = ctx.read(
        "lambda", "get_function_configuration", FunctionName=function, Qualifier=version
    )
    latest = ctx.read("lambda", "get_function_configuration", FunctionName=function)
    same = {k: v for k, v in live.items() if k not in PER_VERSION}
    return live["CodeSha256"] == sha and same == {k: v for k, v in latest.items() if k in same}


def provisioned_request(ctx: Ctx, provisioned: int) -> dict[str, Any]:
    return {
        "FunctionName": ctx.names.function,
        "Qualifier": ALIAS,
        "ProvisionedConcurrentExecutions": provisioned,
    }


def _concurrency(ctx: Ctx, reserved: int, provisioned: int) -> None:
    n = ctx.names
    found = ctx.read("lambda", "get_function_concurrency", FunctionName=n.function) or {}
    if found.get("ReservedConcurrentExecutions") == reserved:
        ctx.say(f"reserved concurrency {reserved} unchanged")
    else:
        ctx.write(
            "lambda",
            "put_function_concurrency",
            FunctionName=n.function,
            ReservedConcurrentExecutions=reserved,
        )
        ctx.say(f"reserved concurrency of {n.function}: {reserved}")
    if provisioned:
        try:
            ctx.write(
                "lambda",
                "put_provisioned_concurrency_config",
                **provisioned_request(ctx, provisioned),
            )
        except AwsError as exc:
            raise AwsError(f"{exc}; {without_provisioned(ctx, provisioned)}") from None
        ctx.say(f"provisioned concurrency of {n.function}:{ALIAS}: {provisioned}")
    else:
        _remove_provisioned(ctx)


def provisioned_cost(ctx: Ctx, provisioned: int) -> float:
    """What `provisioned` pre-warmed environments cost a month, idle or not (dollars)."""
    gb = ctx.config["lambda"]["memory_mb"] / 1024
    return provisioned * gb * PROVISIONED_PER_GB_SECOND * 3600 * HOURS_A_MONTH


def without_provisioned(ctx: Ctx, provisioned: int) -> str:
    """The fix when provisioned concurrency is refused (an emulator lacks the call, or the
    account's unreserved concurrency is too low), and what it costs."""
    return (
        "to go on without provisioned concurrency, rerun with --provisioned 0 (or set "
        "lambda.provisioned to 0 in dogbreed-aws.json): requests after an idle spell then "
        "wait for a cold start (about a second), and you save the "
        f"${provisioned_cost(ctx, provisioned):.2f} a month that {provisioned} pre-warmed "
        f"environment(s) of {ctx.config['lambda']['memory_mb']} MB cost ({PROVISIONED_PRICE})"
    )


def _remove_provisioned(ctx: Ctx) -> None:
    """Provisioned concurrency 0: delete the config on 'live' (billed while it exists)."""
    where = {"FunctionName": ctx.names.function, "Qualifier": ALIAS}
    try:
        found = ctx.find("lambda", "get_provisioned_concurrency_config", **where)
    except AwsError as exc:
        if not getattr(exc, "lacks_call", False):
            raise
        # An emulator without the call: it cannot hold a config either.
        ctx.say(f"provisioned concurrency of {ctx.names.function}:{ALIAS}: none (the "
                "endpoint has no provisioned-concurrency API: an emulator)")  # fmt: skip
        return
    if found is None and not ctx.dry_run:
        ctx.say(f"provisioned concurrency of {ctx.names.function}:{ALIAS}: none")
        return
    # A dry run cannot tell: it shows the request a real run sends when one is set.
    ctx.write("lambda", "delete_provisioned_concurrency_config", **where)
    ctx.say(f"removed provisioned concurrency of {ctx.names.function}:{ALIAS}")


# ---- the front door: a function URL on 'live' ----------------------------------------------


def find_function_url(ctx: Ctx) -> dict[str, Any] | None:
    """GetFunctionUrlConfig of alias 'live' (FunctionUrl, AuthType ...); None when it has none."""
    return ctx.find(
        "lambda", "get_function_url_config", FunctionName=ctx.names.function, Qualifier=ALIAS
    )


def ensure_function_url(ctx: Ctx, public: bool = False) -> str | None:
    """A function URL on 'live': AWS_IAM (signed requests only) unless `public`; its URL."""
    auth, function = ("NONE" if public else "AWS_IAM"), ctx.names.function
    if public:
        ctx.say(
            "warning: a public function URL: anyone who has it can call the endpoint, at your cost"
        )
    found = find_function_url(ctx)
    request = {"FunctionName": function, "Qualifier": ALIAS, "AuthType": auth}
    if found is None:
        found = ctx.write("lambda", "create_function_url_config", **request)
        ctx.say(f"created function URL of {function}:{ALIAS} (auth {auth})")
    elif found.get("AuthType") != auth:
        found = ctx.write("lambda", "update_function_url_config", **request)
        ctx.say(f"function URL of {function}:{ALIAS}: auth {auth}")
    else:
        ctx.say(f"function URL of {function}:{ALIAS} (auth {auth}) unchanged")
    _url_permissions(ctx, public)
    url = found.get("FunctionUrl")  # a dry run creates none
    if url:
        ctx.say(f"front door: {url}")
    return url


def _url_permissions(ctx: Ctx, public: bool) -> None:
    """The public statements on 'live' exactly when the URL is public (removed otherwise)."""
    where = {"FunctionName": ctx.names.function, "Qualifier": ALIAS}
    policy = ctx.find("lambda", "get_policy", **where)
    sids = {s.get("Sid") for s in json.loads(policy["Policy"])["Statement"]} if policy else set()
    for sid, grant in PUBLIC_URL_PERMISSIONS.items():
        if public and sid not in sids:
            ctx.write("lambda", "add_permission", **where, StatementId=sid, Principal="*", **grant)
            ctx.say(f"granted {grant['Action']} to anyone through the function URL")
        elif not public and sid in sids:
            ctx.write("lambda", "remove_permission", **where, StatementId=sid)
            ctx.say(f"revoked the public {grant['Action']} grant")


# ---- invoke ---------------------------------------------------------------------------------


def cmd_invoke(ctx: Ctx, opts: InvokeOptions) -> dict[str, Any]:
    """Classify one image: {"breed", "index", "score", ...}."""
    data = _read_file(opts.image, "image")
    if opts.endpoint:
        _check_size(opts.image, len(data), ENDPOINT_MAX_BYTES, "InvokeEndpoint's payload")
        response = ctx.call(
            "sagemaker-runtime",
            "invoke_endpoint",
            EndpointName=ctx.names.endpoint,
            ContentType="application/x-image",
            Accept="application/json",
            Body=data,
        )
        answer = _json(response["Body"].read(), "endpoint")
        return _fields(answer, {"breed": "label", "index": "index", "score": "score"}, "endpoint")
    payload = json.dumps({"image_base64": base64.b64encode(data).decode()}).encode()
    _check_size(opts.image, len(payload), INVOKE_MAX_BYTES, "Lambda's Invoke payload (base64)")
    response = ctx.call(
        "lambda", "invoke", FunctionName=ctx.names.function, Qualifier=ALIAS, Payload=payload
    )
    answer = _json(response["Payload"].read(), "function")
    if "FunctionError" in response:  # the function crashed: Lambda's error document
        raise AwsError(f"function {ctx.names.function} failed: {answer.get('errorMessage')}")
    if "error" in answer:
        raise AwsError(f"{opts.image}: {answer.get('statusCode')}: {answer['error']}")
    _fields(answer, {k: k for k in ("breed", "index", "score")}, "function")
    return answer


def _check_size(image: Path, size: int, limit: int, what: str) -> None:
    """A request AWS would refuse, refused before it is sent (the size as AWS counts it)."""
    if size > limit:
        raise ConfigError(f"{image}: the request would be {size} bytes, over {what} limit {limit}")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror}") from None


def _json(body: bytes, who: str) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise AwsError(f"the {who} answered something other than a JSON object: {body[:200]!r}")
    return answer


def _fields(answer: dict[str, Any], names: dict[str, str], who: str) -> dict[str, Any]:
    """answer's fields renamed (ours <- theirs); AwsError naming the first one missing."""
    missing = [theirs for theirs in names.values() if theirs not in answer]
    if missing:
        raise AwsError(f"the {who}'s answer has no {missing[0]!r}: {answer}")
    return {ours: answer[theirs] for ours, theirs in names.items()}
