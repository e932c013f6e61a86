"""Plot of a training run: accuracy and gradient / activation density per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def plot_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Two panels: train/test accuracy, and mean density of pruned gradients and activations."""
    eps = metrics["epochs"]
    x = [e["epoch"] + 1 for e in eps]
    fig, (ax_acc, ax_den) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(x, [e["train_acc"] for e in eps], "o-", label="train")
    ax_acc.plot(x, [e["test_acc"] for e in eps], "s-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)

    def mean_of(e: dict[str, Any], key: str) -> float | None:
        vals = [lay[key] for lay in e["layers"].values() if lay.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    for key, label in (("grad_density_before", "pruning target, before"), ("grad_density", "pruning target, after"),
                       ("dO_density", "dO as the conv consumes it"), ("activation_density", "activations")):
        ys = [mean_of(e, key) for e in eps]
        if any(y is not None for y in ys):
            ax_den.plot(x, [float("nan") if y is None else y for y in ys], "o-", label=label, alpha=0.8)
    ax_den.set_xlabel("epoch")
    ax_den.set_ylabel("density of non-zeros (mean over layers)")
    ax_den.set_ylim(0, 1.05)
    ax_den.legend()
    ax_den.grid(alpha=0.3)
    cfg = metrics.get("config", {})
    fig.suptitle(f"{cfg.get('model', '?')}, p = {cfg.get('p') if cfg.get('prune', True) else 'off (baseline)'}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
