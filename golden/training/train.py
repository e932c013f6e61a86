"""Training with stochastic activation-gradient pruning on Fashion-MNIST (the golden run).

Momentum SGD as in the papers (momentum 0.9, weight decay 5e-4, lr 0.1 for ResNet and
MobileNet, lr x 0.1 every ``lr_decay_epochs`` epochs); AlexNet uses lr 0.01, not the papers' 0.05
(with He initialisation 0.05 stalls near chance for the first epoch; docs/reproduction.md).
``lr_schedule="cosine"`` anneals the lr per epoch to 0 over ``epochs`` instead (its lr per epoch
is in metrics.json, ``epochs[i].lr``). ``warmup_steps`` > 0 scales the scheduled lr by
(step + 1) / warmup_steps over the first optimizer steps (a linear warm-up; AlexNet needs it at
5 epochs: without it one seed in three spends its first epoch near chance, docs/reproduction.md).
Writes ``metrics.json`` (config, per-epoch loss / accuracies / per-layer densities and
thresholds) and ``metrics.png`` into the run directory, and golden tensors under
``golden/step_NNNNNN/`` for the chosen steps.

Runs as one process or under torch.distributed (``torchrun``, or :func:`train_distributed`
for local workers): docs/distributed.md says what is reduced over ranks and why. A
checkpoint (``checkpoint.pt``) is written atomically after every epoch and on SIGINT/SIGTERM;
``resume=True`` continues from it.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from ... import outdir
from ...arch.dbtd import check_estimator, check_rate
from ...arch.fixedpoint import check_param
from . import distributed
from .campfire import MASKS_META_NAME, MASKS_NAME, CampfirePruner, WeightPruneConfig
from .data import Split, fashion_mnist
from .networks import build_model, check_model_name, conv_layers
from .pruning import PruneConfig, count_nonzero, pruners, push_pending
from .tensors import GoldenRecorder, export_golden

DEFAULT_LR = {"alexnet": 0.01}  # others: 0.1 (Ye et al. 2019, section 6.1; AlexNet there: 0.05, see docstring)
LR_SCHEDULES = ("step", "cosine")
# TrainConfig fields added after checkpoints and metrics were first written: what an older file means
ADDED_LATER: dict[str, Any] = {"warmup_steps": 0}
METRICS_NAME, PLOT_NAME = "metrics.json", "metrics.png"
MODEL_NAME = "model.pt"  # state_dict, written with save_model (sparsetrain robustness reads it)
CHECKPOINT_NAME = "checkpoint.pt"
# what a run may write at the top of its folder (sparsetrain.outdir refuses a user's file of these names)
RUN_FILES = (METRICS_NAME, PLOT_NAME, MODEL_NAME, "golden", MASKS_NAME, MASKS_META_NAME, CHECKPOINT_NAME)
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "sparsetrain-checkpoint", 1
# Deterministic interruption (tests, demos): rank 0 sends itself SIGTERM once this many steps are done.
INTERRUPT_ENV = "SPARSETRAIN_INTERRUPT_AFTER_STEP"
# Fields a resumed run may change; every other field must equal the checkpoint's.
RESUME_MAY_CHANGE = ("progress", "threads")


class TrainingInterrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after writing its checkpoint (resume it with ``resume=True``)."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int) -> None:
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        where = f"; checkpoint {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}{where}")


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
    warmup_steps: int = 0  # linear lr warm-up over the first optimizer steps (0: none)
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
    # Campfire structured weight sparsity (golden.training.campfire); None: no weight pruning.
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
    device: str = "auto"  # auto: this rank's GPU when CUDA is available (CPU for sparse_backward), else CPU

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
        check_param("warmup_steps", self.warmup_steps, 0, 1 << 30)
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
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device = {self.device!r} is out of range; allowed: auto, cpu, cuda")
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
          train_split: Split | None = None, test_split: Split | None = None, resume: bool = False,
          step_callback: Callable[[int, nn.Module], None] | None = None) -> dict[str, Any]:
    """Run one training; return the metrics dict (also written to ``out_dir`` when given).

    Under torch.distributed (RANK / WORLD_SIZE set, e.g. by torchrun) this is one rank of the
    job: ``cfg.batch_size`` is the per-rank batch, and only rank 0 writes files. ``resume``
    continues from ``out_dir``'s checkpoint. Raises :class:`TrainingInterrupted` after
    SIGINT/SIGTERM, once the checkpoint is written. ``step_callback(step, model)`` is called
    after every optimiser step (0-based step index; an observer, e.g. for tests).
    """
    if cfg.threads is not None:
        torch.set_num_threads(check_param("threads", cfg.threads, 1, 1024))
    # Pruned gradients push some CPU kernels (BatchNorm backward) into slow denormal
    # arithmetic; values below 1e-38 carry nothing a 16-bit fixed-point datapath could keep.
    torch.set_flush_denormal(True)
    _, _, local_rank = distributed.env_world()
    device = distributed.pick_device("cpu" if cfg.device == "auto" and cfg.sparse_backward else cfg.device,
                                     local_rank)
    dist_info = distributed.setup(device)
    try:
        return _train(cfg, out_dir, dist_info, device, overwrite, train_split, test_split, resume, step_callback)
    finally:
        distributed.teardown(dist_info)


def check_run_dir(out: Path, *, overwrite: bool, resume: bool) -> outdir.OutDir:
    """The checked run folder (sparsetrain.outdir: nothing of the user's is replaced, ``--force`` removes
    exactly an earlier run); a resume needs an interrupted run's checkpoint, and a new run over an
    interrupted one is refused unless forced. Nothing is created or removed here."""
    ckpt = out / CHECKPOINT_NAME
    if resume:
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt} does not exist; --resume needs the run directory of an interrupted run")
        if (out / METRICS_NAME).exists():
            raise FileExistsError(f"{out / METRICS_NAME} exists: that run finished; nothing to resume")
        return outdir.plan(out, "train", replace_own=True, writes=RUN_FILES)  # the run's own files, in place
    if ckpt.exists() and not overwrite and not (out / METRICS_NAME).exists():
        raise FileExistsError(f"{ckpt} exists (an interrupted run); pass --resume to continue it or --force "
                              f"to start over")
    return outdir.plan(out, "train", force=overwrite, writes=RUN_FILES)


def _rank0_check(dist_info: distributed.Dist, check: Any) -> None:
    """Run ``check`` on rank 0 and raise its error on every rank (the others would wait forever)."""
    err: Exception | None = None
    if dist_info.is_writer:
        try:
            check()
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            err = exc
    err = dist_info.from_rank0(err)
    if err is not None:
        raise err


def _train(cfg: TrainConfig, out_dir: str | Path | None, dist_info: distributed.Dist, device: torch.device,
           overwrite: bool, train_split: Split | None, test_split: Split | None, resume: bool,
           step_callback: Callable[[int, nn.Module], None] | None) -> dict[str, Any]:
    d = dist_info
    run_path = Path(out_dir) if out_dir is not None else None
    if resume and run_path is None:
        raise ValueError("resume needs the run directory (out_dir) that holds the checkpoint")
    # Every check before anything is written (sparsetrain.outdir): the folder, the data, the dump steps
    # and layers; a refused run leaves no folder behind. Only rank 0 writes files.
    run_dir: outdir.OutDir | None = None
    if run_path is not None:
        def plan() -> None:
            nonlocal run_dir
            run_dir = check_run_dir(run_path, overwrite=overwrite, resume=resume)
        _rank0_check(d, plan)
    out = run_path if d.is_writer else None
    ckpt: dict[str, Any] | None = None
    if resume:
        def load() -> None:
            nonlocal ckpt
            ckpt = _load_checkpoint(run_path / CHECKPOINT_NAME, cfg, d)
        _rank0_check(d, load)
        ckpt = d.from_rank0(ckpt)  # every rank restores from rank 0's file (no shared disk needed)
    train_split = train_split or fashion_mnist("train", samples=cfg.train_samples, input_size=cfg.input_size)
    test_split = test_split or fashion_mnist("test", samples=cfg.test_samples, input_size=cfg.input_size)
    if device.type != "cpu":
        train_split = Split(train_split.images.to(device), train_split.labels.to(device))
        test_split = Split(test_split.images.to(device), test_split.labels.to(device))
    model = make_model(cfg)
    _rank0_check(d, lambda: _check_dumps(cfg, model, len(train_split), d.world_size))
    if run_dir is not None:
        run_dir.apply()
    try:
        return _train_loop(cfg, out, run_path, run_dir, d, device, overwrite, resume, ckpt, step_callback, model,
                           train_split, test_split)
    except TrainingInterrupted:
        raise  # the checkpoint stays: the run is resumable
    except BaseException:
        if run_dir is not None:
            run_dir.remove_if_unused()
        raise


def _check_dumps(cfg: TrainConfig, model: nn.Module, n_train: int, world: int = 1) -> None:
    """Dump steps inside the run and dump layers among its convs (refused before training)."""
    n_steps = _steps_per_epoch(n_train, cfg.batch_size * world, world) * cfg.epochs
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


def _train_loop(cfg: TrainConfig, out: Path | None, run_path: Path | None, run_dir: outdir.OutDir | None,
                d: distributed.Dist, device: torch.device, overwrite: bool, resume: bool,
                ckpt: dict[str, Any] | None, step_callback: Callable[[int, nn.Module], None] | None,
                model: nn.Module, train_split: Split, test_split: Split) -> dict[str, Any]:
    prune_layers = pruners(model)
    if d.enabled:
        # Ranks draw their own pruning and dropout numbers (rank 0 keeps the single-process ones).
        for pr in prune_layers.values():
            pr.set_rank(d.rank)
            pr.reduce = d.sum_
        if d.rank > 0:
            torch.manual_seed(int(distributed.rank_seed(cfg.seed, d.rank)))
        model = distributed.sync_batchnorm(model, d, device)
    model.to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule == "cosine"
             else torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_epochs, gamma=0.1))
    wcfg = cfg.weight_prune_config()
    campfire = CampfirePruner(model, wcfg) if wcfg is not None else None
    shuffle = torch.Generator().manual_seed(cfg.seed)
    act_density = ActivationDensity(model)
    dump_steps = set(cfg.dump_steps)
    world, global_batch = d.world_size, cfg.batch_size * d.world_size
    metrics: dict[str, Any] = {"config": asdict(cfg), "learning_rate": cfg.learning_rate,
                               "conv_layers": {n: {"kind": k, "pruned": n in prune_layers}
                                               for n, _, k in conv_layers(model)},
                               "distributed": {"world_size": world, "backend": d.backend, "device": device.type,
                                               "per_rank_batch": cfg.batch_size, "global_batch": global_batch},
                               "epochs": [], "golden": []}
    step, start_epoch, start_batch, wall_before = 0, 0, 0, 0.0
    acc = [0.0, 0, 0]  # this epoch so far on this rank: loss sum, correct, seen
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if campfire is not None:
            campfire.load_state(ckpt["campfire"])
        mine = ckpt["ranks"][d.rank]
        for name, pr in prune_layers.items():
            pr.load_rng_state(mine["pruners"][name])
        act_density.counts = {k: list(v) for k, v in mine["act_counts"].items()}
        acc = list(mine["acc"])
        torch.set_rng_state(mine["torch_rng"])
        if device.type == "cuda" and mine.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(mine["cuda_rng"], device)
        shuffle.set_state(ckpt["data"]["shuffle_state"])
        step, start_epoch, start_batch = ckpt["data"]["step"], ckpt["data"]["epoch"], ckpt["data"]["batch"]
        metrics["epochs"], metrics["golden"] = ckpt["metrics"]["epochs"], ckpt["metrics"]["golden"]
        wall_before = ckpt["metrics"]["wall_s"]
        metrics["resumed_at_steps"] = [*ckpt["metrics"].get("resumed_at_steps", []), step]
    net: nn.Module = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers need no broadcast: BatchNorm statistics are those of the global batch already.
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)
        net.register_comm_hook(None, distributed.sum_allreduce_hook)
    t0 = time.time()
    steps_per_epoch = _steps_per_epoch(len(train_split), global_batch, world)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    bar = tqdm(total=total, initial=step, disable=not cfg.progress or not d.is_writer,
               desc=f"{cfg.model} p={cfg.p if cfg.prune else 'off'}", unit="step", leave=False)
    stop = _StopFlag(d)
    interrupt_at = _interrupt_step() if d.is_writer else None

    def checkpoint(epoch: int, batch: int, shuffle_state: torch.Tensor, finished: bool) -> Path | None:
        if run_dir is not None and d.is_writer:
            run_dir.record(CHECKPOINT_NAME)
        return _save_checkpoint(run_path, d, cfg, model, opt, sched, campfire, prune_layers, act_density, acc,
                                device, metrics, {"epoch": epoch, "batch": batch, "step": step,
                                                  "shuffle_state": shuffle_state},
                                wall_before + time.time() - t0, finished)

    try:
        for epoch in range(start_epoch, cfg.epochs):
            epoch_start_state = shuffle.get_state()  # the epoch's order is drawn from this state
            first = start_batch if epoch == start_epoch else 0
            for bi, (x, y, m) in enumerate(_rank_batches(train_split, cfg.batch_size, d, shuffle, first), first):
                if cfg.max_steps is not None and step >= cfg.max_steps:  # a run resumed at its last step
                    break
                recorder = None
                if step in dump_steps and d.is_writer:
                    recorder = GoldenRecorder(model, cfg.dump_layers)
                    recorder.attach()
                if cfg.warmup_steps and step < cfg.warmup_steps:
                    _set_lr(opt, sched, (step + 1) / cfg.warmup_steps)
                opt.zero_grad(set_to_none=True)
                # Golden steps: this rank's own dW (summed over ranks only after it is recorded);
                # DDP decides at the forward whether the backward all-reduces.
                sync = net.no_sync() if d.enabled and step in dump_steps else contextlib.nullcontext()
                with sync:
                    logits = net(x)
                    # Each rank's share of the global-batch mean: summed over ranks (sum_allreduce_hook)
                    # it is the single-process gradient, at the single-process scale.
                    loss = (nn.functional.cross_entropy(logits, y) if not d.enabled
                            else nn.functional.cross_entropy(logits, y, reduction="sum") / m)
                    with warnings.catch_warnings():
                        # the first conv's input needs no gradient; its backward hook says so
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        loss.backward()
                if d.enabled:
                    push_pending(prune_layers.values(), d.sum_)  # FIFO mode: global thresholds
                if recorder is not None:
                    layers = recorder.collect()
                    recorder.detach()
                    if out is not None:
                        gdir = export_golden(out / "golden" / f"step_{step:06d}", layers,
                                             _run_info(cfg, step, d), dw=cfg.dw,
                                             overwrite=overwrite or resume)  # resume: this run's own files
                        metrics["golden"].append(str(gdir.relative_to(out)))
                        if run_dir is not None:
                            run_dir.record("golden")
                if d.enabled and step in dump_steps:
                    distributed.sum_grads_(model)
                opt.step()
                if campfire is not None:  # prune after the update (Campfire section 2)
                    target = campfire.after_step(opt, epoch, step - epoch * steps_per_epoch, steps_per_epoch, step)
                    if target is not None:  # masks from the synchronised weights: the same on every rank
                        d.check_same("Campfire weight masks", distributed.digest(campfire.mask_tensors()))
                acc[0] += float(loss.detach()) * m
                acc[1] += int((logits.argmax(1) == y).sum())
                acc[2] += len(y)
                if step_callback is not None:
                    step_callback(step, model)
                step += 1
                bar.update(1)
                if interrupt_at is not None and step == interrupt_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                if stop.any():  # every rank stops after this same step
                    raise _Interrupt(stop.signum, epoch, bi + 1, epoch_start_state)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            if cfg.warmup_steps:
                _set_lr(opt, sched, 1.0)  # the scheduler's own lr: its next step is chained on it
            lr_epoch = opt.param_groups[0]["lr"]  # the lr this epoch trained with (after any warm-up)
            sched.step()
            loss_sum, correct, seen = _reduce_epoch_counts(d, acc, prune_layers, act_density)
            acc = [0.0, 0, 0]
            metrics["epochs"].append(_epoch_record(epoch, step, loss_sum / seen, 100.0 * correct / seen,
                                                   _evaluate(model, test_split, d), prune_layers, act_density))
            metrics["epochs"][-1]["lr"] = lr_epoch
            if campfire is not None:  # true per-layer weight sparsity (fraction of zero weights)
                metrics["epochs"][-1]["weight_sparsity_target"] = campfire.last_target or 0.0
                metrics["epochs"][-1]["weight_sparsity"] = campfire.sparsity()
            bar.set_postfix(test_acc=f"{metrics['epochs'][-1]['test_acc']:.2f}")
            done = epoch == cfg.epochs - 1 or (cfg.max_steps is not None and step >= cfg.max_steps)
            checkpoint(epoch + 1, 0, shuffle.get_state(), done)
            if done:
                break
    except _Interrupt as intr:
        # Resuming redraws this epoch's order from its start state and skips the batches done
        # (after the epoch's last batch: none left, so the resumed run goes on to the epoch's end).
        path = checkpoint(intr.epoch, intr.batch, intr.shuffle_state, False)
        raise TrainingInterrupted(step, path, intr.signum) from None
    finally:
        bar.close()
        stop.restore()
        act_density.remove()
        if campfire is not None:
            campfire.remove()
    metrics["steps"] = step
    metrics["wall_s"] = round(wall_before + time.time() - t0, 3)
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


class _Interrupt(Exception):
    def __init__(self, signum: int, epoch: int, batch: int, shuffle_state: torch.Tensor) -> None:
        self.signum, self.epoch, self.batch, self.shuffle_state = signum, epoch, batch, shuffle_state


class _StopFlag:
    """SIGINT/SIGTERM set a flag (main thread only); ``any`` tells every rank after each step."""

    def __init__(self, d: distributed.Dist) -> None:
        self.d = d
        self.signum = 0
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        # A repeated signal changes nothing: torchrun follows a terminal's SIGINT with SIGTERM,
        # and the run should still reach its checkpoint.
        self.signum = self.signum or signum

    def any(self) -> bool:
        code = self.signum
        if self.d.enabled:  # the ranks stop after the same step
            t = torch.tensor([code], dtype=torch.int64)
            self.d.max_(t)
            code = int(t.item())
        self.signum = code
        return code != 0

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _set_lr(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, factor: float) -> None:
    """Every group's lr = the scheduler's lr for this epoch x ``factor`` (warm-up). The scheduler's
    lr is read from its state (``get_last_lr``), which a checkpoint holds, so a resumed run warms up
    exactly as an uninterrupted one."""
    for group, lr in zip(opt.param_groups, sched.get_last_lr()):
        group["lr"] = lr * factor


def _interrupt_step() -> int | None:
    text = os.environ.get(INTERRUPT_ENV, "").strip()
    if not text:
        return None
    try:
        return check_param(INTERRUPT_ENV, int(text), 1, 1 << 40)
    except ValueError:
        raise ValueError(f"{INTERRUPT_ENV} = {text!r} is out of range; allowed: a step count >= 1") from None


def _steps_per_epoch(n: int, global_batch: int, world: int) -> int:
    """Global batches per epoch: a last partial batch too small to give every rank a sample is dropped."""
    return n // global_batch + (1 if n % global_batch >= world else 0)


def _rank_batches(split: Split, batch_size: int, d: distributed.Dist, generator: torch.Generator,
                  first: int = 0):
    """This rank's part of each global batch, with the global batch's size, from global batch ``first`` on.

    Every rank draws the same permutation; global batch k is ``order[k*B : (k+1)*B]`` with
    B = batch_size x world size (the single-process batches at that batch size), and rank r
    takes its elements r, r + W, r + 2W, ... (DistributedSampler's interleaving).
    """
    n = len(split)
    order = torch.randperm(n, generator=generator)  # the single-process order (Split.batches)
    gb = batch_size * d.world_size
    for i in range(first * gb, n, gb):
        idx = order[i:i + gb]
        if len(idx) < d.world_size:
            break
        mine = idx[d.rank::d.world_size] if d.enabled else idx
        yield split.images[mine], split.labels[mine], len(idx)


def _evaluate(model: nn.Module, split: Split, d: distributed.Dist) -> tuple[float, float]:
    """``evaluate`` over the whole split; under torch.distributed each rank takes every W-th sample."""
    if not d.enabled:
        return evaluate(model, split)
    part = Split(split.images[d.rank::d.world_size], split.labels[d.rank::d.world_size])
    loss, acc = evaluate(model, part) if len(part) else (0.0, 0.0)
    loss_sum, correct, n = d.sum_floats([loss * len(part), round(acc * len(part) / 100.0), len(part)])
    return loss_sum / n, 100.0 * correct / n


def _reduce_epoch_counts(d: distributed.Dist, acc: list, prune_layers: dict,
                         act_density: ActivationDensity) -> tuple[float, int, int]:
    """Sum this epoch's loss, accuracy, density and element counts over ranks (in place)."""
    if not d.enabled:
        return acc[0], acc[1], acc[2]
    names = sorted(act_density.counts)
    ints = [v for n in names for v in act_density.counts[n]]
    for n in sorted(prune_layers):
        st = prune_layers[n].stats
        ints += [st.elements, st.nonzero_before, st.nonzero_after]
    ints += [acc[1], acc[2]]
    t = d.sum_(torch.tensor(ints, dtype=torch.int64)).tolist()
    for i, n in enumerate(names):
        act_density.counts[n] = t[4 * i: 4 * i + 4]
    k = 4 * len(names)
    for n in sorted(prune_layers):
        st = prune_layers[n].stats
        st.elements, st.nonzero_before, st.nonzero_after = t[k: k + 3]
        k += 3
    loss_sum = d.sum_floats([acc[0]])[0]
    return loss_sum, t[k], t[k + 1]


def _load_checkpoint(path: Path, cfg: TrainConfig, d: distributed.Dist) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy RNG states inside
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a sparsetrain checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: version = {ckpt.get('version')!r}; allowed: {CHECKPOINT_VERSION}")
    if ckpt["finished"]:
        raise ValueError(f"{path}: that run finished; nothing to resume")
    if ckpt["world_size"] != d.world_size:
        raise ValueError(f"{path} was written by {ckpt['world_size']} process(es); resume it with world size "
                         f"{ckpt['world_size']} (--nproc-per-node or torchrun), not {d.world_size}")
    differ = settings_differ(cfg, ckpt["config"])
    if differ:
        raise ValueError(f"{path}: the run was started with other settings ({', '.join(differ)}: "
                         + ", ".join(f"{t!r} there, {m!r} now" for t, m in differ.values())
                         + "); resume with the same arguments")
    return ckpt


def settings_differ(cfg: TrainConfig, recorded: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """field -> (recorded value, ``cfg``'s) for every field in which ``cfg`` is another run than the one a
    checkpoint's or a metrics file's ``config`` records. The one rule for "the same run": every field but
    RESUME_MAY_CHANGE; a field missing from an older file reads as its ADDED_LATER default."""
    mine, theirs = asdict(cfg), {**ADDED_LATER, **recorded}
    return {k: (theirs.get(k), v) for k, v in mine.items() if k not in RESUME_MAY_CHANGE and v != theirs.get(k)}


def _save_checkpoint(run_dir: Path | None, d: distributed.Dist, cfg: TrainConfig, model: nn.Module,
                     opt: torch.optim.Optimizer, sched: Any, campfire: CampfirePruner | None, prune_layers: dict,
                     act_density: ActivationDensity, acc: list, device: torch.device, metrics: dict[str, Any],
                     data: dict[str, Any], wall_s: float, finished: bool) -> Path | None:
    """Write ``checkpoint.pt`` atomically (rank 0; the other ranks send their random states)."""
    if run_dir is None:
        return None
    mine = {"pruners": {n: pr.rng_state() for n, pr in prune_layers.items()},
            "act_counts": {k: list(v) for k, v in act_density.counts.items()}, "acc": list(acc),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    ranks = d.gather(mine)
    if not d.is_writer:
        return None
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": asdict(cfg),
             "world_size": d.world_size, "finished": finished, "data": data,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "campfire": campfire.state() if campfire is not None else None, "ranks": ranks,
             "metrics": {"epochs": metrics["epochs"], "golden": metrics["golden"], "wall_s": wall_s,
                         "resumed_at_steps": metrics.get("resumed_at_steps", [])}}
    path = run_dir / CHECKPOINT_NAME
    tmp = run_dir / f".{CHECKPOINT_NAME}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash leaves the previous checkpoint intact
    return path


def _train_worker(cfg: TrainConfig, out_dir: str | Path | None, overwrite: bool, resume: bool, results: Any) -> None:
    """One local rank of :func:`train_distributed` (module level: spawned processes import it)."""
    try:
        metrics = train(cfg, out_dir, overwrite=overwrite, resume=resume)
        if int(os.environ["RANK"]) == 0:
            results.put(("done", metrics))
    except TrainingInterrupted as exc:
        if int(os.environ["RANK"]) == 0:
            results.put(("interrupted", (exc.step, exc.checkpoint, exc.signum)))


def train_distributed(cfg: TrainConfig, out_dir: str | Path | None, nproc_per_node: int, *,
                      overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """:func:`train` in ``nproc_per_node`` local worker processes (gloo on CPU, nccl on GPUs).

    ``cfg.batch_size`` is per process: the global batch is ``batch_size x nproc_per_node``.
    Returns rank 0's metrics; raises :class:`TrainingInterrupted` like ``train``.
    """
    import torch.multiprocessing as mp

    if out_dir is not None:
        check_run_dir(Path(out_dir), overwrite=overwrite, resume=resume)
    results = mp.get_context(distributed.start_method()).SimpleQueue()
    distributed.launch_local(nproc_per_node, _train_worker, cfg, out_dir, overwrite, resume, results)
    kind, value = results.get()
    if kind == "interrupted":
        raise TrainingInterrupted(*value)
    return value


def _run_info(cfg: TrainConfig, step: int, d: distributed.Dist) -> dict[str, Any]:
    # The tensors are those of one rank's shard (batch_size samples) of the global batch.
    return {"model": cfg.model, "seed": cfg.seed, "p": cfg.p, "prune": cfg.prune, "N_F": cfg.n_f,
            "estimator": cfg.estimator, "two_pass": cfg.two_pass, "batch_size": cfg.batch_size, "step": step,
            "width_mult": cfg.width_mult, "input_size": cfg.input_size, "dataset": "fashion-mnist",
            "rank": d.rank, "world_size": d.world_size, "global_batch": cfg.batch_size * d.world_size}


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
