"""Endpoint latency and memory: our server against the course handler, one run.

Starts each server in turn on the same model directory and the same MMS stack
(`dogbreed serve` starting multi-model-server): ours serving the fp32 model, ours serving the
int8 one, then the course handler. It drives each with real JPEGs at
concurrency 1, 2, 4 and 8 from threads on loopback, and prints p50/p95/p99
latency, requests/s, errors and the server's resident memory (Java front end
plus workers) idle and under load. Also prints the bare compute time of each
model (ONNX Runtime fp32 and int8, torch eager; batch 1, no HTTP, no decode)
measured in the same run. At each level it also splits the cores' time per
answered request: the clients (this process, on the same cores), the `serve`
process, the Java front end, the workers, and what stayed idle.

    python bench/serve_latency.py [--model-dir DIR] [--requests 40] [--precisions fp32,int8]
    python bench/serve_latency.py --soak-minutes 10 [--soak-concurrency 8]

It also serves one phone-size photo (4032x3024 JPEG) against a 500x375 one on
the same server (p50 ratio, concurrency 1), and checks the speed goals: c1 p50
within 5 ms of the bare compute, c4 throughput at least 0.85 of the compute
limit (cores / one-thread compute time).

--soak-minutes runs the int8 server alone at a fixed concurrency for that long
and prints, every 30 s, requests, errors, p50/p99 and resident memory, then the
memory drift from the first window to the last (goal: 0 errors, under 5%).

Without --model-dir it writes a ResNet-50 model directory (133 classes, random
weights: latency does not depend on their values) to a temporary folder, with
its int8 model calibrated on the benchmark's images.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests

from dogbreed.core.errors import EndpointError
from dogbreed.serve.client import wait_until_healthy

# The test suite's server helpers (free ports, a clean stop) serve the benchmark too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.servers import free_port, stop_server

HERE = Path(__file__).resolve().parent
LEVELS = (1, 2, 4, 8)
MMS_CLASS = "com.amazonaws.ml.mms.ModelServer"


def make_model_dir(root: Path, images: list[Path]) -> Path:
    from dogbreed.train.export import write_model_dir
    from dogbreed.train.models import build_model
    from dogbreed.train.quantize import export_int8
    from dogbreed.train.synth import class_folder

    classes = [class_folder(i) for i in range(133)]
    model = build_model("resnet50", len(classes), "none", frozen=True).eval()
    model_dir = root / "model"
    write_model_dir(model, model_dir, classes, "resnet50", {}, {})
    samples = [(p, 0) for p in images]  # random weights: no accuracy gate to pass
    export_int8(model_dir, samples, samples, max_drop=1.0)
    return model_dir


def make_images(root: Path, n: int = 16) -> list[Path]:
    from dogbreed.train.synth import render

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = render(i % 8, 8, rng).resize((500, 375))
        path = root / f"img{i}.jpg"
        img.save(path, quality=90)
        out.append(path)
    return out


def mms_rss_mb() -> float:
    """Resident memory of the MMS Java front end and all its Python workers.

    The front end is found by its main class: one server runs at a time here.
    """
    total = 0
    for p in psutil.process_iter(["cmdline"]):
        if MMS_CLASS in (p.info["cmdline"] or []):
            try:
                total += p.memory_info().rss
                total += sum(c.memory_info().rss for c in p.children(recursive=True))
            except psutil.Error:
                continue
    return total / 2**20


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each party on this machine: the
    benchmark's clients (this process), the `serve` process (its supervisor), the
    Java front end and the Python workers. The clients share the cores with the server."""

    def used(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
            return times.user + times.system
        except psutil.Error:  # gone since it was listed
            return 0.0

    out = {"client": used(psutil.Process()), "serve": used(psutil.Process(server_pid))}
    out["front_end"] = out["workers"] = 0.0
    for p in psutil.process_iter(["cmdline"]):
        if MMS_CLASS in (p.info["cmdline"] or []):
            out["front_end"] += used(p)
            with contextlib.suppress(psutil.Error):
                out["workers"] += sum(used(c) for c in p.children(recursive=True))
    return out


class Server:
    def __init__(self, kind: str, model_dir: Path, env_extra: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        env = {**os.environ, "LOG_LOCATION": str(self.logdir), **env_extra}
        if kind == "dogbreed":
            cmd = [
                sys.executable,
                "-m",
                "dogbreed",
                "serve",
                "--model-dir",
                str(model_dir),
                "--port",
                str(self.port),
            ]
        else:
            env["PYTHONPATH"] = f"{HERE}{os.pathsep}{env.get('PYTHONPATH', '')}"
            cmd = [
                sys.executable,
                "-c",
                "from pathlib import Path; from dogbreed.core.serve_settings import "
                "ServeSettings; from dogbreed.serve.server import serve; "
                f"serve(Path({str(model_dir)!r}), ServeSettings.read(port={self.port}), "
                "handler='course_handler')",
            ]
        with (self.logdir / "out.log").open("w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait(self, timeout: float = 180) -> float:
        try:
            return wait_until_healthy(self.url, timeout, alive=lambda: self.proc.poll() is None)
        except EndpointError as exc:
            raise RuntimeError(f"{exc}\n{(self.logdir / 'out.log').read_text()[-2000:]}") from None

    def rss_mb(self) -> float:
        return mms_rss_mb()

    def stop(self) -> None:
        stop_server(self.proc)


def drive(
    url: str, images: list[bytes], concurrency: int, total: int, budget_s: float = 120
) -> dict:
    """Send `total` requests from `concurrency` threads (bounded by budget_s)."""
    latencies, errors = [], 0
    lock = threading.Lock()
    deadline = time.monotonic() + budget_s
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        session = requests.Session()
        for i in counter:
            if time.monotonic() > deadline:
                return
            body = images[i % len(images)]
            t0 = time.perf_counter()
            try:
                r = session.post(
                    f"{url}/invocations",
                    data=body,
                    timeout=60,
                    headers={"Content-Type": "image/jpeg"},
                )
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt) if ok else None
                errors += 0 if ok else 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - start
    q = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99]) if latencies else [0, 0, 0]
    return {
        "p50": q[0],
        "p95": q[1],
        "p99": q[2],
        "rps": len(latencies) / wall,
        "errors": errors,
        "n": len(latencies),
        "wall_s": wall,
    }


def make_phone_photo(root: Path) -> Path:
    """A 12-megapixel JPEG (4032x3024, a phone camera's size) of a rendered scene."""
    from dogbreed.train.synth import render

    img = render(3, 8, np.random.default_rng(1)).resize((4032, 3024))
    path = root / "phone.jpg"
    img.save(path, quality=92)
    return path


def soak(model_dir: Path, images: list[bytes], minutes: float, concurrency: int, env) -> None:
    """The int8 server at a fixed concurrency for `minutes`; a line per 30 s window."""
    server = Server("dogbreed", model_dir, env | {"DOGBREED_PRECISION": "int8"})
    try:
        server.wait()
        drive(server.url, images, 2, 8)
        window_s, rss, total_errors, total = 30.0, [], 0, 0
        windows = max(1, round(minutes * 60 / window_s))
        print(f"soak: concurrency={concurrency} minutes={minutes} windows={windows} of 30 s")
        for i in range(windows):
            r = drive(server.url, images, concurrency, 10**9, budget_s=window_s)
            rss.append(server.rss_mb())
            total_errors += r["errors"]
            total += r["n"] + r["errors"]
            print(
                f"  t={int((i + 1) * window_s):4d}s n={r['n']} errors={r['errors']} "
                f"p50_ms={r['p50']:.1f} p99_ms={r['p99']:.1f} rps={r['rps']:.1f} "
                f"rss_mb={rss[-1]:.0f}",
                flush=True,
            )
        drift = (rss[-1] - rss[0]) / rss[0] * 100
        print(
            f"soak: requests={total} errors={total_errors} rss_first_mb={rss[0]:.0f} "
            f"rss_last_mb={rss[-1]:.0f} rss_max_mb={max(rss):.0f} drift_pct={drift:+.1f}"
        )
    finally:
        server.stop()


def photo_ratio(model_dir: Path, small: bytes, phone: bytes, env, runs: int = 30) -> dict:
    """c1 p50 of a 12 MP photo and of a 500x375 one on the same int8 server."""
    server = Server("dogbreed", model_dir, env | {"DOGBREED_PRECISION": "int8"})
    try:
        server.wait()
        drive(server.url, [small], 2, 8)
        small_r = drive(server.url, [small], 1, runs)
        phone_r = drive(server.url, [phone], 1, runs)
        return {"small": small_r["p50"], "phone": phone_r["p50"]}
    finally:
        server.stop()


def bare_compute_ms(
    model_dir: Path, image: Path, threads: int, precisions: list[str], runs: int = 30
) -> dict[str, float]:
    """p50 ms of batch-1 inference on `image`, compute only: ONNX Runtime per precision,
    torch eager."""
    import torch

    from dogbreed.core.modeldir import read_metadata
    from dogbreed.core.preprocess import eval_array, open_image
    from dogbreed.serve.predictor import Predictor
    from dogbreed.train.models import build_model

    x = eval_array(open_image(image))[None]
    meta = read_metadata(model_dir)
    net = build_model(meta["arch"], meta["num_classes"], "none", frozen=True).eval()
    net.load_state_dict(torch.load(model_dir / "model.pth", weights_only=True))
    torch.set_num_threads(threads)
    calls = {}
    for precision in precisions:
        session = Predictor(model_dir, threads=threads, precision=precision).session
        calls[f"onnxruntime_{precision}"] = lambda s=session: s.run(None, {"input": x})
    calls["torch_eager"] = lambda: net(torch.from_numpy(x))
    out = {}
    for name, fn in calls.items():
        with torch.no_grad():
            for _ in range(3):
                fn()
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(times)
    return out


def bench_server(
    kind: str, model_dir: Path, images: list[bytes], requests_per_level: int, env: dict[str, str]
) -> dict:
    server = Server(kind, model_dir, env)
    try:
        cold = server.wait()
        drive(server.url, images, 2, 8)  # warm both workers
        time.sleep(1)
        result = {"cold_start_s": cold, "rss_idle_mb": server.rss_mb(), "levels": {}}
        for c in LEVELS:
            peak = [0.0]
            stop = threading.Event()

            def sample(stop=stop, peak=peak) -> None:
                while not stop.wait(0.25):
                    peak[0] = max(peak[0], server.rss_mb())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            before = cpu_seconds(server.proc.pid)
            level = drive(server.url, images, c, requests_per_level * max(1, c // 2))
            after = cpu_seconds(server.proc.pid)
            stop.set()
            sampler.join()
            level["rss_peak_mb"] = peak[0]
            # Where the cores went, per answered request (ms): who uses the capacity.
            n = max(1, level["n"])
            level["cpu_ms"] = {k: (after[k] - before[k]) / n * 1000 for k in before}
            level["cpu_ms"]["available"] = level["wall_s"] * usable_cores() / n * 1000
            result["levels"][c] = level
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=40, help="requests at concurrency 1")
    parser.add_argument("--workers", type=int, default=2, help="model server workers")
    parser.add_argument(
        "--precisions",
        default="fp32,int8",
        help="which of our models to serve, comma-separated (default fp32,int8)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0,
        help="instead of the comparison: the int8 server at --soak-concurrency for this long",
    )
    parser.add_argument("--soak-concurrency", type=int, default=8, help="clients in the soak")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp))
        images = [p.read_bytes() for p in paths]
        model_dir = args.model_dir or make_model_dir(Path(tmp), paths)
        env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)}
        if args.soak_minutes > 0:
            soak(model_dir, images, args.soak_minutes, args.soak_concurrency, env)
            return
        bare = bare_compute_ms(model_dir, paths[0], cores, precisions)
        one_thread = bare_compute_ms(model_dir, paths[0], 1, precisions)
        print(
            f"cores={cores} workers={args.workers} model={model_dir} "
            f"jpeg_kb={np.mean([len(b) for b in images]) / 1024:.0f}"
        )
        print("bare_compute_ms " + " ".join(f"{k}={v:.1f}" for k, v in bare.items()))
        runs = [(f"dogbreed-{p}", "dogbreed", {"DOGBREED_PRECISION": p}) for p in precisions]
        results = {}
        for name, kind, extra in [*runs, ("course", "course", {})]:
            results[name] = r = bench_server(kind, model_dir, images, args.requests, env | extra)
            print(
                f"{name}: cold_start_s={r['cold_start_s']:.1f} rss_idle_mb={r['rss_idle_mb']:.0f}"
            )
            for c, lv in r["levels"].items():
                print(
                    f"  {name} concurrency={c} p50_ms={lv['p50']:.1f} p95_ms={lv['p95']:.1f} "
                    f"p99_ms={lv['p99']:.1f} rps={lv['rps']:.2f} errors={lv['errors']} "
                    f"n={lv['n']} rss_peak_mb={lv['rss_peak_mb']:.0f}"
                )
                cpu = lv["cpu_ms"]
                idle = cpu["available"] - sum(v for k, v in cpu.items() if k != "available")
                print(
                    "    cpu_ms_per_request "
                    + " ".join(f"{k}={v:.1f}" for k, v in cpu.items() if k != "available")
                    + f" idle={idle:.1f} (of {cpu['available']:.1f} the cores had)"
                )
        course = results["course"]["levels"]
        for p in precisions:
            ours = results[f"dogbreed-{p}"]["levels"]
            print(
                f"ratio {p}: p50_c1_over_bare_ort={ours[1]['p50'] / bare[f'onnxruntime_{p}']:.2f} "
                f"throughput_c4_vs_course={ours[4]['rps'] / course[4]['rps']:.2f}x "
                f"p50_c1_vs_course={course[1]['p50'] / ours[1]['p50']:.2f}x faster"
            )
            limit = cores / one_thread[f"onnxruntime_{p}"] * 1000  # requests/s the CPU allows
            over = ours[1]["p50"] - bare[f"onnxruntime_{p}"]
            print(
                f"goals {p}: c1_p50_minus_bare_ms={over:.1f} (goal <= 5) "
                f"compute_limit_rps={limit:.1f} c4_over_limit={ours[4]['rps'] / limit:.2f} "
                "(goal >= 0.85)"
            )
        phone = make_phone_photo(Path(tmp)).read_bytes()
        if "int8" in precisions:
            r = photo_ratio(model_dir, images[0], phone, env)
            print(
                f"photo int8 c1: 500x375_p50_ms={r['small']:.1f} 4032x3024_p50_ms={r['phone']:.1f} "
                f"ratio={r['phone'] / r['small']:.2f} (goal <= 1.3) phone_kb={len(phone) // 1024}"
            )


if __name__ == "__main__":
    main()
