"""Plot of a training run: accuracy and gradient / activation density per epoch."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from ...outdir import atomic_write_bytes  # noqa: E402


def plot_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Two panels: train/test accuracy, and mean density of pruned gradients and activations; a
    third with the true per-layer weight sparsity and its target when Campfire pruning was on."""
    eps = metrics["epochs"]
    x = [e["epoch"] + 1 for e in eps]
    weights = any("weight_sparsity" in e for e in eps)
    fig, axes = plt.subplots(1, 3 if weights else 2, figsize=(15 if weights else 10, 4))
    ax_acc, ax_den = axes[0], axes[1]
    if weights:
        _plot_weight_sparsity(axes[2], x, eps)
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
    title = f"{cfg.get('model', '?')}, p = {cfg.get('p') if cfg.get('prune', True) else 'off (baseline)'}"
    if weights:
        title += f"; {cfg.get('weight_pruning')} weight pruning to {cfg.get('weight_sparsity')}"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()  # rendered first, then replaced atomically (sparsetrain.outdir)
    fig.savefig(buf, dpi=100, format=path.suffix.lstrip(".") or "png")
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return path


def _plot_weight_sparsity(ax, x: list[int], eps: list[dict[str, Any]]) -> None:
    """True weight sparsity (fraction of zero weights) of every pruned layer, and the schedule's target."""
    names = [n for n in eps[-1].get("weight_sparsity", {})]
    for name in names:
        ys = [e.get("weight_sparsity", {}).get(name, {}).get("weight_sparsity", float("nan")) for e in eps]
        ax.plot(x, ys, ".-", lw=1, label=name)
    ax.plot(x, [e.get("weight_sparsity_target", float("nan")) for e in eps], "k--", lw=2, label="target")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weight sparsity (fraction of zero weights)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
