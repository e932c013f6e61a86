"""Training with stochastic activation-gradient pruning on Fashion-MNIST (the golden run).

Momentum SGD as in the papers (momentum 0.9, weight decay 5e-4, lr 0.1 for ResNet and
MobileNet, lr x 0.1 every ``lr_decay_epochs`` epochs); AlexNet uses lr 0.01, not the papers' 0.05
(with He initialisation 0.05 stalls near chance for the first epoch; docs/reproduction.md).
``lr_schedule="cosine"`` anneals the lr per epoch to 0 over ``epochs`` instead (its lr per epoch
is in metrics.json, ``epochs[i].lr``). Writes ``metrics.json`` (config,
per-epoch loss / accuracies / per-layer densities and thresholds) and ``metrics.png`` into
the run directory, and golden tensors under ``golden/step_NNNNNN/`` for the chosen steps.
"""
from __future__ import annotations

import io
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import outdir
from .campfire import MASKS_META_NAME, MASKS_NAME, CampfirePruner, WeightPruneConfig
from .data import Split, fashion_mnist
from .fixedpoint import check_param
from .networks import build_model, check_model_name, conv_layers
from .pruning import PruneConfig, check_estimator, check_rate, count_nonzero, pruners
from .tensors import GoldenRecorder, export_golden

DEFAULT_LR = {"alexnet": 0.01}  # others: 0.1 (Ye et al. 2019, section 6.1; AlexNet there: 0.05, see docstring)
LR_SCHEDULES = ("step", "cosine")
METRICS_NAME, PLOT_NAME = "metrics.json", "metrics.png"
MODEL_NAME = "model.pt"  # state_dict, written with save_model (sparsetrain robustness reads it)
# what a run may write at the top of its folder (golden.outdir refuses a user's file of these names)
RUN_FILES = (METRICS_NAME, PLOT_NAME, MODEL_NAME, "golden", MASKS_NAME, MASKS_META_NAME)


@dataclass
class TrainConfig:
    model: str = "alexnet"
    p: float = 0.9
    prune: bool = True  # False: the unpruned baseline (densities are still measured)
    epochs: int = 1
    batch_size: int = 128
    lr: float | None = None  # None: the papers' value for the model
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epochs: int = 100
    lr_schedule: str = "step"  # "step": x 0.1 every lr_decay_epochs; "cosine": (1 + cos(pi e / epochs)) / 2 in epoch e
    seed: int = 0
    n_f: int = 4
    estimator: str = "unbiased"
    two_pass: bool = False
    train_samples: int | None = None
    test_samples: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps in total
    width_mult: float = 1.0
    input_size: int = 32
    threads: int | None = None
    dump_layers: list[str] | None = None  # conv names to dump; None: every conv
    dump_steps: list[int] = field(default_factory=list)  # global step indices, 0-based
    dw: int = 16
    progress: bool = True
    sparse_backward: bool = False
    # Campfire structured weight sparsity (golden.campfire); None: no weight pruning.
    weight_sparsity: float | None = None
    weight_pruning: str = "window"
    era_start: int = 0
    era_length: int = 1
    prune_exponent: float = 3.0
    window_fraction: float = 0.8
    fc_pruning: str = "fine"
    fc_block: int = 4
    prune_resolution: str = "epoch"
    save_model: bool = False

    def __post_init__(self) -> None:
        check_model_name(self.model)
        check_rate(self.p)
        check_estimator(self.estimator)
        check_param("epochs", self.epochs, 1, 100000)
        check_param("batch_size", self.batch_size, 1, 1 << 16)
        check_param("N_F", self.n_f)
        check_param("seed", self.seed, 0, 2**63 - 1)
        check_param("lr_decay_epochs", self.lr_decay_epochs, 1, 1 << 30)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule = {self.lr_schedule!r} is out of range; allowed: {', '.join(LR_SCHEDULES)}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ValueError(f"lr = {self.lr!r} is out of range; allowed: 0 < lr <= 10")
        if self.max_steps is not None:
            check_param("max_steps", self.max_steps, 1, 1 << 40)
        for s in self.dump_steps:
            check_param("dump_steps", s, 0, 1 << 40)
        wcfg = self.weight_prune_config()
        if wcfg is not None and wcfg.era_start >= self.epochs:
            raise ValueError(f"era_start = {self.era_start} is out of range; allowed: 0 .. {self.epochs - 1} "
                             f"(an epoch of the run)")
        if wcfg is not None and wcfg.era_end > self.epochs:
            raise ValueError(f"era_length = {self.era_length} is out of range; allowed: 1 .. "
                             f"{self.epochs - self.era_start} (the era must end by epoch {self.epochs})")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.model, 0.1)

    def weight_prune_config(self) -> WeightPruneConfig | None:
        if self.weight_sparsity is None:
            return None
        return WeightPruneConfig(sparsity=self.weight_sparsity, mode=self.weight_pruning, era_start=self.era_start,
                                 era_length=self.era_length, exponent=self.prune_exponent,
                                 window_fraction=self.window_fraction, fc_mode=self.fc_pruning,
                                 fc_block=self.fc_block, resolution=self.prune_resolution)

    def prune_config(self) -> PruneConfig:
        return PruneConfig(p=self.p, n_f=self.n_f, estimator=self.estimator, two_pass=self.two_pass,
                           seed=self.seed)


class ActivationDensity:
    """Per conv layer, over the training steps since reset: fraction of non-zero inputs I and
    of non-zero output gradients dO as the conv consumes them (pruned for conv_bn_relu; after
    the ReLU for conv_relu, which is the density the papers' AlexNet column reports)."""

    def __init__(self, model: nn.Module) -> None:
        self.counts: dict[str, list[int]] = {}
        self.handles = [conv.register_forward_hook(self._hook(name)) for name, conv, _ in conv_layers(model)]

    def _hook(self, name: str):
        def count_grad(g: torch.Tensor) -> None:
            c = self.counts[name]
            c[2] += count_nonzero(g)
            c[3] += g.numel()

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if module.training:
                c = self.counts.setdefault(name, [0, 0, 0, 0])
                c[0] += count_nonzero(inputs[0])
                c[1] += inputs[0].numel()
                if output.requires_grad:
                    output.register_hook(count_grad)
        return hook

    def reset(self) -> dict[str, dict[str, float]]:
        out = {n: {"activation_density": c[0] / c[1], **({"dO_density": c[2] / c[3]} if c[3] else {})}
               for n, c in self.counts.items() if c[1]}
        self.counts = {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def evaluate(model: nn.Module, split: Split, batch_size: int = 500) -> tuple[float, float]:
    """(mean loss, accuracy in %) of ``model`` on ``split``."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for x, y in split.batches(batch_size):
            logits = model(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    model.train()
    return loss_sum / len(split), 100.0 * correct / len(split)


def make_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg`` with pruning layers (observe-only for the baseline)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, in_channels=1, num_classes=10, input_size=cfg.input_size,
                        width_mult=cfg.width_mult, prune=cfg.prune_config())
    for p in pruners(model).values():
        p.active = cfg.prune
    if cfg.sparse_backward:
        from . import sparse_backward  # written separately; only needed on this path
        model = sparse_backward.convert_model(model)
    return model


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def train(cfg: TrainConfig, out_dir: str | Path | None, *, overwrite: bool = False,
          train_split: Split | None = None, test_split: Split | None = None) -> dict[str, Any]:
    """Run one training; return the metrics dict (also written to ``out_dir`` when given)."""
    if cfg.threads is not None:
        torch.set_num_threads(check_param("threads", cfg.threads, 1, 1024))
    # Pruned gradients push some CPU kernels (BatchNorm backward) into slow denormal
    # arithmetic; values below 1e-38 carry nothing a 16-bit fixed-point datapath could keep.
    torch.set_flush_denormal(True)
    out = Path(out_dir) if out_dir is not None else None
    # Every check before anything is written (golden.outdir): the folder, the data, the dump steps
    # and layers; a refused run leaves no folder behind.
    run_dir = outdir.plan(out, "train", force=overwrite, writes=RUN_FILES) if out is not None else None
    train_split = train_split or fashion_mnist("train", samples=cfg.train_samples, input_size=cfg.input_size)
    test_split = test_split or fashion_mnist("test", samples=cfg.test_samples, input_size=cfg.input_size)
    model = make_model(cfg)
    _check_dumps(cfg, model, len(train_split))
    if run_dir is not None:
        run_dir.apply()
    try:
        return _train(cfg, out, run_dir, overwrite, model, train_split, test_split)
    except BaseException:
        if run_dir is not None:
            run_dir.remove_if_unused()
        raise


def _check_dumps(cfg: TrainConfig, model: nn.Module, n_train: int) -> None:
    """Dump steps inside the run and dump layers among its convs (refused before training)."""
    n_steps = math.ceil(n_train / cfg.batch_size) * cfg.epochs
    if cfg.max_steps is not None:
        n_steps = min(n_steps, cfg.max_steps)
    late = sorted(s for s in cfg.dump_steps if s >= n_steps)
    if late:
        raise ValueError(f"dump_steps = {late[0]} is out of range; allowed: 0 .. {n_steps - 1} (this run has "
                         f"{n_steps} steps)")
    convs = [n for n, _, _ in conv_layers(model)]
    for name in cfg.dump_layers or []:
        if name not in convs:
            raise ValueError(f"dump_layers = {name!r} is not a conv of {cfg.model}; allowed: {', '.join(convs)}")


def _train(cfg: TrainConfig, out: Path | None, run_dir: outdir.OutDir | None, overwrite: bool, model: nn.Module,
           train_split: Split, test_split: Split) -> dict[str, Any]:
    model.train()
    prune_layers = pruners(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule == "cosine"
             else torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_epochs, gamma=0.1))
    wcfg = cfg.weight_prune_config()
    campfire = CampfirePruner(model, wcfg) if wcfg is not None else None
    shuffle = torch.Generator().manual_seed(cfg.seed)
    act_density = ActivationDensity(model)
    dump_steps = set(cfg.dump_steps)
    metrics: dict[str, Any] = {"config": asdict(cfg), "learning_rate": cfg.learning_rate,
                               "conv_layers": {n: {"kind": k, "pruned": n in prune_layers}
                                               for n, _, k in conv_layers(model)},
                               "epochs": [], "golden": []}
    step, t0 = 0, time.time()
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    bar = tqdm(total=total, disable=not cfg.progress, desc=f"{cfg.model} p={cfg.p if cfg.prune else 'off'}",
               unit="step", leave=False)
    try:
        for epoch in range(cfg.epochs):
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in train_split.batches(cfg.batch_size, generator=shuffle):
                recorder = None
                if step in dump_steps:
                    recorder = GoldenRecorder(model, cfg.dump_layers)
                    recorder.attach()
                opt.zero_grad(set_to_none=True)
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                with warnings.catch_warnings():
                    # the first conv's input needs no gradient; its backward hook says so
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                if recorder is not None:
                    layers = recorder.collect()
                    recorder.detach()
                    if out is not None:
                        gdir = export_golden(out / "golden" / f"step_{step:06d}", layers, _run_info(cfg, step),
                                             dw=cfg.dw, overwrite=overwrite)
                        metrics["golden"].append(str(gdir.relative_to(out)))
                        run_dir.record("golden")
                opt.step()
                if campfire is not None:  # prune after the update (Campfire section 2)
                    campfire.after_step(opt, epoch, step - epoch * steps_per_epoch, steps_per_epoch, step)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                step += 1
                bar.update(1)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            lr_epoch = opt.param_groups[0]["lr"]  # the lr this epoch trained with
            sched.step()
            metrics["epochs"].append(_epoch_record(epoch, step, loss_sum / seen, 100.0 * correct / seen,
                                                   evaluate(model, test_split), prune_layers, act_density))
            metrics["epochs"][-1]["lr"] = lr_epoch
            if campfire is not None:  # true per-layer weight sparsity (fraction of zero weights)
                metrics["epochs"][-1]["weight_sparsity_target"] = campfire.last_target or 0.0
                metrics["epochs"][-1]["weight_sparsity"] = campfire.sparsity()
            bar.set_postfix(test_acc=f"{metrics['epochs'][-1]['test_acc']:.2f}")
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
    finally:
        bar.close()
        act_density.remove()
        if campfire is not None:
            campfire.remove()
    metrics["steps"] = step
    metrics["wall_s"] = round(time.time() - t0, 3)
    metrics["summary"] = summarize(metrics)
    if campfire is not None:
        metrics["summary"]["weight_sparsity"] = campfire.overall_sparsity()
        if out is not None:
            run_dir.record(MASKS_NAME, MASKS_META_NAME)
        metrics["weight_pruning"] = {"frozen": campfire.frozen, "frozen_at_step": campfire.frozen_at_step,
                                     "masks": None if out is None else campfire.save(out).name}
    if out is not None and cfg.save_model:
        run_dir.record(MODEL_NAME)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        outdir.atomic_write_bytes(out / MODEL_NAME, buf.getvalue())
    if out is not None:
        run_dir.record(METRICS_NAME, PLOT_NAME)
        outdir.atomic_write_text(out / METRICS_NAME, json.dumps(metrics, indent=1, default=_json_default) + "\n")
        from .plots import plot_metrics  # matplotlib import is slow; only when writing a run dir
        plot_metrics(metrics, out / PLOT_NAME)
    return metrics


def _run_info(cfg: TrainConfig, step: int) -> dict[str, Any]:
    return {"model": cfg.model, "seed": cfg.seed, "p": cfg.p, "prune": cfg.prune, "N_F": cfg.n_f,
            "estimator": cfg.estimator, "two_pass": cfg.two_pass, "batch_size": cfg.batch_size, "step": step,
            "width_mult": cfg.width_mult, "input_size": cfg.input_size, "dataset": "fashion-mnist"}


def _epoch_record(epoch: int, step: int, loss: float, train_acc: float, test: tuple[float, float],
                  prune_layers: dict, act_density: ActivationDensity) -> dict[str, Any]:
    acts = act_density.reset()
    layers: dict[str, Any] = {}
    for name, densities in acts.items():
        layers[name] = dict(densities)
    for name, pr in prune_layers.items():
        s = pr.reset_stats()
        layers.setdefault(name, {}).update({
            "target": pr.target,
            "grad_density_before": s.density_before,  # unpruned gradient
            "grad_density": s.density_after,  # after pruning (what the backward pass consumes)
            "pruned_batches": s.pruned_batches,
            "tau_mean": sum(s.tau_applied) / len(s.tau_applied) if s.tau_applied else None,
            "tau_last": pr.last_tau,
            "tau_batch_last": pr.last_tau_batch,
            "fifo": pr.fifo.entries,
        })
    return {"epoch": epoch, "step": step, "loss": loss, "train_acc": train_acc, "test_loss": test[0],
            "test_acc": test[1], "layers": layers}


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """Final accuracies and the mean gradient density over layers and epochs (element-weighted per layer)."""
    eps = metrics["epochs"]
    dens = [lay["grad_density"] for e in eps for lay in e["layers"].values()
            if lay.get("grad_density") is not None]
    acts = [lay["activation_density"] for e in eps for lay in e["layers"].values() if "activation_density" in lay]
    d_o = [lay["dO_density"] for lay in eps[-1]["layers"].values() if "dO_density" in lay] if eps else []
    last = eps[-1] if eps else {}
    return {"test_acc": last.get("test_acc"), "train_acc": last.get("train_acc"), "loss": last.get("loss"),
            "best_test_acc": max((e["test_acc"] for e in eps), default=None),
            "grad_density": sum(dens) / len(dens) if dens else None,
            "last_epoch_grad_density": (lambda d: sum(d) / len(d) if d else None)(
                [lay["grad_density"] for lay in last.get("layers", {}).values() if lay.get("grad_density") is not None]),
            "activation_density": sum(acts) / len(acts) if acts else None,
            "last_epoch_dO_density": sum(d_o) / len(d_o) if d_o else None}


def results_table(run_dirs: list[str | Path]) -> str:
    """Markdown table of finished runs: model, p, final test/train accuracy, gradient densities."""
    rows = ["| run | model | p | epochs | test acc % | train acc % | pruned-gradient density (mean) |"
            " pruned-gradient density (last epoch) | dO density (last epoch) | activation density |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in run_dirs:
        m = json.loads((Path(d) / METRICS_NAME).read_text())
        c, s = m["config"], m["summary"]
        p = f"{c['p']}" if c["prune"] else "baseline"
        rows.append(f"| {Path(d).name} | {c['model']} (x{c['width_mult']}) | {p} | {len(m['epochs'])} | "
                    f"{s['test_acc']:.2f} | {s['train_acc']:.2f} | {s['grad_density']:.3f} | "
                    f"{s['last_epoch_grad_density']:.3f} | {_fmt(s.get('last_epoch_dO_density'))} | "
                    f"{s['activation_density']:.3f} |")
    return "\n".join(rows)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
