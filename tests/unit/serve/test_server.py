"""`dogbreed serve` refuses what would fail later, before starting anything: one line, non-zero."""

from __future__ import annotations

import socket
import sys

import pytest

from dogbreed.core.errors import ConfigError
from dogbreed.core.serve_settings import ServeSettings
from dogbreed.serve import mms, server
from dogbreed.serve.server import check_port
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


def test_flags_win_over_the_environment_and_defaults_fill_the_rest():
    opts = ServeSettings.read(
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "DOGBREED_PRECISION": "int8"},
        port=9000,
        precision="fp32",
    )
    assert (opts.port, opts.workers, opts.precision) == (9000, 3, "fp32")
    assert opts.timeout_s == 60 and opts.max_payload_bytes == 6 * 1024 * 1024
    assert opts.host == "127.0.0.1"  # natively only this machine reaches the server


def test_the_workers_parse_back_exactly_what_the_server_resolved():
    opts = ServeSettings.read(
        {
            "DOGBREED_MAX_PAYLOAD_MB": "2.5",
            "DOGBREED_ORT_THREADS": "3",
            "DOGBREED_SHARE_CORES": "0",
        },
        workers=4,
    )
    assert ServeSettings.read(opts.environ(), host=opts.host) == opts
    default = ServeSettings.read({})
    assert ServeSettings.read(default.environ()) == default


def test_a_batch_transform_jobs_payload_limit_is_the_request_limit():
    """SageMaker sets the job's MaxPayloadInMB; ours, when set, still wins."""
    job = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}
    assert ServeSettings.read(job).max_payload_bytes == 20 * 1024 * 1024
    ours = {**job, "DOGBREED_MAX_PAYLOAD_MB": "8"}
    assert ServeSettings.read(ours).max_payload_bytes == 8 * 1024 * 1024
    for unbounded in ("0", "250"):  # SageMaker's "no limit", and past its own maximum
        job = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": unbounded}
        assert ServeSettings.read(job).max_payload_bytes == 100 * 1024 * 1024


def properties(text: str) -> dict[str, str]:
    pairs = [line.partition("=") for line in text.splitlines() if line and line[0] != "#"]
    assert len({k for k, _, _ in pairs}) == len(pairs), "a key written twice"
    return {k: v for k, _, v in pairs}


def test_the_model_servers_config_is_rendered_from_the_settings(tmp_path):
    opts = ServeSettings.read({"DOGBREED_JOB_QUEUE": "7"}, port=8123, workers=3, host="0.0.0.0")
    runtime = mms.Runtime(tmp_path)
    props = properties(mms.render_config(opts, runtime))
    assert props["inference_address"] == "http://0.0.0.0:8123"
    # Management (register a model from any URL, scale to zero) never on the serving address.
    assert props["management_address"] == f"unix:{tmp_path / 'management.sock'}"
    assert props["default_workers_per_model"] == "3"
    assert props["job_queue_size"] == "7"  # a burst beyond it is answered 503 at once
    assert props["default_response_timeout_seconds"] == "60"
    assert props["enable_envvars_config"] == "false"  # MMS_* variables cannot override
    # A body up to twice the limit still reaches the codec, which answers a JSON 413.
    assert int(props["max_request_size"]) > 2 * opts.max_payload_bytes
    assert props["default_service_handler"] == "dogbreed.serve.handler_service"


def test_the_front_end_runs_in_the_private_folder_with_every_setting_written_out(tmp_path):
    opts = ServeSettings.read({}, port=8123)
    runtime = mms.Runtime(tmp_path)
    cmd = mms.command(opts, runtime, tmp_path / "model")
    assert cmd[cmd.index("-m") + 1] == f"model={tmp_path / 'model'}"
    assert f"-Djava.io.tmpdir={tmp_path}" in cmd  # the workers' sockets: not in /tmp
    assert cmd[cmd.index(mms.FRONT_END_MAIN) + 1 : cmd.index(mms.FRONT_END_MAIN) + 3] == [
        "--python",
        sys.executable,
    ]
    env = mms.child_environment(opts, runtime)
    assert env["DOGBREED_RUNTIME_DIR"] == str(tmp_path)
    assert ServeSettings.read(env) == opts


def test_a_runtime_folder_is_private_and_goes_with_the_server():
    runtime = mms.Runtime.create()
    try:
        assert runtime.root.stat().st_mode & 0o077 == 0  # a folder only we can enter
    finally:
        runtime.remove()
    assert not runtime.root.exists()


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


@pytest.mark.parametrize(
    ("memory_gb", "model_mb", "expected"),
    [(1, 25, 1), (2, 25, 2), (6, 100, 2), (1, 100, 1), (0.5, 100, 1), (3, 100, 2)],
)
def test_workers_fit_the_memory_limit(memory_gb, model_mb, expected):
    """Serverless endpoints of 1 GB get one worker; never none; at most the default."""
    opts = ServeSettings.read({})
    assert opts.workers is None  # nobody asked for a number
    got = server.fit_workers(int(model_mb * 2**20), opts, memory=int(memory_gb * 2**30))
    assert got == expected


def test_two_workers_at_their_worst_fit_the_memory_they_were_given():
    opts = ServeSettings.read({})
    model = 100 * 2**20
    for gb in (1, 2, 3, 4, 6):
        memory = gb * 2**30
        n = server.fit_workers(model, opts, memory=memory)
        worst = server.WORKER_BASE_BYTES + 2 * server.SESSION_FACTOR * model
        worst += server.REQUEST_PEAK_BYTES
        assert n == 1 or server.FRONT_END_BYTES + n * worst <= memory
    assert ServeSettings.read({}, workers=3).workers == 3  # a flag is taken as given
