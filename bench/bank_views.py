"""Feature-bank views against accuracy: the per-epoch loop and the bank at K views, same data.

A random backbone proves nothing here (its features carry no classes), so the
backbone is real: a ResNet-18 trained end to end on one synthetic set, then
frozen for another set with other classes. On that second set, for each seed:

    per-epoch loop   `dogbreed train --feature-bank off`: every crop through the backbone
    bank, K views    `dogbreed train --feature-bank on --views K`

all with the same epochs, batch, learning rate and seed; the table holds the best
val_acc of each, their mean over seeds, and the bank's difference from the loop
in points. One validation image is 100 / (classes x valid images a class) points.

    python bench/bank_views.py [--views 1 2 4] [--seeds 0 1 2] [--classes 10] [--per-class 100]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dogbreed.train.synth import split_counts, synthesize

METRIC_RE = re.compile(r"^epoch=\d+ .*val_acc=([\d.]+) ", re.M)
RUN_TIMEOUT_S = 3600


def train(data: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "dogbreed", "train", "--data", str(data),
        "--model-dir", str(out / "model"), "--output-dir", str(out / "output"),
        "--checkpoint-dir", str(out / "checkpoints"), "--arch", "resnet18",
        "--device", "cpu", "--int8", "false", *flags,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise SystemExit(f"dogbreed train {' '.join(flags)} failed:\n{proc.stderr[-3000:]}")
    return proc


def best_val_acc(proc: subprocess.CompletedProcess) -> float:
    return max(float(a) for a in METRIC_RE.findall(proc.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 4], help="K values")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds")
    parser.add_argument("--classes", type=int, default=10, help="classes of the frozen-for set")
    parser.add_argument(
        "--per-class", type=int, default=100, help="images a class over all splits (80/10/10)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate of every run")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        # The backbone: trained on 5 other synthetic classes, as the parity test's.
        synthesize(root / "pre", classes=5, per_class=40, seed=11)
        train(root / "pre", root / "pre-run", "--weights", "none", "--epochs", "3",
              "--batch-size", "8", "--lr", "0.001", "--seed", "0")  # fmt: skip
        weights = root / "pre-run" / "model" / "model.pth"
        synthesize(root / "data", classes=args.classes, per_class=args.per_class, seed=23)
        valid = args.classes * split_counts(args.per_class)["valid"]
        print(
            f"resnet18 frozen for {args.classes} new classes, "
            f"{args.classes * split_counts(args.per_class)['train']} train / {valid} valid "
            f"images (one image = {100 / valid:.2f} points), {args.epochs} epochs, "
            f"backbone ready in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        modes = {"per-epoch loop": ["--feature-bank", "off"]}
        modes |= {f"{k} view{'s' * (k > 1)}": ["--feature-bank", "on", "--views", str(k)]
                  for k in args.views}  # fmt: skip
        accs: dict[str, list[float]] = {m: [] for m in modes}
        for seed in args.seeds:
            for mode, flags in modes.items():
                out = root / f"run-{seed}-{len(accs[mode])}-{mode.split()[0]}"
                proc = train(root / "data", out, "--weights", str(weights), "--epochs",
                             str(args.epochs), "--lr", str(args.lr), "--batch-size",
                             str(args.batch_size), "--seed", str(seed), *flags)  # fmt: skip
                accs[mode].append(best_val_acc(proc))
                print(f"seed={seed} {mode}: val_acc={accs[mode][-1]:.4f}", flush=True)
        loop = statistics.mean(accs["per-epoch loop"])
        print("\n| seed | " + " | ".join(modes) + " |")
        print("| --- |" + " ---: |" * len(modes))
        for i, seed in enumerate(args.seeds):
            print(f"| {seed} | " + " | ".join(f"{accs[m][i]:.3f}" for m in modes) + " |")
        print("| mean | " + " | ".join(f"{statistics.mean(accs[m]):.3f}" for m in modes) + " |")
        diffs = [f"{100 * (statistics.mean(accs[m]) - loop):+.1f}" for m in modes]
        print("| bank - loop, points | " + " | ".join(diffs) + " |")


if __name__ == "__main__":
    main()
