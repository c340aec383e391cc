"""torch.distributed set-up and the few collectives training needs.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is one process and
every helper is a no-op, so the training loop has a single code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dogbreed.core import settings


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # A gloo group with a long timeout for the one wait that is long on purpose:
    # the other ranks at the end, while rank 0 exports and quantizes the model.
    final_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_kind: str) -> Dist:
    """Join the process group torchrun prepared; gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    timeout = datetime.timedelta(seconds=settings.env_int(settings.DIST_TIMEOUT, minimum=1))
    dist.init_process_group(backend=backend, timeout=timeout)
    final_wait = datetime.timedelta(seconds=settings.env_int(settings.FINAL_WAIT_S, minimum=1))
    final_group = dist.new_group(backend="gloo", timeout=final_wait)
    return Dist(rank=rank, world_size=world, local_rank=local, final_group=final_group)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(d: Dist, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (in place, returned for chaining)."""
    if d.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_max(d: Dist, value: float) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's object on every rank (e.g. the checkpoint only rank 0 can read)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def long_barrier(d: Dist) -> None:
    """Wait for every rank under DOGBREED_FINAL_WAIT_S: for a step that is long on
    purpose and uneven between ranks (one encodes a feature bank the others loaded)."""
    if d.enabled:
        dist.barrier(group=d.final_group)


def all_max_int(d: Dist, value: int) -> int:
    """The largest of the ranks' values (on the gloo group: no device tensor needed)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.final_group)
    return int(t.item())


def final_barrier(d: Dist) -> None:
    """Wait for rank 0's outputs (export, int8 calibration: minutes on a large model)
    under DOGBREED_FINAL_WAIT_S, not the collective timeout that catches dead peers."""
    if d.enabled:
        dist.barrier(group=d.final_group)
