"""Batch Transform throughput: the transform path against the endpoint and the compute limit.

Serves one model natively (`dogbreed serve` on loopback, with the variables a
transform job sets: SAGEMAKER_BATCH=True, SAGEMAKER_MAX_PAYLOAD_IN_MB) and, in the
same run, sends the same photos (~1,000 JPEGs: 500x375 ones and every
--phone-every-th a 4032x3024 phone photo) three ways:

- endpoint c4: one photo a request from 4 client threads (bench/serve_latency.py's
  driver), as an endpoint's clients would;
- transform None: `dogbreed local transform`'s job runner (local/transform.py) over
  a folder of the photos, one file a request, MaxConcurrentTransforms from the
  server's GET /execution-parameters;
- transform Line: the photos as JSON Lines files (100 a file), MultiRecord requests
  packed up to MaxPayloadInMB.

It prints a table: images/s, the ratio to the compute limit (cores / one-thread
model time, ONNX Runtime batch 1, no decode), and where the cores' time went per
image (the client, the `serve` process, the Java front end, the workers, idle),
plus the one-thread decode cost of each photo size, which the compute limit
leaves out. Goal: the transform path at 0.85 of the compute limit or better.

    python bench/transform_throughput.py [--model-dir DIR] [--images 1000] [--precision int8]

Without --model-dir it writes a ResNet-50 model directory (133 classes, random
weights) with its int8 model, as bench/serve_latency.py does.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dogbreed.local.transform import (
    Parameters,
    TransformJob,
    execution_parameters,
    resolve,
    transform,
)
from serve_latency import (  # the endpoint benchmark's helpers serve this one too
    Server,
    bare_compute_ms,
    cpu_seconds,
    drive,
    make_images,
    make_model_dir,
    usable_cores,
)

PER_JSONL_FILE = 100


def make_photos(root: Path, total: int, phone_every: int) -> list[Path]:
    """`total` JPEG files: 500x375 ones, and every phone_every-th a 4032x3024 one."""
    from dogbreed.train.synth import render

    (root / "gen").mkdir()
    small = [p.read_bytes() for p in make_images(root / "gen", 32)]
    rng = np.random.default_rng(1)
    phones = []
    for i in range(4):
        buf = io.BytesIO()
        render(i, 8, rng).resize((4032, 3024)).save(buf, "JPEG", quality=92)
        phones.append(buf.getvalue())
    folder = root / "photos"
    folder.mkdir()
    out = []
    for i in range(total):
        phone = phone_every > 0 and i % phone_every == phone_every - 1
        data = phones[i % len(phones)] if phone else small[i % len(small)]
        path = folder / f"{i:05d}-{'phone' if phone else 'small'}.jpg"
        path.write_bytes(data)
        out.append(path)
    return out


def make_json_lines(root: Path, photos: list[Path]) -> Path:
    folder = root / "jsonl"
    folder.mkdir()
    for start in range(0, len(photos), PER_JSONL_FILE):
        lines = [
            json.dumps({"image": base64.b64encode(p.read_bytes()).decode()})
            for p in photos[start : start + PER_JSONL_FILE]
        ]
        (folder / f"part-{start // PER_JSONL_FILE:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def decode_ms(photo: Path, runs: int = 5) -> float:
    """One thread: bytes -> the model's input array (decode, resize, crop, normalise)."""
    from dogbreed.core.preprocess import eval_input

    data = photo.read_bytes()
    eval_input(data)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        eval_input(data)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def busy_model_ms(model_dir: Path, photo: Path, cores: int, precision: str, runs: int = 60):
    """CPU ms per image of the bare model (batch 1, no HTTP, no decode) while every core
    runs a one-thread session at once, as the workers do under load: on a machine whose
    cores share caches (or are hyperthreads) that is more than one thread alone takes.
    Counted in this process's CPU time, so other processes on the machine do not add."""
    import threading

    from dogbreed.core.preprocess import eval_input
    from dogbreed.serve.predictor import Predictor

    x = eval_input(photo.read_bytes())[None]
    sessions = [Predictor(model_dir, threads=1, precision=precision).session for _ in range(cores)]
    for session in sessions:
        session.run(None, {"input": x})

    def loop(session) -> None:
        for _ in range(runs):
            session.run(None, {"input": x})

    threads = [threading.Thread(target=loop, args=(s,)) for s in sessions]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.process_time() - cpu0) * 1000 / (cores * runs)


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def measured(server: Server, fn) -> tuple[float, int, dict[str, float]]:
    """(wall seconds, images answered, CPU seconds by party) of one run; `others`: what
    processes outside the benchmark and its server took of the cores meanwhile."""
    before, busy = cpu_seconds(server.proc.pid), busy_seconds()
    t0 = time.perf_counter()
    images = fn()
    wall = time.perf_counter() - t0
    after = cpu_seconds(server.proc.pid)
    used = {k: after[k] - before[k] for k in before}
    used["others"] = max(0.0, busy_seconds() - busy - sum(used.values()))
    return wall, images, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--images", type=int, default=1000, help="photos in the job")
    parser.add_argument(
        "--phone-every", type=int, default=50, help="every Nth photo is 4032x3024 (0: none)"
    )
    parser.add_argument("--precision", default="int8", help="fp32 or int8 (default int8)")
    parser.add_argument("--workers", type=int, default=2, help="model server workers")
    parser.add_argument("--payload-mb", type=int, default=20, help="the job's MaxPayloadInMB")
    args = parser.parse_args()
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        photos = make_photos(tmp, args.images, args.phone_every)
        jsonl = make_json_lines(tmp, photos)
        model_dir = args.model_dir or make_model_dir(tmp, photos[:16])
        print(f"setup: {time.perf_counter() - t0:.0f} s", flush=True)
        # The least of three medians: on a shared machine other processes only add to it.
        model_ms = min(
            bare_compute_ms(model_dir, photos[0], 1, [args.precision])[
                f"onnxruntime_{args.precision}"
            ]
            for _ in range(3)
        )
        limit = cores / model_ms * 1000
        busy_ms = busy_model_ms(model_dir, photos[0], cores, args.precision)
        busy_limit = cores / busy_ms * 1000
        small = next(p for p in photos if "small" in p.name)
        phone = next((p for p in photos if "phone" in p.name), None)
        decode = {"small": decode_ms(small), "phone": decode_ms(phone) if phone else 0.0}
        phones = sum("phone" in p.name for p in photos)
        mean_decode = (decode["small"] * (len(photos) - phones) + decode["phone"] * phones) / len(
            photos
        )
        limit_with_decode = cores / (model_ms + mean_decode) * 1000
        env = {
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
            "DOGBREED_PRECISION": args.precision,
            "SAGEMAKER_BATCH": "True",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(args.payload_mb),
        }
        server = Server("dogbreed", model_dir, env)
        rows = []
        try:
            server.wait()
            answer = execution_parameters(server.url)
            print(f"GET /execution-parameters: {answer}", flush=True)
            bodies = [p.read_bytes() for p in photos]
            drive(server.url, bodies[:16], 2, 16)  # warm both workers

            def endpoint() -> int:
                r = drive(server.url, bodies, 4, len(bodies), budget_s=600)
                return r["n"]

            def job(folder: Path, split: str, out: str) -> tuple[TransformJob, Parameters]:
                j = TransformJob(image="-", model=model_dir, input=folder, output=tmp / out,
                                 split_type=split, max_payload_mb=args.payload_mb)  # fmt: skip
                return j, resolve(j, answer)

            def run_job(folder: Path, split: str, out: str, concurrency: int | None = None):
                j, params = job(folder, split, out)
                if concurrency:
                    params = Parameters(params.strategy, params.payload_mb, concurrency)

                def go() -> int:
                    report = transform(server.url, j, params, progress=False)
                    assert not report.failed, report.failed
                    return report.images

                return params, go

            runs = [("endpoint, 1 photo a request, 4 clients", None, endpoint)]
            p_none, go_none = run_job(tmp / "photos", "None", "out-none")
            runs.append((f"transform None, {p_none.concurrency} at a time", p_none, go_none))
            p_c4, go_c4 = run_job(tmp / "photos", "None", "out-none-c4", 4)
            runs.append(("transform None, 4 at a time", p_c4, go_c4))
            p_line, go_line = run_job(jsonl, "Line", "out-line")
            runs.append(
                (f"transform Line MultiRecord, {p_line.concurrency} at a time", p_line, go_line)
            )
            for name, _params, fn in runs:
                wall, n, cpu = measured(server, fn)
                rows.append((name, n, wall, cpu))
                print(f"  done: {name}: {n} images in {wall:.1f} s", flush=True)
        finally:
            server.stop()

    print()
    print(
        f"cores={cores} workers={args.workers} precision={args.precision} images={len(photos)} "
        f"(phone-size {phones}) payload_mb={args.payload_mb}"
    )
    print(
        f"model with every core busy: {busy_ms:.1f} CPU ms per image -> {busy_limit:.1f} "
        "images/s (the same limit measured as the workers run)"
    )
    print(
        f"one-thread model {model_ms:.1f} ms -> compute limit {limit:.1f} images/s; "
        f"decode one thread: 500x375 {decode['small']:.1f} ms, 4032x3024 {decode['phone']:.1f} ms "
        f"-> limit with decode {limit_with_decode:.1f} images/s"
    )
    # Wall-clock images/s count the cores other processes took meanwhile (a shared machine);
    # "on free cores" is what the cores allow at the CPU time this run spent per image,
    # compared with the compute limit, the limit with decoding, and the limit measured
    # with every core busy ("busy").
    head = "| path | images | s | images/s | of limit | on free cores | of limit | +decode | busy |"
    cpu_head = " client | serve | front end | workers | others | idle (CPU ms per image) |"
    print(head + cpu_head)
    print("|" + " --- |" * 15)
    best = 0.0
    for name, n, wall, cpu in rows:
        rate = n / wall if wall else 0.0
        per = {k: v * 1000 / max(n, 1) for k, v in cpu.items()}
        ours = sum(v for k, v in per.items() if k != "others")
        free = cores * 1000 / ours if ours else 0.0
        idle = cores * wall * 1000 / max(n, 1) - sum(per.values())
        if name.startswith("transform"):
            best = max(best, free / limit)
        print(
            f"| {name} | {n} | {wall:.1f} | {rate:.1f} | {rate / limit:.2f} | {free:.1f} | "
            f"{free / limit:.2f} | {free / limit_with_decode:.2f} | {free / busy_limit:.2f} | "
            f"{per['client']:.1f} | "
            f"{per['serve']:.1f} | {per['front_end']:.1f} | {per['workers']:.1f} | "
            f"{per['others']:.1f} | {max(idle, 0.0):.1f} |"
        )
    print(
        f"goal: transform at >= 0.85 of the compute limit: best {best:.2f} on free cores "
        f"({best * limit / busy_limit:.2f} of the limit with every core busy)"
    )


if __name__ == "__main__":
    main()
