"""`dogbreed local serve` without an engine: where the endpoint listens on each network."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogbreed import entrypoint
from dogbreed.cli.main import build_parser
from dogbreed.core.errors import ConfigError
from dogbreed.local.serve import ServeJob, container_spec


def listen_address(command: list[str], monkeypatch) -> str:
    """The address `dogbreed serve` binds when the serve image runs `command`."""
    seen: list[list[str]] = []
    monkeypatch.setattr(entrypoint, "cli_main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", "/opt/ml")
    assert entrypoint.main(command) == 0
    return build_parser().parse_args(seen[0]).host


def test_on_host_networking_the_endpoint_listens_on_loopback_only(monkeypatch):
    job = ServeJob(image="img", model=Path("m"), port=8081)
    command, options = container_spec(job, None, Path("model-dir"))
    assert listen_address(command, monkeypatch) == "127.0.0.1"
    assert options["environment"]["SAGEMAKER_BIND_TO_PORT"] == "8081"
    assert "ports" not in options


def test_on_a_bridge_network_only_loopback_is_published(monkeypatch):
    job = ServeJob(image="img", model=Path("m"), port=8081)
    command, options = container_spec(job, "run-net", Path("model-dir"))
    # Inside its own network namespace the server listens everywhere, as on SageMaker;
    # this machine publishes it on 127.0.0.1 alone.
    assert listen_address(command, monkeypatch) == "0.0.0.0"
    assert options["ports"] == {"8080/tcp": ("127.0.0.1", 8081)}
    assert options["environment"]["SAGEMAKER_BIND_TO_PORT"] == "8080"


def test_the_model_is_mounted_read_only_and_user_variables_pass_through():
    job = ServeJob(image="img", model=Path("m"), port=8081, env={"DOGBREED_TOP_K": "3"})
    _, options = container_spec(job, None, Path("model-dir"))
    assert options["volumes"] == {"model-dir": {"bind": "/opt/ml/model", "mode": "ro"}}
    assert options["environment"]["DOGBREED_TOP_K"] == "3"


def test_a_port_the_model_server_refuses_is_a_config_error_on_host_networking():
    with pytest.raises(ConfigError, match="up to 32767"):
        container_spec(ServeJob(image="img", model=Path("m"), port=40000), None, Path("model-dir"))
