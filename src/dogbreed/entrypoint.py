"""Container entry point: `IMAGE train` and `IMAGE serve`, as SageMaker runs them.

    docker run IMAGE train                  SageMaker: settings from /opt/ml; several
                                            hosts in resourceconfig.json make ONE
                                            DDP job (torchrun, master = first host)
    docker run IMAGE train --data /data ... EC2/Docker host: plain flags
    docker run IMAGE serve                  the endpoint on /opt/ml/model, port 8080
    docker run IMAGE dogbreed predict ...   any other command runs as given

Within a host, one process per GPU. Host names that do not resolve fail within
DOGBREED_HOST_WAIT_S seconds (default 120) instead of the toolkit's 15 minutes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from dogbreed.core.errors import ConfigError
from dogbreed.train import config as environment

log = logging.getLogger("dogbreed.entrypoint")
MASTER_PORT = 29500
HOST_WAIT_ENV = "DOGBREED_HOST_WAIT_S"
MASTER_PORT_ENV = "DOGBREED_MASTER_PORT"


def wait_for_hosts(hosts: Sequence[str], timeout_s: float) -> None:
    """Every host name must resolve; retry until timeout_s, then one clear error."""
    deadline = time.monotonic() + timeout_s
    pending = list(hosts)
    while pending:
        pending = [h for h in pending if not _resolves(h)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ConfigError(
                f"host names do not resolve after {timeout_s:.0f}s: "
                f"{', '.join(pending)} (every host in resourceconfig.json must "
                "resolve; set DOGBREED_HOST_WAIT_S to wait longer)"
            )
        time.sleep(1)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def sagemaker_env() -> dict[str, str]:
    """SM_* variables as the sagemaker-training toolkit computes them (when installed)."""
    # The toolkit logs every hyperparameter it cannot JSON-decode; not news to us.
    logging.getLogger("sagemaker_training").setLevel(logging.WARNING)
    try:
        from sagemaker_training import environment as toolkit_env

        return {k: str(v) for k, v in toolkit_env.Environment().to_env_vars().items()}
    except Exception as exc:  # the toolkit is optional; our own resolver reads /opt/ml
        log.debug("no SM_* variables from the toolkit: %s", exc)
        return {}


def train_command(flags: Sequence[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command line (and extra environment) that runs training on this host."""
    python = [sys.executable, "-m", "dogbreed", "train", *flags]
    gpus = gpu_count()
    procs = max(1, gpus)
    if flags or not environment.in_sagemaker(env):
        hosts, current = ["localhost"], "localhost"
    else:
        hosts, current = environment.hosts(env)
    if len(hosts) == 1:
        if procs == 1:
            return python, {}
        run = ["--standalone", f"--nproc-per-node={procs}"]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *run,
            "-m",
            "dogbreed",
            "train",
            *flags,
        ], {}
    if current not in hosts:
        raise ConfigError(f"current host {current!r} is not in hosts {hosts}")
    wait_for_hosts(hosts, float(env.get(HOST_WAIT_ENV, "120")))
    port = int(env.get(MASTER_PORT_ENV, MASTER_PORT))
    run = [
        f"--nnodes={len(hosts)}",
        f"--node-rank={hosts.index(current)}",
        f"--nproc-per-node={procs}",
        f"--master-addr={hosts[0]}",
        f"--master-port={port}",
    ]
    extra = {}
    interface = _interface(env)
    if interface:  # collectives on the instance's own network interface
        extra = {
            "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", interface),
            "NCCL_SOCKET_IFNAME": env.get("NCCL_SOCKET_IFNAME", interface),
        }
    log.info(
        "host %s: node %d of %d, %d process(es), master %s:%d",
        current,
        hosts.index(current),
        len(hosts),
        procs,
        hosts[0],
        port,
    )
    return [sys.executable, "-m", "torch.distributed.run", *run, "-m", "dogbreed", "train"], extra


def _interface(env: dict[str, str]) -> str | None:
    import json

    path = environment.base_dir(env) / environment.RESOURCE_CONFIG_FILE
    try:
        return json.loads(path.read_text()).get("network_interface_name")
    except (OSError, ValueError):
        return None


def run_train(flags: Sequence[str]) -> int:
    env = dict(os.environ)
    try:
        cmd, extra = train_command(flags, env)
    except ConfigError as exc:
        environment.write_failure(str(exc), env)
        print(f"dogbreed train: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if environment.in_sagemaker(env) and not flags:
        env = {**sagemaker_env(), **env}
    env.update(extra)
    proc = subprocess.Popen(cmd, env=env)
    # SageMaker stops a job with SIGTERM: pass it on and wait for the children.
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    code = proc.wait()
    failure = environment.base_dir(env) / environment.FAILURE_FILE
    if code != 0 and not failure.exists():
        environment.write_failure(f"training exited with code {code}; see the job's logs", env)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "train":
        return run_train(rest)
    if command == "serve":
        from dogbreed.cli import main as cli_main

        model_dir = str(environment.base_dir(os.environ) / "model")
        return cli_main(["serve", "--model-dir", model_dir, *rest])
    os.execvp(command, args)  # e.g. `docker run IMAGE dogbreed predict ...` or `bash`
    return 0


if __name__ == "__main__":
    sys.exit(main())
