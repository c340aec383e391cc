"""`dogbreed serve` refuses what would fail later, before starting anything: one line, non-zero."""

from __future__ import annotations

import socket

import pytest

from dogbreed.core.errors import ConfigError
from dogbreed.serve.server import check_port, server_environment
from support.cli import run_cli
from support.servers import free_port


@pytest.mark.parametrize("port", ["40000", "32768", "0", "70000"])
def test_a_port_the_model_server_refuses_is_one_line(tiny_model_dir, port):
    proc = run_cli("serve", "--model-dir", tiny_model_dir, "--port", port, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"dogbreed serve: error: port {port}: the model server takes ports 1-32767 "
        "(multi-model-server refuses higher numbers); set --port or SAGEMAKER_BIND_TO_PORT"
    ]


def test_a_port_in_use_is_refused_before_starting():
    port = free_port()  # one in MMS's range
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigError, match=f"port {port} cannot be used"):
            check_port(port)


def test_a_malformed_port_variable_is_one_line(tiny_model_dir):
    proc = run_cli(
        "serve", "--model-dir", tiny_model_dir, env={"SAGEMAKER_BIND_TO_PORT": "http"}, timeout=60
    )
    assert proc.returncode == 2 and "SAGEMAKER_BIND_TO_PORT='http'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_flags_win_over_the_environment_and_defaults_fill_the_rest(tiny_model_dir):
    env = server_environment(
        tiny_model_dir, 9000, None, {"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, "fp32"
    )
    assert env["SAGEMAKER_BIND_TO_PORT"] == "9000"
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "3"
    assert env["DOGBREED_PRECISION"] == "fp32"
    assert env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] == "60"
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "7"  # above ours, so our handler answers 413
    assert env["SAGEMAKER_BASE_DIR"] == str(tiny_model_dir.parent)


def test_the_control_plane_goes_to_a_private_socket(tmp_path):
    """The toolkit writes management = inference; ours come last in the file and win."""
    from types import SimpleNamespace

    from dogbreed.serve.server import close_control_plane

    def toolkit(env, handler_service=None):  # what the toolkit writes, in short
        return "inference_address=http://0.0.0.0:8080\nmanagement_address=http://0.0.0.0:8080\n"

    fake = SimpleNamespace(_generate_mms_config_properties=toolkit)
    socket_path = close_control_plane(fake, "http://127.0.0.1:8080")
    lines = fake._generate_mms_config_properties(None).splitlines()
    last = {k: v for k, _, v in (line.partition("=") for line in lines)}  # Java: last one wins
    assert last["inference_address"] == "http://127.0.0.1:8080"
    assert last["management_address"] == f"unix:{socket_path}"
    assert last["job_queue_size"] == "50"  # a burst beyond it is answered 503 at once
    assert socket_path.parent.stat().st_mode & 0o077 == 0  # a folder only we can enter
    socket_path.parent.rmdir()


def test_serve_listens_on_loopback_natively_and_everywhere_in_the_image(monkeypatch):
    from dogbreed import entrypoint
    from dogbreed.cli.main import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    seen: list[list[str]] = []
    monkeypatch.setattr(entrypoint, "cli_main", lambda argv: seen.append(argv) or 0)
    assert entrypoint.main(["serve"]) == 0  # `docker run IMAGE serve`, as SageMaker runs it
    assert build_parser().parse_args(seen[0]).host == "0.0.0.0"


@pytest.mark.parametrize(
    "name,value",
    [("DOGBREED_TOP_K", "five"), ("DOGBREED_MAX_PIXELS", "-1"), ("DOGBREED_SHARE_CORES", "maybe"),
     ("DOGBREED_PRECISION", "fp16"), ("DOGBREED_MAX_PAYLOAD_MB", "lots")],
)  # fmt: skip
def test_a_bad_serving_variable_stops_the_start_in_one_line(tiny_model_dir, name, value):
    proc = run_cli("serve", "--model-dir", tiny_model_dir, env={name: value}, timeout=60)
    assert proc.returncode in (2, 4), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], proc.stderr


def test_whole_numbers_may_be_written_as_floats():
    from dogbreed.core import settings

    assert settings.env_int(settings.MAX_PIXELS, {"DOGBREED_MAX_PIXELS": "4e7"}) == 40_000_000
    with pytest.raises(ConfigError, match="whole number"):
        settings.env_int(settings.MAX_PIXELS, {"DOGBREED_MAX_PIXELS": "1.5"})
