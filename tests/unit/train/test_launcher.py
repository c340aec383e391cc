"""The train image's launcher: one Job in, the right process tree out, bad jobs fail fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreed import entrypoint
from dogbreed.core.errors import ConfigError
from dogbreed.train import launcher
from dogbreed.train.sagemaker import Job


def job_files(base: Path, hosts: list[str], current: str, interface: str | None = "lo") -> dict:
    config = base / "input" / "config"
    config.mkdir(parents=True)
    resource = {"current_host": current, "hosts": hosts}
    if interface is not None:
        resource["network_interface_name"] = interface
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    (config / "hyperparameters.json").write_text(json.dumps({"epochs": "2"}))
    return {"SAGEMAKER_BASE_DIR": str(base)}


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    monkeypatch.setattr(launcher, "gpu_count", lambda: 0)


def test_one_local_host_runs_one_process(tmp_path):
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path)}
    cmd, extra = launcher.train_command(["--data", "/d"], Job.read(env), env)
    assert cmd == [sys.executable, "-m", "dogbreed", "train", "--data", "/d"] and extra == {}


@pytest.mark.parametrize(
    "hosts,current",
    [
        (["algo-1", "algo-2"], "algo-2"),
        (["algo-1-x7k2p", "algo-2-x7k2p", "algo-3-x7k2p"], "algo-3-x7k2p"),
        (["ip-10-0-1-23.ec2.internal", "ip-10-0-1-24.ec2.internal"], "ip-10-0-1-23.ec2.internal"),
    ],
)
def test_several_hosts_make_one_torchrun_job(tmp_path, monkeypatch, hosts, current):
    monkeypatch.setattr(launcher, "_resolves", lambda host: True)
    env = job_files(tmp_path, hosts, current)  # "lo": an interface every host has
    cmd, extra = launcher.train_command([], Job.read(env), env)
    assert cmd[1:3] == ["-m", "dogbreed.train.elastic"]  # torchrun, failures in one line
    assert f"--nnodes={len(hosts)}" in cmd and f"--node-rank={hosts.index(current)}" in cmd
    assert f"--master-addr={hosts[0]}" in cmd and "--master-port=29500" in cmd
    assert cmd[-3:] == ["-m", "dogbreed", "train"]
    assert extra == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


@pytest.mark.parametrize("interface", ["ethwe", "", None])
def test_an_interface_this_host_lacks_is_left_to_gloo(tmp_path, monkeypatch, caplog, interface):
    monkeypatch.setattr(launcher, "_resolves", lambda host: True)
    env = job_files(tmp_path, ["algo-1", "algo-2"], "algo-1", interface=interface)
    with caplog.at_level("INFO", logger="dogbreed.launch"):
        cmd, extra = launcher.train_command([], Job.read(env), env)
    assert extra == {} and "--nnodes=2" in cmd
    if interface:
        assert "'ethwe' from resourceconfig.json does not exist here" in caplog.text


def test_unresolvable_hosts_fail_within_the_wait(tmp_path):
    env = {
        **job_files(tmp_path, ["algo-1", "no-such-host.invalid"], "algo-1"),
        "DOGBREED_HOST_WAIT_S": "0",
    }
    with pytest.raises(ConfigError, match=r"no-such-host\.invalid"):
        launcher.train_command([], Job.read(env), env)


@pytest.mark.parametrize(
    "resource,message",
    [
        ({"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}, "not in hosts"),
        ({"current_host": "algo-1", "hosts": []}, "non-empty list"),
        ({"current_host": "algo-1", "hosts": "algo-1"}, "non-empty list"),
    ],
)
def test_a_malformed_job_is_one_line_and_a_failure_file(
    tmp_path, monkeypatch, capsys, resource, message
):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert entrypoint.main(["train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("dogbreed train: error:")
    assert message in (tmp_path / "output" / "failure").read_text()


def test_the_job_is_read_once_into_one_object(tmp_path):
    env = job_files(tmp_path, ["algo-1", "algo-2"], "algo-2", interface=None)
    job = Job.read(env)
    assert job.sagemaker and job.rank == 1 and job.interface is None
    assert job.hyperparameters == {"epochs": 2}
    assert job.model_dir == tmp_path / "model" and job.checkpoint_dir == tmp_path / "checkpoints"


def test_a_failed_process_under_torchrun_is_one_line_not_a_traceback(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('dogbreed train: error: no weights', file=sys.stderr)\n"
                      "sys.exit(3)\n")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", launcher.ELASTIC, "--standalone", "--nproc-per-node=1", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "dogbreed train: error: no weights" in proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert "training process 0" in proc.stderr.splitlines()[-1]
