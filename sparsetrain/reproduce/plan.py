"""The reproduction sweep's plan: which runs, with which settings, in which order.

A plan is a JSON file (``docs/data/reproduction_plan.json``)::

    {"format": "sparsetrain-reproduction-plan", "version": 1,
     "networks": [{"model": "resnet18", "width_mult": 0.25},
                  {"model": "alexnet", "width_mult": 0.5, "lr": 0.01, "warmup_steps": 200}],
     "settings": ["baseline", 0.9, 0.7, 0.99],   # run order within a seed (priority first)
     "seeds": [0, 1, 2], "epochs": 15, "batch_size": 128, "lr_schedule": "cosine",
     "train_samples": null, "test_samples": null, "threads": 1}

Runs are ordered seed by seed, within a seed setting by setting (the order of ``settings``),
within a setting network by network, so the first runs of a sweep are every network's
baseline and first p at seed 0. Every run is one ``sparsetrain train`` command (``RunSpec.command``).
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..golden.training.networks import check_model_name
from ..golden.training.pruning import check_rate
from ..golden.training.train import LR_SCHEDULES, TrainConfig

PLAN_FORMAT, PLAN_VERSION = "sparsetrain-reproduction-plan", 1
BASELINE = "baseline"
_KEYS = {"format", "version", "networks", "settings", "seeds", "epochs", "batch_size", "lr_schedule",
         "train_samples", "test_samples", "threads", "note"}


@dataclass(frozen=True)
class Network:
    model: str
    width_mult: float
    lr: float | None = None  # None: golden.training.train's default for the model
    warmup_steps: int = 0  # linear lr warm-up over the first optimizer steps (0: none)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "width_mult": self.width_mult, **({"lr": self.lr} if self.lr is not None else {}),
                **({"warmup_steps": self.warmup_steps} if self.warmup_steps else {})}


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix and the training configuration that runs it."""

    network: Network
    setting: str  # "baseline" or the p as written in the plan ("0.9")
    seed: int
    config: TrainConfig

    @property
    def p(self) -> float | None:
        return None if self.setting == BASELINE else float(self.setting)

    @property
    def name(self) -> str:
        """Run directory name, e.g. ``resnet18-x0.25-p0.9-s0`` or ``alexnet-x0.5-baseline-s1``."""
        s = BASELINE if self.p is None else f"p{self.setting}"
        return f"{self.network.model}-x{self.network.width_mult:g}-{s}-s{self.seed}"

    def command(self, out_dir: str | Path) -> str:
        """The exact ``sparsetrain train`` command of this run (resume: the same plus ``--resume``)."""
        c = self.config
        args = ["sparsetrain", "train", "--model", c.model, "--width-mult", f"{c.width_mult:g}",
                *(["--no-prune"] if not c.prune else ["--p", self.setting]),
                "--epochs", str(c.epochs), "--batch-size", str(c.batch_size), "--lr-schedule", c.lr_schedule,
                *(["--lr", f"{c.lr:g}"] if c.lr is not None else []),
                *(["--warmup-steps", str(c.warmup_steps)] if c.warmup_steps else []), "--seed", str(c.seed),
                *(["--train-samples", str(c.train_samples)] if c.train_samples is not None else []),
                *(["--test-samples", str(c.test_samples)] if c.test_samples is not None else []),
                *(["--threads", str(c.threads)] if c.threads is not None else []),
                "--no-progress", "--out", str(Path(out_dir) / self.name)]
        return shlex.join(args)


@dataclass(frozen=True)
class Plan:
    networks: tuple[Network, ...]
    settings: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr_schedule: str
    train_samples: int | None = None
    test_samples: int | None = None
    threads: int | None = 1
    note: str = ""
    source: str = field(default="", compare=False)

    def runs(self) -> list[RunSpec]:
        """Every run of the matrix in priority order (seed, then setting, then network)."""
        out = []
        for seed in self.seeds:
            for setting in self.settings:
                for net in self.networks:
                    out.append(RunSpec(net, setting, seed, self.config(net, setting, seed)))
        return out

    def config(self, net: Network, setting: str, seed: int) -> TrainConfig:
        prune = setting != BASELINE
        return TrainConfig(model=net.model, width_mult=net.width_mult, lr=net.lr, warmup_steps=net.warmup_steps,
                           prune=prune,
                           p=float(setting) if prune else 0.9, seed=seed, epochs=self.epochs,
                           batch_size=self.batch_size, lr_schedule=self.lr_schedule,
                           train_samples=self.train_samples, test_samples=self.test_samples,
                           threads=self.threads, progress=False)

    def as_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION,
                "networks": [n.as_dict() for n in self.networks],
                "settings": [s if s == BASELINE else float(s) for s in self.settings], "seeds": list(self.seeds),
                "epochs": self.epochs, "batch_size": self.batch_size, "lr_schedule": self.lr_schedule,
                "train_samples": self.train_samples, "test_samples": self.test_samples, "threads": self.threads,
                **({"note": self.note} if self.note else {})}


def _err(where: str, key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{where}: {key} = {value!r} is out of range; allowed: {allowed}")


def _int(where: str, key: str, value: Any, lo: int, hi: int, *, none: bool = False) -> int | None:
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _err(where, key, value, f"an integer {lo} .. {hi}" + (" or null" if none else ""))
    return value


def plan_from_dict(obj: Any, where: str = "plan") -> Plan:
    """A checked :class:`Plan`; every error names the field and its allowed range."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a JSON object; allowed: a reproduction plan (docs/reproduction.md)")
    if obj.get("format") != PLAN_FORMAT:
        raise _err(where, "format", obj.get("format"), repr(PLAN_FORMAT))
    if obj.get("version") != PLAN_VERSION:
        raise _err(where, "version", obj.get("version"), str(PLAN_VERSION))
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    nets = obj.get("networks")
    if not isinstance(nets, list) or not nets:
        raise _err(where, "networks", nets, "a non-empty list of {model, width_mult[, lr][, warmup_steps]}")
    networks = []
    for i, n in enumerate(nets):
        if not isinstance(n, dict) or set(n) - {"model", "width_mult", "lr", "warmup_steps"} or "model" not in n:
            raise _err(where, f"networks[{i}]", n, "an object with model, width_mult and optionally lr, warmup_steps")
        try:
            check_model_name(n["model"])
        except ValueError as exc:
            raise ValueError(f"{where}: networks[{i}]: {exc}") from None
        w = n.get("width_mult", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 8:
            raise _err(where, f"networks[{i}].width_mult", w, "0 < width_mult <= 8")
        lr = n.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10):
            raise _err(where, f"networks[{i}].lr", lr, "0 < lr <= 10 or absent (the model's default)")
        warmup = _int(where, f"networks[{i}].warmup_steps", n.get("warmup_steps", 0), 0, 1 << 30)
        networks.append(Network(n["model"], float(w), None if lr is None else float(lr), warmup))
    if len({(n.model, n.width_mult) for n in networks}) != len(networks):
        raise ValueError(f"{where}: networks lists a (model, width_mult) twice; allowed: each once")
    settings = obj.get("settings")
    if not isinstance(settings, list) or not settings:
        raise _err(where, "settings", settings, f"a non-empty list of {BASELINE!r} and pruning rates 0 <= p < 1")
    names = []
    for s in settings:
        if s == BASELINE:
            names.append(BASELINE)
            continue
        try:
            check_rate(s)
        except ValueError:
            raise _err(where, "settings", s, f"{BASELINE!r} or a pruning rate 0 <= p < 1") from None
        names.append(f"{float(s):g}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: settings lists a setting twice; allowed: each once")
    seeds = obj.get("seeds")
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise _err(where, "seeds", seeds, "a non-empty list of distinct integers >= 0")
    for s in seeds:
        _int(where, "seeds", s, 0, 2**31 - 1)
    schedule = obj.get("lr_schedule", "cosine")
    if schedule not in LR_SCHEDULES:
        raise _err(where, "lr_schedule", schedule, ", ".join(LR_SCHEDULES))
    return Plan(tuple(networks), tuple(names), tuple(seeds), _int(where, "epochs", obj.get("epochs"), 1, 100000),
                _int(where, "batch_size", obj.get("batch_size", 128), 1, 1 << 16), schedule,
                _int(where, "train_samples", obj.get("train_samples"), 1, 60000, none=True),
                _int(where, "test_samples", obj.get("test_samples"), 1, 10000, none=True),
                _int(where, "threads", obj.get("threads", 1), 1, 1024, none=True), str(obj.get("note", "")), where)


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"plan = {str(p)!r} is not a file; allowed: a reproduction plan JSON "
                         f"(docs/data/reproduction_plan.json)")
    try:
        obj = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"plan = {str(p)!r}: not JSON ({(str(exc).splitlines() or [''])[0]})") from None
    return plan_from_dict(obj, str(p))
