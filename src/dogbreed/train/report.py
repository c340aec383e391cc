"""Training outputs people read: metrics.json, curves, confusions, resource plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np


def confused_pairs(matrix: np.ndarray, labels: Sequence[str], top: int = 10) -> list[dict]:
    """The most frequent (true, predicted) mistakes of a confusion matrix."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    pairs = []
    for flat in order:
        true, pred = np.unravel_index(flat, off.shape)
        count = int(off[true, pred])
        if count == 0:
            break
        support = int(matrix[true].sum())
        pairs.append(
            {
                "true": labels[true],
                "predicted": labels[pred],
                "count": count,
                "share_of_true": round(count / support, 4) if support else 0.0,
            }
        )
    return pairs


def plot_curves(history: Sequence[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="valid")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["val_acc"] for h in history], "o-", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_resources(rows: Sequence[dict], path: Path) -> None:
    has_gpu = any(r["gpu_memory_mb"] != "" for r in rows)
    fig, axes = plt.subplots(3 if has_gpu else 2, 1, figsize=(9, 7 if has_gpu else 5), sharex=True)
    t = [r["t_s"] for r in rows]
    axes[0].plot(t, [r["cpu_percent"] for r in rows], label="machine CPU %")
    axes[0].plot(t, [r["process_cpu_percent"] for r in rows], label="training processes CPU %")
    axes[0].set(ylabel="CPU %", title="Resource usage during training")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, [r["rss_mb"] for r in rows], color="tab:purple")
    axes[1].set(ylabel="resident memory (MB)")
    if has_gpu:
        util = [r["gpu_util_percent"] if r["gpu_util_percent"] != "" else np.nan for r in rows]
        axes[2].plot(t, util, label="GPU utilisation %")
        axes[2].plot(t, [r["gpu_memory_mb"] for r in rows], label="GPU memory (MB)")
        axes[2].legend(loc="upper right")
    axes[-1].set(xlabel="seconds since start")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
