"""Endpoint latency and memory: our server against the course handler, one run.

Starts each server in turn on the same model directory and the same MMS stack
(sagemaker-inference toolkit): ours serving the fp32 model, ours serving the
int8 one, then the course handler. It drives each with real JPEGs at
concurrency 1, 2, 4 and 8 from threads on loopback, and prints p50/p95/p99
latency, requests/s, errors and the server's resident memory (Java front end
plus workers) idle and under load. Also prints the bare compute time of each
model (ONNX Runtime fp32 and int8, torch eager; batch 1, no HTTP, no decode)
measured in the same run.

    python bench/serve_latency.py [--model-dir DIR] [--requests 40] [--precisions fp32,int8]

Without --model-dir it writes a ResNet-50 model directory (133 classes, random
weights: latency does not depend on their values) to a temporary folder, with
its int8 model calibrated on the benchmark's images.
"""

from __future__ import annotations

import argparse
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

    The toolkit launches MMS detached from its own process, and allows one MMS
    per machine; it finds it by this class name, and so do we.
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
                "from pathlib import Path; from dogbreed.serve.server import ServeOptions, "
                f"serve; serve(Path({str(model_dir)!r}), ServeOptions(port={self.port}, "
                "handler_service='course_handler'))",
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
    }


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
            result["levels"][c] = drive(server.url, images, c, requests_per_level * max(1, c // 2))
            stop.set()
            sampler.join()
            result["levels"][c]["rss_peak_mb"] = peak[0]
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
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp))
        images = [p.read_bytes() for p in paths]
        model_dir = args.model_dir or make_model_dir(Path(tmp), paths)
        bare = bare_compute_ms(model_dir, paths[0], cores, precisions)
        print(
            f"cores={cores} workers={args.workers} model={model_dir} "
            f"jpeg_kb={np.mean([len(b) for b in images]) / 1024:.0f}"
        )
        print("bare_compute_ms " + " ".join(f"{k}={v:.1f}" for k, v in bare.items()))
        env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)}
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
        course = results["course"]["levels"]
        for p in precisions:
            ours = results[f"dogbreed-{p}"]["levels"]
            print(
                f"ratio {p}: p50_c1_over_bare_ort={ours[1]['p50'] / bare[f'onnxruntime_{p}']:.2f} "
                f"throughput_c4_vs_course={ours[4]['rps'] / course[4]['rps']:.2f}x "
                f"p50_c1_vs_course={course[1]['p50'] / ours[1]['p50']:.2f}x faster"
            )


if __name__ == "__main__":
    main()
