"""What a million images cost in each of SageMaker's inference modes.

The figures are the measured throughput of the serve image (docs/benchmarks.md,
bench/transform_throughput.py and bench/serve_latency.py, one 2-core machine
like an ml.c6i.large) priced with the dated table in up.py. docs/aws/modes.md
shows `cost_table()`; a unit test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from dogbreed.aws.up import HOURS_A_MONTH, INSTANCE_PER_HOUR, SERVERLESS_PER_GB_SECOND

MEASURED_ON = "2026-12-03"
INSTANCE = "ml.c6i.large"  # 2 vCPUs with VNNI: the int8 model, as on the machine measured
# Images a second of one 2-core instance, int8 ResNet-50, 1,000 photos (2% phone-size):
ENDPOINT_IMAGES_PER_S = 89.5  # an endpoint kept busy by 4 clients at once
TRANSFORM_IMAGES_PER_S = 95.6  # Batch Transform, JSON Lines in MultiRecord batches
# A serverless request is billed for its duration: one request alone, fp32 (serverless
# hosts are not guaranteed VNNI, so `auto` may pick fp32), decode and server included.
SERVERLESS_MS_PER_IMAGE = 33.6
SERVERLESS_MB = 2048
# Assumptions, not measurements (SageMaker bills them; their length varies):
TRANSFORM_STARTUP_MIN = 5.0  # a transform job's instances starting, billed per job
ASYNC_TAIL_MIN = 20.0  # an async instance idling after a burst until it scales in to zero
MONTHLY_IMAGES = 100_000  # the small volume of the table's last column
BURSTS_A_MONTH = 30  # a small volume arriving as one burst a day


@dataclass(frozen=True)
class Mode:
    name: str
    busy_per_million: float  # $ per million images with the capacity kept busy
    small_month: float  # $ for MONTHLY_IMAGES in a month (BURSTS_A_MONTH bursts or jobs)


def _per_million(images_per_s: float, per_hour: float) -> float:
    return per_hour / (images_per_s * 3600) * 1e6


def cost_table() -> list[Mode]:
    """Real-time, serverless, asynchronous (scaling to zero) and batch, on INSTANCE."""
    hourly = INSTANCE_PER_HOUR[INSTANCE]
    endpoint = _per_million(ENDPOINT_IMAGES_PER_S, hourly)
    transform = _per_million(TRANSFORM_IMAGES_PER_S, hourly)
    serverless = SERVERLESS_MS_PER_IMAGE / 1000 * SERVERLESS_MB / 1024 * SERVERLESS_PER_GB_SECOND
    serverless *= 1e6
    small = MONTHLY_IMAGES / 1e6
    idle = BURSTS_A_MONTH * hourly / 60
    return [
        Mode("real-time", endpoint, hourly * HOURS_A_MONTH),  # one instance all month
        Mode("serverless", serverless, serverless * small),
        Mode("asynchronous", endpoint, endpoint * small + idle * ASYNC_TAIL_MIN),
        Mode("batch transform", transform, transform * small + idle * TRANSFORM_STARTUP_MIN),
    ]
