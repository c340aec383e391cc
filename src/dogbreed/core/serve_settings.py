"""The serving settings, parsed once at start into one frozen object (`ServeSettings`).

The variables themselves, with their defaults and meanings, are in `settings.SERVE_ENV`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dogbreed.core.settings import (
    BATCH_MAX_PAYLOAD_MB,
    BIND_TO_PORT,
    DRAIN_S,
    JOB_QUEUE,
    MAX_INSTANCES,
    MAX_PAYLOAD_MB,
    MAX_PIXELS,
    MAX_REQUEST_PIXELS,
    MODEL_SERVER_TIMEOUT_SECONDS,
    MODEL_SERVER_VMARGS,
    MODEL_SERVER_WORKERS,
    ORT_SPIN,
    ORT_THREADS,
    PRECISION,
    SHARE_CORES,
    TOP_K,
    WORKER_TIMEOUT_S,
    env_flag,
    env_float,
    env_int,
    env_str,
    precision_choice,
)


@dataclass(frozen=True)
class ServeSettings:
    """Every serving setting, parsed once at start: flags > environment > defaults.

    `dogbreed serve` builds it and hands it down; the model server's workers
    get the same values as variables (`environ()`) and parse them back once
    when they load the model. A bad value is one line before anything starts.
    """

    port: int
    workers: int | None  # None: as many as the memory allows (serve.server.fit_workers)
    timeout_s: int
    max_payload_bytes: int
    max_pixels: int
    max_request_pixels: int
    max_instances: int
    job_queue: int
    top_k: int
    precision: str
    ort_threads: int | None  # None: every usable core
    share_cores: bool
    ort_spin: bool
    worker_timeout_s: float
    drain_s: float
    vmargs: str
    # Natively only this machine reaches the server; SageMaker needs every interface.
    host: str = "127.0.0.1"

    @classmethod
    def read(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        workers: int | None = None,
        precision: str | None = None,
        host: str = "127.0.0.1",
    ) -> ServeSettings:
        env = os.environ if env is None else env
        return cls(
            port=port if port is not None else env_int(BIND_TO_PORT, env, minimum=1),
            workers=workers if workers is not None else _optional_int(MODEL_SERVER_WORKERS, env),
            timeout_s=env_int(MODEL_SERVER_TIMEOUT_SECONDS, env, minimum=1),
            max_payload_bytes=int(payload_mb(env) * 1024 * 1024),
            max_pixels=env_int(MAX_PIXELS, env, minimum=1),
            max_request_pixels=env_int(MAX_REQUEST_PIXELS, env, minimum=1),
            max_instances=env_int(MAX_INSTANCES, env, minimum=1),
            job_queue=env_int(JOB_QUEUE, env, minimum=1),
            top_k=env_int(TOP_K, env, minimum=1),
            precision=precision_choice(precision, env),
            ort_threads=_optional_int(ORT_THREADS, env),
            share_cores=env_flag(SHARE_CORES, env),
            ort_spin=env_flag(ORT_SPIN, env),
            worker_timeout_s=env_float(WORKER_TIMEOUT_S, env, minimum=1),
            drain_s=env_float(DRAIN_S, env, minimum=0),
            vmargs=env_str(MODEL_SERVER_VMARGS, env) or "",
            host=host,
        )

    def environ(self) -> dict[str, str]:
        """The same settings as the variables `read` parses: what the workers get."""
        return {
            BIND_TO_PORT: str(self.port),
            MODEL_SERVER_WORKERS: str(self.workers or ""),
            MODEL_SERVER_TIMEOUT_SECONDS: str(self.timeout_s),
            MAX_PAYLOAD_MB: repr(self.max_payload_bytes / (1024 * 1024)),
            MAX_PIXELS: str(self.max_pixels),
            MAX_REQUEST_PIXELS: str(self.max_request_pixels),
            MAX_INSTANCES: str(self.max_instances),
            JOB_QUEUE: str(self.job_queue),
            TOP_K: str(self.top_k),
            PRECISION: self.precision,
            ORT_THREADS: str(self.ort_threads or ""),
            SHARE_CORES: "1" if self.share_cores else "0",
            ORT_SPIN: "1" if self.ort_spin else "0",
            WORKER_TIMEOUT_S: repr(self.worker_timeout_s),
            DRAIN_S: repr(self.drain_s),
            MODEL_SERVER_VMARGS: self.vmargs,
        }


# Batch Transform's largest MaxPayloadInMB; a job's 0 ("no limit") still gets this bound.
BATCH_PAYLOAD_CAP_MB = 100.0


def payload_mb(env: Mapping[str, str]) -> float:
    """The request size limit in MB: ours when set, else a Batch Transform job's, else 6."""
    if (env.get(MAX_PAYLOAD_MB) or "").strip() or not (env.get(BATCH_MAX_PAYLOAD_MB) or "").strip():
        return env_float(MAX_PAYLOAD_MB, env, minimum=0)
    job = env_float(BATCH_MAX_PAYLOAD_MB, env, minimum=0)
    return min(job, BATCH_PAYLOAD_CAP_MB) if job > 0 else BATCH_PAYLOAD_CAP_MB


def _optional_int(name: str, env: Mapping[str, str]) -> int | None:
    """A whole number of at least 1, or None where the variable is unset."""
    return env_int(name, env, minimum=1) if env_str(name, env) else None
