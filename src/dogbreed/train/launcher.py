"""How the train image starts training on this host: one process, or torchrun.

    one host, no GPU or one       python -m dogbreed train FLAGS
    one host, N GPUs              torchrun --standalone --nproc-per-node N ...
    H hosts (resourceconfig)      torchrun --nnodes H --node-rank R --master-addr HOSTS[0]
                                  ONE DDP job; rank = position in `hosts`

Host names that do not resolve fail within $DOGBREED_HOST_WAIT_S seconds
(default 120) instead of the toolkit's 15 minutes. Nothing here imports torch
at module level: the job is checked before anything heavy starts.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError
from dogbreed.train.sagemaker import Job, write_failure

log = logging.getLogger("dogbreed.launch")
# torchrun, with a failed process reported in one line (train/elastic.py).
ELASTIC = "dogbreed.train.elastic"


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
                f"resolve; set {settings.HOST_WAIT_S} to wait longer)"
            )
        time.sleep(1)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def usable_interface(name: str | None) -> str | None:
    """The job's network interface if this host has it, else None (gloo and NCCL then
    pick the interface that routes to the master themselves).

    Launchers name interfaces that may not exist: SDK v3's local mode writes `ethwe`
    for containers that have only `lo` and `eth0`, and pinning gloo to a missing
    interface crashes every host at start.
    """
    if not name:
        return None
    present = sorted(n for _, n in socket.if_nameindex())
    if name in present:
        log.info("collectives on network interface %s (from resourceconfig.json)", name)
        return name
    log.info(
        "network interface %r from resourceconfig.json does not exist here (have: %s); "
        "leaving the choice to gloo/NCCL",
        name,
        ", ".join(present),
    )
    return None


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def train_command(
    flags: Sequence[str], job: Job, env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The command line (and extra environment) that runs training on this host."""
    module = ["-m", "dogbreed", "train", *flags]
    procs = max(1, gpu_count())
    multi_host = job.sagemaker and not flags and len(job.hosts) > 1
    if not multi_host:
        if procs == 1:
            return [sys.executable, *module], {}
        run = ["--standalone", f"--nproc-per-node={procs}"]
        return [sys.executable, "-m", ELASTIC, *run, *module], {}
    wait_for_hosts(job.hosts, settings.env_float(settings.HOST_WAIT_S, env))
    port = settings.env_int(settings.MASTER_PORT, env, minimum=1)
    run = [
        f"--nnodes={len(job.hosts)}",
        f"--node-rank={job.rank}",
        f"--nproc-per-node={procs}",
        f"--master-addr={job.hosts[0]}",
        f"--master-port={port}",
    ]
    extra = {}
    interface = usable_interface(job.interface)
    if interface:  # collectives on the instance's own network interface
        extra = {
            "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", interface),
            "NCCL_SOCKET_IFNAME": env.get("NCCL_SOCKET_IFNAME", interface),
        }
    log.info(
        "host %s: node %d of %d, %d process(es), master %s:%d",
        job.current_host,
        job.rank,
        len(job.hosts),
        procs,
        job.hosts[0],
        port,
    )
    return [sys.executable, "-m", ELASTIC, *run, *module], extra


def run_train(flags: Sequence[str], env: dict[str, str]) -> int:
    """Start training on this host and wait for it; its exit code.

    SageMaker stops a job with SIGTERM: it is passed on to the children.
    """
    job = Job.read(env)
    cmd, extra = train_command(flags, job, env)
    proc = subprocess.Popen(cmd, env={**env, **extra})
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    code = proc.wait()
    if code != 0 and job.sagemaker and not job.failure_file.exists():
        write_failure(f"training exited with code {code}; see the job's logs", env)
    return code
