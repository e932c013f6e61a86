"""Adversarial robustness under FGSM (Goodfellow et al.), as Campfire's Table 6 measures it.

Each model attacks itself: ``x_adv = clip(x + eps * sign(grad_x loss(x, y)))`` with the gradient of
the cross-entropy at the true label, computed in eval mode with exact gradients (the
activation-gradient pruning layers are bypassed: the attacker is not the training hardware).
``eps`` is in pixel units (images scaled to [0, 1], as in the PyTorch FGSM tutorial that
Campfire used); the data are normalised, so the step in the network's input domain is
``eps / STD`` and the clip keeps every input pixel inside the normalised image of [0, 1].
"""
from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .data import MEAN, STD, Split, fashion_mnist
from .pruning import pruners

DEFAULT_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PIXEL_LO, PIXEL_HI = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD  # [0, 1] in the normalised domain


def check_eps(eps: Sequence[float]) -> list[float]:
    out = []
    for e in eps:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or not 0.0 <= e <= 1.0:
            raise ValueError(f"eps = {e!r} is out of range; allowed: 0 <= eps <= 1 (pixel units)")
        out.append(float(e))
    if not out:
        raise ValueError("eps = [] is out of range; allowed: at least one value in 0 .. 1")
    return out


def fgsm_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM adversarial inputs for a batch (model in eval mode; pixel-unit ``eps``)."""
    x = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x.detach() + (eps / STD) * grad.sign()).clamp_(PIXEL_LO, PIXEL_HI)


def fgsm_accuracy(model: nn.Module, split: Split, eps: Sequence[float], batch_size: int = 500) -> dict[float, float]:
    """Test accuracy (%) under FGSM for each eps (eps = 0: the clean accuracy)."""
    eps = check_eps(eps)
    was_training = model.training
    model.eval()
    saved = {name: p.enabled for name, p in pruners(model).items()}
    for p in pruners(model).values():
        p.enabled = False
    correct = {e: 0 for e in eps}
    try:
        for x, y in split.batches(batch_size):
            for e in eps:
                x_in = x if e == 0.0 else fgsm_examples(model, x, y, e)
                with torch.no_grad():
                    correct[e] += int((model(x_in).argmax(1) == y).sum())
    finally:
        for name, p in pruners(model).items():
            p.enabled = saved[name]
        model.train(was_training)
    return {e: 100.0 * c / len(split) for e, c in correct.items()}


def load_run_model(run_dir: str | Path):
    """(model with the run's final weights, its TrainConfig) of a run trained with save_model."""
    from .train import METRICS_NAME, MODEL_NAME, TrainConfig, make_model

    run_dir = Path(run_dir)
    metrics_path, model_path = run_dir / METRICS_NAME, run_dir / MODEL_NAME
    for p in (metrics_path, model_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: train the run with --save-model")
    known = {f.name for f in fields(TrainConfig)}
    try:
        config = json.loads(metrics_path.read_text())["config"]
        config = {k: v for k, v in config.items() if k in known}
        cfg = TrainConfig(**{**config, "progress": False})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{metrics_path}: not the metrics.json of a training run (field 'config': "
                         f"{(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    model = make_model(cfg)
    try:
        model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError for a damaged file
        raise ValueError(f"{model_path}: cannot be loaded as this run's weights ({type(exc).__name__}); allowed: "
                         f"the {MODEL_NAME} that `sparsetrain train --save-model` wrote for this run") from None
    return model, cfg


def run_label(cfg) -> str:
    """Short description of a run: weight pruning and gradient pruning settings."""
    w = "dense" if cfg.weight_sparsity is None else f"{cfg.weight_pruning} {cfg.weight_sparsity:g}"
    return f"{w}, {'p = ' + format(cfg.p, 'g') if cfg.prune else 'no gradient pruning'}"


def robustness(run_dirs: Sequence[str | Path], eps: Sequence[float] = DEFAULT_EPS,
               test_samples: int | None = None) -> list[dict]:
    """Per run: label, true weight sparsity and {eps: accuracy %}; each run on its own test subset size."""
    eps = check_eps(eps)
    rows = []
    for d in run_dirs:
        model, cfg = load_run_model(d)
        n = test_samples if test_samples is not None else cfg.test_samples
        split = fashion_mnist("test", samples=n, input_size=cfg.input_size)
        weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        zeros = sum(int((w == 0).sum()) for w in weights)
        rows.append({"run": str(d), "label": run_label(cfg), "test_samples": len(split),
                     "weight_sparsity": zeros / sum(w.numel() for w in weights),
                     "accuracy": fgsm_accuracy(model, split, eps)})
    return rows


def robustness_markdown(rows: list[dict]) -> str:
    """Table 6 style: one row per run, one column per eps."""
    eps = list(rows[0]["accuracy"]) if rows else []
    head = "| run | model | weight sparsity | " + " | ".join(f"eps = {e:g}" for e in eps) + " |"
    lines = [head, "|" + " --- |" * (3 + len(eps))]
    for r in rows:
        accs = " | ".join(f"{r['accuracy'][e]:.2f}" for e in eps)
        lines.append(f"| {Path(r['run']).name} | {r['label']} | {r['weight_sparsity']:.3f} | {accs} |")
    return "\n".join(lines)
