"""AWS test helpers: a deployment context whose clients a botocore Stubber answers, and
the environment that points boto3 (here and in the CLI's subprocesses) at moto's server,
with a loopback twin of the Lambda calls moto lacks (provisioned concurrency)."""

from __future__ import annotations

import functools
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from dogbreed.aws.config import load_config
from dogbreed.aws.context import Ctx, Names
from dogbreed.aws.invoke_twin import LoopbackServer, QuietHandler
from support.cli import run_cli

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
DATA = "s3://dogs-bucket/dogImages"
# A deployment's settings file, as the tests write it (the rest: defaults.json).
CONFIG = {
    "region": REGION,
    "data": DATA,
    "output": "s3://dogs-bucket/output",
    "checkpoints": "s3://dogs-bucket/checkpoints",
}
PROVISIONED_PATH = re.compile(r"^/2019-09-30/functions/([^/?]+)/provisioned-concurrency$")
HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding"}
CLI_TIMEOUT_S = 300  # one `dogbreed aws` command against moto


def offline_ctx(service: str) -> tuple[Ctx, object]:
    """A context for deployment 'dogs' whose `service` client a botocore Stubber will answer."""
    client = boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    ctx = Ctx(Names("dogs"), load_config(None))
    ctx._clients[service] = client
    ctx._identity = (ACCOUNT, REGION)
    return ctx, client


def use_moto(moto_url: str, monkeypatch) -> dict[str, str]:
    """Point this process's boto3 at moto's server (Lambda through LambdaTwin); the same
    variables for subprocesses."""
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ENDPOINT_URL_LAMBDA": lambda_twin(moto_url).url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def moto_env(
    moto_url: str, monkeypatch, folder: Path, settings: dict[str, Any]
) -> tuple[dict[str, str], Path]:
    """What an `aws_env` fixture gives `aws`: boto3 pointed at moto (use_moto), and a
    deployment's settings file holding `settings`, written in `folder`."""
    env = use_moto(moto_url, monkeypatch)
    config = folder / "aws.json"
    config.write_text(json.dumps(settings))
    return env, config


def aws(env_config: tuple[dict[str, str], Path], *args: str, check: bool = True):
    """Run `dogbreed aws VERB ARGS` (args[0] the verb) with a moto_env's environment and
    settings file; the completed process."""
    env, config = env_config
    verb, rest = args[0], args[1:]
    return run_cli(
        "aws", verb, "--config", str(config), *rest, env=env, check=check, timeout=CLI_TIMEOUT_S
    )


# ---- Lambda: moto's, plus provisioned concurrency ------------------------------------------


class _LambdaRequest(QuietHandler):
    server: LambdaTwin

    def _call(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = PROVISIONED_PATH.match(path)
        if match is None:
            self._forward(body)
            return
        qualifier = urllib.parse.parse_qs(query).get("Qualifier", [""])[0]
        status, doc = self.server.provisioned(self.command, (match.group(1), qualifier), body)
        headers = {"Content-Type": "application/json"}
        if status == 404:
            headers["x-amzn-ErrorType"] = "ProvisionedConcurrencyConfigNotFoundException"
        self._reply(status, json.dumps(doc).encode() if doc is not None else b"", headers)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        request = urllib.request.Request(
            self.server.upstream + self.path, data=body or None, method=self.command,
            headers=headers,
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, data, got = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as exc:
            status, data, got = exc.code, exc.read(), exc.headers
        kept = {k: v for k, v in got.items() if k.lower() not in HOP_HEADERS}
        self._reply(status, data, kept)

    do_GET = do_POST = do_PUT = do_DELETE = _call


class LambdaTwin(LoopbackServer):
    """moto's Lambda API on loopback, with Put/Get/DeleteProvisionedConcurrencyConfig
    answered here (moto 5 has none), kept in memory per function and qualifier."""

    def __init__(self, upstream: str) -> None:
        super().__init__(0, _LambdaRequest)
        self.upstream = upstream.rstrip("/")
        self.configs: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def provisioned(self, method: str, key: tuple[str, str], body: bytes):
        """(HTTP status, answer document or None) of one provisioned-concurrency call."""
        with self.lock:
            if method == "PUT":
                self.configs[key] = json.loads(body)["ProvisionedConcurrentExecutions"]
                return 202, _provisioned_answer(self.configs[key], "IN_PROGRESS")
            if key not in self.configs:
                return 404, {"Type": "User", "message": "No Provisioned Concurrency Config"}
            if method == "DELETE":
                del self.configs[key]
                return 204, None
            return 200, _provisioned_answer(self.configs[key], "READY")


def _provisioned_answer(count: int, status: str) -> dict:
    return {
        "RequestedProvisionedConcurrentExecutions": count,
        "AllocatedProvisionedConcurrentExecutions": count if status == "READY" else 0,
        "Status": status,
        "LastModified": "2026-01-01T00:00:00.000+0000",
    }


@functools.cache
def lambda_twin(moto_url: str) -> LambdaTwin:
    """One LambdaTwin per moto server, for the test session."""
    return LambdaTwin(moto_url).start()
