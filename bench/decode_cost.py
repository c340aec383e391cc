"""What each image of the adversarial corpus costs to decode, before and after the checks.

For every case of tests/support/adversarial.py it prints the request's size, and
for the current code ("after": the endpoint's path, header check of every image
then `eval_input`) and for a faithful "before" reference (plain Pillow open,
convert and the evaluation transform, as serving did without the checks): the
outcome, CPU seconds (the largest per image, and the request's total) and the
peak resident memory above the process's level before the request. Each run is a
fresh child process with a CPU and memory cap, so a bomb cannot hang the bench:

    python bench/decode_cost.py [CASE ...] [--cpu-cap 60] [--mem-cap-mb 4096]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# The corpus lives with the tests' shared helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODES = ("before", "after")


# ---- the child: decode one request's images, measure ------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_before(data: bytes) -> None:
    """Serving without the checks: Pillow's header (its default bomb limit, warning
    silenced) against the pixel limit, libjpeg's draft for a JPEG, full decode,
    EXIF rotation, conversion to RGB, the evaluation transform."""
    import numpy as np
    from PIL import Image, ImageOps

    from dogbreed.core.preprocess import RESIZE, draft_size, eval_array

    max_pixels = 40_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise ValueError("over the pixel limit")
        if img.format == "JPEG":
            img.draft(img.mode, draft_size(img.width, img.height, RESIZE))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            arr = np.array(img, dtype=np.float32)
            top = arr.max() if arr.size else 0.0
            if top > 255:
                arr *= np.float32(255.0 / (65535.0 if top > 4095 else top))
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            img = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255,) * 4), img)
        eval_array(img.convert("RGB"))


def decode_after(data: bytes) -> None:
    from dogbreed.core.preprocess import eval_input

    eval_input(data)


def child(mode: str, path: str) -> None:
    from dogbreed.core.errors import DogbreedError, http_status
    from dogbreed.core.preprocess import image_size

    bodies = [f.read_bytes() for f in sorted(Path(path).iterdir())]
    decode = decode_after if mode == "after" else decode_before
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    base = _status_mb("VmRSS")
    start, per_image, outcome = _cpu_s(), 0.0, "decoded"
    try:
        if mode == "after":
            for body in bodies:  # the endpoint reads every header before decoding any
                image_size(body)
        for body in bodies:
            t0 = _cpu_s()
            try:
                decode(body)
            finally:  # a failed decode's CPU counts too
                per_image = max(per_image, _cpu_s() - t0)
    except DogbreedError as exc:
        outcome = f"{http_status(exc)} {type(exc).__name__}"
    except Exception as exc:  # the "before" reference's failures, whatever Pillow raises
        outcome = f"error {type(exc).__name__}"
    total = _cpu_s() - start
    peak = _status_mb("VmHWM") - base
    gc.collect()
    retained = _status_mb("VmRSS") - base
    result = {"outcome": outcome, "cpu_s": total, "cpu_image_s": max(per_image, 0.0)}
    result |= {"peak_mb": peak, "retained_mb": retained}
    print(json.dumps(result))


# ---- the parent: one capped child per case and mode -------------------------------------------


def run_case(mode: str, bodies: list[bytes], cpu_cap: int, mem_cap_mb: int) -> dict:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, cpu_cap + 1))
        cap = mem_cap_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryDirectory() as folder:
        for i, body in enumerate(bodies):
            (Path(folder) / f"{i:04d}").write_bytes(body)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [sys.executable, __file__, "--child", mode, folder]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=cpu_cap * 3, preexec_fn=limits, env=env
            )
        except subprocess.TimeoutExpired:
            return {"outcome": f"killed: over {cpu_cap * 3} s wall"}
    if proc.returncode != 0:
        usage = "cpu cap" if proc.returncode in (-9, -24, 152) else f"rc {proc.returncode}"
        memory = "MemoryError" in proc.stderr or "Cannot allocate" in proc.stderr
        return {"outcome": f"killed: {'memory cap' if memory else usage}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(result: dict, key: str, fmt: str) -> str:
    return format(result[key], fmt) if key in result else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--cpu-cap", type=int, default=60, help="CPU seconds per child")
    parser.add_argument("--mem-cap-mb", type=int, default=4096, help="address space per child")
    parser.add_argument("--only", choices=MODES, help="run one side only")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    from support.adversarial import CASES, corpus

    names = args.cases or list(CASES)
    modes = [args.only] if args.only else list(MODES)
    header = f"{'case':28} {'bytes':>9} {'n':>3} {'expect':>9} |"
    for mode in modes:
        header += f" {mode + ' outcome':32} {'cpu/img':>7} {'cpu':>6} {'peak MB':>7} |"
    print(header + " retained MB")
    for name in names:
        t0 = time.perf_counter()
        bodies = list(corpus(name))
        made = time.perf_counter() - t0
        size = max(len(b) for b in bodies) if len(bodies) == 1 else sum(len(b) for b in bodies)
        row = f"{name:28} {size:>9} {len(bodies):>3} {CASES[name].expect:>9} |"
        retained = "-"
        for mode in modes:
            r = run_case(mode, bodies, args.cpu_cap, args.mem_cap_mb)
            row += f" {r['outcome'][:32]:32} {_cell(r, 'cpu_image_s', '7.3f')}"
            row += f" {_cell(r, 'cpu_s', '6.2f')} {_cell(r, 'peak_mb', '7.0f')} |"
            retained = _cell(r, "retained_mb", ".0f")
        print(row + f" {retained}   (made in {made:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
