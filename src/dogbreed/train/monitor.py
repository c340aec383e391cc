"""Resource-usage sampler: CPU, memory and GPU through a run, to CSV.

On EC2 people watched CloudWatch's CPU graph to see whether training was alive;
this record (and its plot) answers that for every run, wherever it ran.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import psutil
import torch

FIELDS = (
    "t_s",
    "cpu_percent",
    "process_cpu_percent",
    "rss_mb",
    "memory_percent",
    "gpu_util_percent",
    "gpu_memory_mb",
)


def _gpu_sample() -> tuple[float | str, float | str]:
    if not torch.cuda.is_available():
        return "", ""
    memory = torch.cuda.memory_reserved() / 2**20
    try:
        util: float | str = float(torch.cuda.utilization())
    except Exception:  # needs NVML (nvidia-ml-py); memory alone is still worth having
        util = ""
    return util, round(memory, 1)


class ResourceMonitor:
    """Samples every `interval` seconds in a daemon thread until stopped."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-monitor", daemon=True)
        self._proc = psutil.Process()
        self._start = time.monotonic()

    def __enter__(self) -> ResourceMonitor:
        psutil.cpu_percent(None)  # the first call only primes the counter
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return [self._proc]

    def sample(self) -> dict:
        cpu_proc, rss = 0.0, 0
        for p in self._tree():
            try:
                cpu_proc += p.cpu_percent(None)
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        util, gpu_mem = _gpu_sample()
        return {
            "t_s": round(time.monotonic() - self._start, 2),
            "cpu_percent": psutil.cpu_percent(None),
            "process_cpu_percent": round(cpu_proc, 1),
            "rss_mb": round(rss / 2**20, 1),
            "memory_percent": psutil.virtual_memory().percent,
            "gpu_util_percent": util,
            "gpu_memory_mb": gpu_mem,
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.rows.append(self.sample())

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
