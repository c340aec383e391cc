"""Feature bank: a frozen backbone's features computed once, the head trained from them.

A frozen backbone gives the same features for the same pixels every epoch, so
running it every epoch (the course loop, `--feature-bank off`) spends nearly all
of a run's time recomputing them. Here each training image is encoded in K
augmented views (RandomResizedCrop + flip, drawn exactly as the loop draws
them) and each validation and test image once with the evaluation transform;
every epoch then trains the head on one randomly drawn view per image, from
features held on the training device in half precision.

Shapes, per rank: training features (N, K, F) fp16 for the N decodable images
of this rank's shard (every world_size-th image), K views, F backbone features
(2048 for ResNet-50); validation and test features (M, F) fp16; targets (N,)
int64. Memory: (N x K + M_valid + M_test) x F x 2 bytes on the device, plus the
same again on disk: dogImages (6,680 + 835 + 836 images), ResNet-50, K = 2
(the default): (13,360 + 1,671) x 2048 x 2 B = 62 MB for one process; K = 8:
226 MB. A bank that would take over half of the device's free memory is
refused before encoding (fewer --views). While encoding, the CPU holds the
same again once more.

K, the views per image, was chosen by measurement: a ResNet-18 trained on one
synthetic set and frozen for another with other classes, 10 epochs, best
val_acc (mean of seeds 0 and 1): images every epoch 0.608, K = 1 0.600,
K = 2 0.633 (seed 0 alone: K = 4 0.617, K = 8 0.633, images 0.583). Encoding
costs K passes over the training images against the loop's one per epoch.

The bank is kept on local disk beside the checkpoint directory (never inside
it: SageMaker syncs that one to S3, and a bank is far bigger than a head
checkpoint), under a digest of everything its values depend on, so a killed
and restarted run loads it instead of encoding again, and any change of data,
backbone, views, seed, precision or world size encodes a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dogbreed.core.errors import ConfigError
from dogbreed.train import checkpoint, distributed
from dogbreed.train.data import Splits
from dogbreed.train.device import autocast
from dogbreed.train.distributed import Dist
from dogbreed.train.loop import (
    EvalResult,
    Runtime,
    make_loader,
    score,
    to_device,
    train_step,
)
from dogbreed.train.models import Classifier

log = logging.getLogger(__name__)

FORMAT = 1  # bumped whenever what a bank file holds or how it is computed changes
BANK_DIR = "feature-bank"  # beside the checkpoint directory
EVAL_BATCH = 4096  # features per evaluation step: (4096, F) fp16 is 16 MB for F = 2048
# The most of the device's free memory a bank may take (the rest: model, batches, encoding).
MEMORY_SHARE = 0.5


@dataclass
class Split:
    """One split's features of this rank's shard, on the training device."""

    features: torch.Tensor  # (N, K, F) training views, or (N, F) evaluation; fp16
    targets: torch.Tensor  # (N,) int64 class indices
    dropped: int  # images of the shard that could not be decoded


@dataclass
class FeatureBank:
    train: Split
    valid: Split
    test: Split | None
    steps_images: int  # images per rank per epoch: the largest shard (ranks step in lockstep)

    @property
    def nbytes(self) -> int:
        splits = [s for s in (self.train, self.valid, self.test) if s is not None]
        return sum(s.features.nbytes + s.targets.nbytes for s in splits)


def wanted(cfg_mode: str, frozen: bool) -> bool:
    """Whether this run trains from a bank: auto and on use one for a frozen backbone."""
    if cfg_mode == "on" and not frozen:
        raise ConfigError(
            "--feature-bank on needs a frozen backbone (not --unfreeze, not --weights none)"
        )
    return frozen and cfg_mode != "off"


def location(checkpoint_dir: Path) -> Path:
    """CHECKPOINT_DIR/../feature-bank: local like the checkpoints, not synced with them."""
    return checkpoint_dir.resolve().parent / BANK_DIR


def digest(rt: Runtime, splits: Splits) -> str:
    """sha256 over what the bank's values depend on: data (paths, sizes, times), classes,
    arch, backbone weights, views, seed, precision, pipeline and world size."""
    cfg = rt.cfg
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": FORMAT,
                "arch": cfg.arch,
                "weights": _weights_identity(cfg.arch, cfg.weights),
                "views": cfg.views,
                "seed": cfg.seed,
                "precision": cfg.precision,
                "pipeline": cfg.pipeline,
                "world_size": rt.dist.world_size,
                "classes": splits.classes,
            },
            sort_keys=True,
        ).encode()
    )
    for name, samples in (("train", splits.train), ("valid", splits.valid), ("test", splits.test)):
        h.update(name.encode())
        for path, target in samples:
            stat = path.stat()
            h.update(f"{path}\0{target}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _weights_identity(arch: str, weights: str) -> str:
    """A file's content hash; torchvision's weights by their URL (which names their hash)."""
    if weights == "imagenet":
        return torchvision.models.get_model_weights(arch).DEFAULT.url
    if weights == "none":
        return "none"
    h = hashlib.sha256()
    with open(weights, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def planned_bytes(rt: Runtime, splits: Splits, features: int) -> int:
    """Bytes this rank's bank takes on the device: (N x K + M_valid + M_test) x F x 2."""
    d = rt.dist
    rows = len(splits.train[d.rank :: d.world_size]) * rt.cfg.views
    rows += len(splits.valid[d.rank :: d.world_size]) + len(splits.test[d.rank :: d.world_size])
    return rows * (features * 2 + 8)  # fp16 features and an int64 target per row


def available_bytes(device: torch.device) -> int:
    """Free memory of the device the bank lives on (a GPU's, or the machine's)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_fits(rt: Runtime, splits: Splits, features: int) -> int:
    """The planned size; ConfigError when it would take over MEMORY_SHARE of free memory."""
    need, free = planned_bytes(rt, splits, features), available_bytes(rt.device)
    if need > MEMORY_SHARE * free:
        raise ConfigError(
            f"the feature bank needs {need / 1e9:.1f} GB on {rt.device}, over "
            f"{MEMORY_SHARE:.0%} of the {free / 1e9:.1f} GB free: pass fewer --views "
            "(or --feature-bank off)"
        )
    return need


def load_or_build(rt: Runtime, model: Classifier, splits: Splits, workers: int) -> FeatureBank:
    """This rank's bank: loaded where a complete one was kept, else encoded and kept.

    Every rank encodes when any rank lacks its file, so no rank waits on a
    collective with the short timeout while another encodes.
    """
    d = rt.dist
    check_fits(rt, splits, model.head.in_features)
    path = location(rt.cfg.checkpoint_dir) / digest(rt, splits) / f"rank{d.rank}of{d.world_size}.pt"
    stored = _load(path, rt.device)
    missing = distributed.all_max_int(d, int(stored is None))
    start = time.perf_counter()
    if missing:
        stored = _build(rt, model, splits, workers)
        checkpoint.save(path, stored)  # atomic: a kill leaves no half file
        stored = {k: v.to(rt.device) if torch.is_tensor(v) else v for k, v in stored.items()}
    distributed.long_barrier(d)
    bank = _assemble(d, stored)
    verb = "encoded" if missing else "loaded"
    log.info(
        "rank=%d feature bank %s in %.1f s: %d training images x %d views, %d valid, %d test, "
        "%.1f MB on %s; kept in %s",
        d.rank,
        verb,
        time.perf_counter() - start,
        bank.train.features.shape[0],
        bank.train.features.shape[1],
        bank.valid.features.shape[0],
        bank.test.features.shape[0] if bank.test else 0,
        bank.nbytes / 1e6,
        rt.device,
        path.parent,
    )
    return bank


def _load(path: Path, device: torch.device) -> dict[str, Any] | None:
    """A kept bank, or None when there is none or it cannot be read (then it is encoded).

    Tensors and plain types only (weights_only): a bank runs no code when read.
    """
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign: encoding again is always safe
        log.warning("feature bank %s unreadable (%s); encoding it again", path, type(exc).__name__)
        return None
    if not isinstance(stored, dict) or "train_features" not in stored:
        return None
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in stored.items()}


def _assemble(d: Dist, stored: dict[str, Any]) -> FeatureBank:
    def split(name: str) -> Split:
        return Split(
            stored[f"{name}_features"], stored[f"{name}_targets"], int(stored[f"{name}_dropped"])
        )

    train = split("train")
    test = split("test") if "test_features" in stored else None
    steps_images = distributed.all_max_int(d, train.features.shape[0])
    return FeatureBank(train, split("valid"), test, steps_images)


# --- Encoding -------------------------------------------------------------------------


def _build(rt: Runtime, model: Classifier, splits: Splits, workers: int) -> dict[str, Any]:
    """{split}_features / _targets / _dropped of this rank's shard, on the CPU."""
    d, views = rt.dist, rt.cfg.views
    model.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics
    train = splits.train[d.rank :: d.world_size]
    out: dict[str, Any] = {}
    feats, ok = None, torch.ones(len(train), dtype=torch.bool)
    for view in range(views):
        f, seen = _encode(rt, model, train, True, workers, view)  # (n, F), (n,) positions
        if feats is None:
            feats = torch.zeros(len(train), views, f.shape[1], dtype=torch.float16)
        hit = torch.zeros(len(train), dtype=torch.bool)
        hit[seen] = True
        ok &= hit  # an image counts only when every view of it decoded
        feats[seen, view] = f
    keep = ok.nonzero().squeeze(1)
    if feats is None:  # an empty shard
        feats = torch.zeros(len(train), views, model.head.in_features, dtype=torch.float16)
    out["train_features"] = feats[keep]  # (N, K, F)
    out["train_targets"] = torch.tensor([train[i][1] for i in keep.tolist()], dtype=torch.long)
    out["train_dropped"] = len(train) - len(keep)
    for name, samples in (("valid", splits.valid), ("test", splits.test)):
        if not samples:
            continue
        shard = samples[d.rank :: d.world_size]  # as the evaluation loaders shard
        f, seen = _encode(rt, model, shard, False, workers, 0)
        out[f"{name}_features"] = f
        out[f"{name}_targets"] = torch.tensor([shard[i][1] for i in seen.tolist()])
        out[f"{name}_dropped"] = len(shard) - len(seen)
    return out


@torch.no_grad()
def _encode(
    rt: Runtime,
    model: Classifier,
    samples: Sequence[tuple[Path, int]],
    train: bool,
    workers: int,
    view: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, F) fp16 on the CPU of the decodable samples, and their positions (n,).

    The loader is the training pipeline's own (same decode, crop and flip), run on
    this rank's shard alone; each sample carries its position as its target so
    that views line up whatever the order and whichever images fail to decode.
    """
    numbered = [(path, i) for i, (path, _) in enumerate(samples)]
    local = Runtime(rt.cfg, Dist(), rt.device)  # the shard is already this rank's
    feats: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    # Augmentation draws are keyed per image (train.draws) from a seed of this view and
    # rank; the global RNG (the DataLoader draws worker seeds from it) is left as it was.
    with torch.random.fork_rng(devices=[]):
        seed = _view_seed(rt.cfg.seed, rt.dist.rank, view)
        loader = make_loader(local, numbered, train, workers, epoch=view, seed=seed)
        for images, numbers, _dropped in loader:
            if len(numbers) == 0:
                continue
            images = to_device(images, rt.device, rt.cfg.channels_last)
            with autocast(rt.device, rt.cfg.precision):
                f = model.features(images)  # (B, F)
            feats.append(f.to(torch.float16).cpu())
            positions.append(numbers.cpu())
    if not feats:
        return torch.zeros(0, model.head.in_features, dtype=torch.float16), torch.zeros(
            0, dtype=torch.long
        )
    return torch.cat(feats), torch.cat(positions)


def _view_seed(seed: int, rank: int, view: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + view) % 2**63


# --- Training and evaluation from the bank --------------------------------------------


def epoch_order(
    bank: FeatureBank, seed: int, rank: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, views), each (steps_images,): this epoch's shuffled rows and the view drawn
    for each; a shard smaller than the largest repeats rows from its start, as a
    DistributedSampler pads, so that every rank takes the same number of steps."""
    n, k = bank.train.features.shape[:2]
    g = torch.Generator().manual_seed(_view_seed(seed, rank, 1_000 + epoch))
    rows = torch.randperm(n, generator=g)
    if 0 < n < bank.steps_images:
        rows = rows.repeat(math.ceil(bank.steps_images / n))[: bank.steps_images]
    views = torch.randint(k, (len(rows),), generator=g)
    return rows, views


def train_epoch(
    rt: Runtime,
    head: nn.Module,
    bank: FeatureBank,
    optimizer: torch.optim.Optimizer,
    epoch: int,
) -> tuple[float, int, int, float]:
    """(mean loss, images used, images dropped, seconds) summed over ranks, as
    loop.train_one_epoch returns them; the head steps on batches of stored features."""
    head.train()
    start = time.perf_counter()
    rows, views = epoch_order(bank, rt.cfg.seed, rt.dist.rank, epoch)
    rows, views = rows.to(rt.device), views.to(rt.device)
    features, targets = bank.train.features, bank.train.targets
    # Summed on the device: no host sync per step.
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss sum, images, dropped
    totals[2] += bank.train.dropped
    batch = rt.cfg.batch_size
    for first in range(0, len(rows), batch):
        r, v = rows[first : first + batch], views[first : first + batch]
        x = features[r, v].float()  # (B, F) fp32: autocast, if on, casts for the head
        loss = train_step(head, x, targets[r], optimizer, rt)
        totals[0] += loss.detach().double() * len(r)
        totals[1] += len(r)
    seconds = distributed.all_max(rt.dist, _synced_seconds(rt.device, start))
    loss_sum, used, dropped = distributed.all_sum(rt.dist, totals).tolist()
    return loss_sum / max(used, 1), int(used), int(dropped), seconds


def _synced_seconds(device: torch.device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(rt: Runtime, head: nn.Module, split: Split, classes: int) -> EvalResult:
    """loop.evaluate's figures for stored evaluation features, all ranks together."""
    head.eval()

    def batches() -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, int]]:
        yield None, None, split.dropped
        for first in range(0, len(split.targets), EVAL_BATCH):
            x = split.features[first : first + EVAL_BATCH].float()  # (B, F)
            with autocast(rt.device, rt.cfg.precision):
                logits = head(x).float()  # (B, C)
            yield logits, split.targets[first : first + EVAL_BATCH], 0

    return score(rt, batches(), classes)
