"""`dogbreed local train`: the train image on this machine, as SageMaker runs a training job.

One container per host (`docker run IMAGE train`), each with its own /opt/ml tree
under OUT/hosts/algo-i and the data bind-mounted read-only as the training
channel. The hosts form ONE DDP job (rank 0 = algo-1 writes the model). At the
end:

    OUT/model.tar.gz              algo-1's /opt/ml/model, packed as SageMaker packs it
    OUT/output/data/              algo-1's /opt/ml/output/data (metrics, curves ...)
    OUT/output/failure.algo-i     each failed host's /opt/ml/output/failure

When a host fails the others are stopped (SageMaker ends the whole job) and the
command fails naming the first host that failed and its reason.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dogbreed.core.errors import ConfigError, ModelError
from dogbreed.local import docker_engine as engine
from dogbreed.local.archive import pack_model
from dogbreed.local.opt_ml import check_data, host_names, write_tree

log = logging.getLogger("dogbreed.local")

FAILURE_CHARS = 1024  # what SageMaker shows of /opt/ml/output/failure
FAIL_GRACE_S = 30  # the other hosts' SIGTERM grace once one host has failed


@dataclass
class TrainJob:
    image: str
    hosts: int
    data: Path
    out: Path
    hyperparameters: dict[str, str]
    gpus: bool = False
    network: str = "auto"
    env: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    max_run_s: float = 86400.0
    shm_size: str = "1g"


def split_gpus(total: int, hosts: int) -> list[list[str]]:
    """Device ids per host: each host its own equal share (NCCL refuses two ranks on one
    GPU)."""
    if total < hosts:
        raise ConfigError(f"--gpus with --hosts {hosts}: only {total} GPU(s) on this machine")
    share = total // hosts
    return [[str(i * share + j) for j in range(share)] for i in range(hosts)]


def _gpu_count() -> int:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        raise ConfigError("--gpus: nvidia-smi does not list any GPU on this machine") from None
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))


def device_requests(gpus: bool, hosts: int) -> list[list]:
    """Per host, the `device_requests` of its container (empty: CPU only)."""
    if not gpus:
        return [[] for _ in range(hosts)]
    from docker.types import DeviceRequest

    if hosts == 1:
        return [[DeviceRequest(count=-1, capabilities=[["gpu"]])]]
    return [
        [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        for ids in split_gpus(_gpu_count(), hosts)
    ]


def _fresh_out(out: Path) -> None:
    """Remove what an earlier run left in OUT (its trees would resume from checkpoints)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("hosts", "output"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "model.tar.gz").unlink(missing_ok=True)


def failure_reason(tree: Path, code: int | None) -> str:
    path = tree / "output" / "failure"
    text = path.read_text(errors="replace").strip() if path.is_file() else ""
    if text:
        return " ".join(text.split())[:FAILURE_CHARS]
    if code is None:
        return "stopped: the job ran past --max-run"
    return f"exit code {code}; see its log above"


def run_train(job: TrainJob) -> Path:
    """Run the job; OUT/model.tar.gz, or HostFailedError naming the first failed host."""
    data = check_data(job.data)
    hosts = host_names(job.hosts)
    run_id = job.run_id or engine.new_run_id("train")
    client = engine.connect()
    engine.require_image(client, job.image)
    requests = device_requests(job.gpus, len(hosts))
    out = job.out.resolve()
    _fresh_out(out)
    trees = {h: out / "hosts" / h for h in hosts}
    log.info("run %s: %d host(s), image %s, out %s", run_id, len(hosts), job.image, out)
    with engine.Run(client, run_id, "train") as run:
        network = run.choose_network(job.network)
        containers = create_hosts(run, job, network, trees, data, requests)
        followers = {}
        for host, container in zip(hosts, containers, strict=True):
            run.start(container)
            followers[host] = engine.Follower(container, host)
            followers[host].start()
        failed = _wait(run, followers, job.max_run_s)
    _collect(out, trees, hosts)
    if failed:
        host, code = failed
        raise engine.HostFailedError(
            f"host {host} failed: {failure_reason(trees[host], code)} "
            f"(run {run_id}; trees under {out / 'hosts'})"
        )
    model = trees[hosts[0]] / "model"
    if not model.is_dir() or not any(model.iterdir()):
        raise ModelError(f"training ended but {hosts[0]} wrote no model to /opt/ml/model")
    archive = pack_model(model, out / "model.tar.gz")
    print(f"model:   {archive}", flush=True)
    print(f"reports: {out / 'output' / 'data'}", flush=True)
    return archive


def listens(job: TrainJob) -> bool:
    """Whether the job opens ports: torchrun's rendezvous store (several hosts, or one
    host with several GPUs), gloo's and NCCL's sockets. A single CPU host opens none."""
    return job.hosts > 1 or job.gpus


def create_hosts(
    run: engine.Run,
    job: TrainJob,
    network: str | None,
    trees: dict[str, Path],
    data: Path,
    requests: list[list],
) -> list:
    """One container per host, with its /opt/ml tree written; created, not started.

    Bridge network: each host is its own name on the run's network (`eth0`). No bridge:
    torchrun's store listens on every address of its network namespace and has no
    authentication, so a job that listens must not share this machine's: the hosts
    then share one namespace of their own with loopback alone (algo-1 in Docker's
    "none" network, the others joining it), reach each other at 127.0.0.1, and
    nothing else reaches them (nor do they reach anything: give weights as a file, or
    'none'). A single CPU host listens on nothing and keeps host networking.
    """
    hosts = list(trees)
    env = dict(job.env)
    if network is None and listens(job):
        network = engine.LOOPBACK_ONLY
        log.info("hosts: one network namespace of their own, loopback alone (no internet)")
    elif network is None:
        log.info("hosts: host networking (one CPU host: it listens on nothing)")
    interface = "eth0" if network not in (None, engine.LOOPBACK_ONLY) else "lo"
    extra_hosts = None
    if network in (None, engine.LOOPBACK_ONLY):
        extra_hosts = {h: "127.0.0.1" for h in hosts}
    containers: list = []
    for host, devices in zip(hosts, requests, strict=True):
        write_tree(trees[host], host, hosts, job.hyperparameters, interface)
        volumes = {
            str(trees[host]): {"bind": "/opt/ml", "mode": "rw"},
            str(data): {"bind": "/opt/ml/input/data/training", "mode": "ro"},
        }
        # Those joining algo-1's namespace share its /etc/hosts (Docker refuses their own).
        joined = network == engine.LOOPBACK_ONLY and bool(containers)
        containers.append(
            run.create(
                job.image,
                ["train"],
                host,
                network,
                join=containers[0] if joined else None,
                environment=env,
                volumes=volumes,
                extra_hosts=None if joined else extra_hosts,
                shm_size=job.shm_size,
                device_requests=devices or None,
            )
        )
    return containers


def _wait(
    run: engine.Run, followers: dict[str, engine.Follower], max_run_s: float
) -> tuple[str, int | None] | None:
    """Wait for every host; on the first failure stop the others. (host, code) of the
    first failure, or None."""
    deadline = time.monotonic() + max_run_s
    first: tuple[str, int | None] | None = None
    while any(f.is_alive() for f in followers.values()):
        if time.monotonic() > deadline:
            log.error("the job ran past --max-run %.0f s: stopping it", max_run_s)
            run.stop(run.containers)
            return first or (next(iter(followers)), None)
        for host, f in followers.items():
            f.join(0.2)
            if first is None and not f.is_alive() and f.exit_code != 0:
                first = (host, f.exit_code)
                log.error("host %s exited with code %s: stopping the others", host, f.exit_code)
                alive = [g.container for g in followers.values() if g.is_alive()]
                run.stop(alive, timeout=FAIL_GRACE_S)
    return first


def _collect(out: Path, trees: dict[str, Path], hosts: list[str]) -> None:
    """The job's reports: rank 0's output/data, and every failed host's failure file."""
    reports = out / "output"
    reports.mkdir(parents=True, exist_ok=True)
    data = trees[hosts[0]] / "output" / "data"
    if data.is_dir():
        shutil.copytree(data, reports / "data", dirs_exist_ok=True)
    for host in hosts:
        failure = trees[host] / "output" / "failure"
        if failure.is_file():
            shutil.copyfile(failure, reports / f"failure.{host}")
