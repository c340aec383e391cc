"""`dogbreed local`'s engine side without an engine: network choice, clean-up by id, errors."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker.errors
import pytest

from dogbreed.cli import local_cmds
from dogbreed.core.errors import ConfigError
from dogbreed.local.docker_engine import RUN_LABEL, Run, check_run_id, new_run_id
from dogbreed.local.opt_ml import host_names
from dogbreed.local.train import TrainJob, create_hosts, failure_reason, split_gpus
from support.cli import run_cli


class FakeContainer:
    def __init__(self, engine: FakeEngine, cid: str, name: str, labels: dict) -> None:
        self.engine, self.id, self.name, self.labels = engine, cid, name, labels
        self.status = "created"

    def start(self) -> None:
        self.status = "running"

    def reload(self) -> None:
        pass

    def stop(self, timeout: int) -> None:
        self.engine.calls.append(("stop", self.id, timeout))
        self.engine.send_signals()
        self.status = "exited"

    def remove(self, force: bool = False) -> None:
        self.engine.send_signals()
        self.engine.calls.append(("remove", self.id))
        del self.engine.live[self.id]


class FakeNetwork:
    def __init__(self, engine: FakeEngine, name: str) -> None:
        self.engine, self.name = engine, name

    def remove(self) -> None:
        self.engine.calls.append(("network-remove", self.name))


class FakeEngine:
    """The slice of docker.DockerClient that Run uses."""

    def __init__(self, bridge: bool = True) -> None:
        self.bridge, self.live, self.calls = bridge, {}, []
        self.containers, self.networks, self.api = self, self, self
        self.signals: tuple[int, ...] = ()

    def send_signals(self) -> None:
        """Signals a user sends while the run is being cleaned up (Ctrl-C, kill)."""
        for signum in self.signals:
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # let the main thread run its handler

    # client.networks.create
    def create(self, *args, **kwargs):
        if "driver" in kwargs:
            if not self.bridge:
                raise docker.errors.APIError("bridge driver unavailable")
            self.calls.append(("network-create", args[0], kwargs["labels"]))
            return FakeNetwork(self, args[0])
        cid = f"id{len(self.live)}"
        self.calls.append(("container-create", kwargs))
        self.live[cid] = FakeContainer(self, cid, kwargs["name"], kwargs["labels"])
        return self.live[cid]

    def create_endpoint_config(self, aliases):
        return {"Aliases": aliases}


def test_a_private_bridge_network_named_for_the_run():
    engine = FakeEngine()
    with Run(engine, "dogbreed-train-1234", "train") as run:
        assert run.choose_network("auto") == "dogbreed-train-1234"
        run.create("img", ["train"], "algo-2", "dogbreed-train-1234")
    _, name, labels = engine.calls[0]
    assert name == "dogbreed-train-1234" and labels[RUN_LABEL] == "dogbreed-train-1234"
    created = engine.calls[1][1]
    assert created["hostname"] == "algo-2" and created["name"] == "dogbreed-train-1234-algo-2"
    assert created["networking_config"]["dogbreed-train-1234"] == {"Aliases": ["algo-2"]}
    assert "network_mode" not in created


def test_host_networking_where_the_engine_refuses_a_bridge(caplog):
    engine = FakeEngine(bridge=False)
    with caplog.at_level(logging.INFO, "dogbreed.local"), Run(engine, "r1", "train") as run:
        assert run.choose_network("auto") is None
        run.create("img", ["train"], "algo-1", None, extra_hosts={"algo-1": "127.0.0.1"})
    decisions = [r.getMessage() for r in caplog.records if r.getMessage().startswith("network:")]
    assert len(decisions) == 1 and "host networking" in decisions[0]
    assert engine.calls[0][1]["network_mode"] == "host"


def test_bridge_asked_for_but_refused_is_an_error():
    with (
        Run(FakeEngine(bridge=False), "r1", "train") as run,
        pytest.raises(Exception, match="bridge"),
    ):
        run.choose_network("bridge")


def test_leaving_the_run_stops_and_removes_each_container_by_id_even_on_ctrl_c():
    engine = FakeEngine()
    with pytest.raises(KeyboardInterrupt), Run(engine, "r2", "train", stop_timeout=7) as run:
        run.choose_network("auto")
        for host in ("algo-1", "algo-2"):
            run.start(run.create("img", ["train"], host, "r2"))
        raise KeyboardInterrupt
    assert engine.live == {}
    assert sorted(c for c in engine.calls if c[0] == "stop") == [
        ("stop", "id0", 7),
        ("stop", "id1", 7),
    ]
    assert engine.calls[-1] == ("network-remove", "r2")


def test_run_ids():
    assert check_run_id(new_run_id("serve")).startswith("dogbreed-serve-")
    for bad in ("", "UPPER", "-lead", "a b", "x" * 49):
        with pytest.raises(ConfigError):
            check_run_id(bad)


def test_gpus_are_shared_out_between_hosts():
    assert split_gpus(8, 2) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert split_gpus(3, 2) == [["0"], ["1"]]
    with pytest.raises(ConfigError, match="only 1 GPU"):
        split_gpus(1, 2)


def test_failure_reason_comes_from_the_failure_file(tmp_path):
    assert "exit code 3" in failure_reason(tmp_path, 3)
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("RuntimeError: boom\n  at line 2\n" + "x" * 2000)
    reason = failure_reason(tmp_path, 1)
    assert reason.startswith("RuntimeError: boom at line 2") and len(reason) == 1024


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hp", "epochs"], "expected key=value"),
        (["--hp-json", "[1]"], "--hp-json must be a JSON object"),
        (["--hosts", "0"], "at least 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    (tmp_path / "data" / "train").mkdir(parents=True)
    base = ["local", "train", "--image", "x:1", "--data", tmp_path / "data", "--out", tmp_path]
    proc = run_cli(*base, *args, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_no_engine_is_one_line(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    proc = run_cli(
        *["local", "train", "--image", "x:1", "--data", tmp_path / "data", "--out", tmp_path],
        env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"},
    )
    assert proc.returncode != 0 and "no Docker engine answers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_data_without_train_is_one_line(tmp_path):
    proc = run_cli("local", "train", "--image", "x:1", "--data", tmp_path, "--out", tmp_path / "o")
    assert proc.returncode == 3 and "no train/ directory" in proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["local", "--help"], ["local", "train", "--help"]])
def test_help_loads_neither_docker_nor_the_image_stack(argv):
    code = (
        "import sys\n"
        "from dogbreed.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = {'docker', 'torch', 'numpy', 'PIL', 'onnxruntime', 'requests'}\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    assert "LOADED []" in proc.stdout, proc.stdout[-500:] + proc.stderr[-500:]


@pytest.fixture
def sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as `dogbreed local` arranges it."""
    previous = signal.signal(signal.SIGTERM, local_cmds._interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def signalling(engine: FakeEngine, *signums: int) -> None:
    """Make every stop and remove of a container send these signals to this process."""
    engine.signals = signums


def test_repeated_signals_during_clean_up_do_not_cut_it_short(sigterm_interrupts):
    engine = FakeEngine()
    signalling(engine, signal.SIGTERM, signal.SIGINT, signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), Run(engine, "r3", "train", stop_timeout=1) as run:
        for host in ("algo-1", "algo-2", "algo-3"):
            run.start(run.create("img", ["train"], host, None))
        raise KeyboardInterrupt  # the first Ctrl-C
    assert engine.live == {}
    assert sorted(c[1] for c in engine.calls if c[0] == "remove") == ["id0", "id1", "id2"]
    assert signal.getsignal(signal.SIGTERM) is local_cmds._interrupt  # handlers are back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_during_a_normal_clean_up_is_acted_on_after_it(sigterm_interrupts):
    engine = FakeEngine()
    signalling(engine, signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), Run(engine, "r4", "serve", stop_timeout=1) as run:
        run.start(run.create("img", ["serve"], "endpoint", None))
    assert engine.live == {}


def test_a_failing_removal_does_not_keep_the_other_containers():
    engine = FakeEngine()
    with Run(engine, "r5", "train", stop_timeout=1) as run:
        broken = run.create("img", ["train"], "algo-1", None)
        run.create("img", ["train"], "algo-2", None)
        broken.remove = lambda force=False: (_ for _ in ()).throw(RuntimeError("engine hiccup"))
    assert list(engine.live) == ["id0"]


def train_job(tmp_path: Path, hosts: int, gpus: bool = False) -> tuple[TrainJob, dict]:
    job = TrainJob(
        image="img", hosts=hosts, data=tmp_path, out=tmp_path, hyperparameters={}, gpus=gpus
    )
    trees = {h: tmp_path / "hosts" / h for h in host_names(hosts)}
    return job, trees


def created(engine: FakeEngine) -> list[dict]:
    return [c[1] for c in engine.calls if c[0] == "container-create"]


@pytest.mark.parametrize("hosts,gpus", [(2, False), (3, False), (1, True)])
def test_without_a_bridge_the_hosts_share_a_loopback_only_namespace(tmp_path, hosts, gpus):
    # torchrun's store listens on every address of its namespace, unauthenticated: in a
    # namespace with loopback alone nothing outside the job can reach it.
    engine = FakeEngine(bridge=False)
    job, trees = train_job(tmp_path, hosts, gpus)
    with Run(engine, "r6", "train") as run:
        network = run.choose_network("auto")
        create_hosts(run, job, network, trees, tmp_path, [[]] * hosts)
    first, *others = created(engine)
    assert first["network_mode"] == "none"
    assert first["extra_hosts"] == {h: "127.0.0.1" for h in trees}
    for options in others:  # Docker refuses host names of their own there: they share algo-1's
        assert options["network_mode"] == "container:id0"
        assert options["extra_hosts"] is None and "hostname" not in options
    assert not any(o["network_mode"] == "host" for o in created(engine))
    assert "DOGBREED_MASTER_PORT" not in first["environment"]
    for tree in trees.values():  # gloo and NCCL pinned to loopback
        config = json.loads((tree / "input/config/resourceconfig.json").read_text())
        assert config["network_interface_name"] == "lo"
    removed = [c[1] for c in engine.calls if c[0] == "remove"]
    assert removed[-1] == "id0"  # the namespace's owner goes last


def test_one_cpu_host_without_a_bridge_keeps_host_networking(tmp_path):
    engine = FakeEngine(bridge=False)
    job, trees = train_job(tmp_path, 1)
    with Run(engine, "r7", "train") as run:
        create_hosts(run, job, run.choose_network("host"), trees, tmp_path, [[]])
    (options,) = created(engine)
    assert options["network_mode"] == "host" and options["extra_hosts"] == {"algo-1": "127.0.0.1"}


def test_on_a_bridge_network_each_host_is_its_own_name(tmp_path):
    engine = FakeEngine()
    job, trees = train_job(tmp_path, 2)
    with Run(engine, "r8", "train") as run:
        create_hosts(run, job, run.choose_network("auto"), trees, tmp_path, [[], []])
    for host, options in zip(trees, created(engine), strict=True):
        assert options["hostname"] == host and options["network"] == "r8"
        assert "network_mode" not in options and options["extra_hosts"] is None
        config = json.loads((trees[host] / "input/config/resourceconfig.json").read_text())
        assert config["network_interface_name"] == "eth0"
