"""Shared fixtures: a short real pruned training run with golden tensors, and test seeds.

``small_golden_run`` trains a small AlexNet (width 1/8, Conv-ReLU blocks) on a Fashion-MNIST
subset for 120 steps (batch 32) with p = 0.9 and dumps the golden tensors of two conv layers at the last
step (FIFO full, so pruning is on). It runs once per code version and parameter set: the
result is cached under build/golden-cache/<key>/ (key = hash of the parameters and of the
golden model's sources), guarded by a file lock so that pytest-xdist workers share it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "golden-cache"
GOLDEN_SOURCES = tuple(f"golden/training/{n}.py" for n in ("pruning", "networks", "train", "tensors", "data")) + (
    "sparsetrain/arch/fixedpoint.py",)
DEFAULT_SEED = 1234

# conv_relu layers of AlexNet: features.2.conv is 3x3, stride 1, padding 2 (the papers' CIFAR
# change); features.4.conv is 3x3, stride 1, padding 1. Both have a pruning layer on dI.
SMALL_RUN_LAYERS = ["features.2.conv", "features.4.conv"]
SMALL_RUN_STEPS = 120


def small_run_config():
    from sparsetrain.golden.training.train import TrainConfig

    return TrainConfig(model="alexnet", p=0.9, prune=True, epochs=1, batch_size=32, seed=1, n_f=4,
                       train_samples=SMALL_RUN_STEPS * 32, test_samples=1000, max_steps=SMALL_RUN_STEPS,
                       width_mult=0.125, threads=1, progress=False, dump_layers=SMALL_RUN_LAYERS,
                       dump_steps=[SMALL_RUN_STEPS - 1])


def _cache_key(config_dict: dict) -> str:
    h = hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode())
    for name in GOLDEN_SOURCES:
        h.update((REPO / name).read_bytes())
    return h.hexdigest()[:16]


def cached_training_run(cfg) -> Path:
    """Run ``cfg`` once per (config, source) key, under a file lock; return the run dir."""
    from sparsetrain.golden.training.train import METRICS_NAME, train

    key = _cache_key(asdict(cfg))
    run_dir = CACHE / f"{cfg.model}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{run_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (run_dir / METRICS_NAME).is_file():
                tmp = CACHE / f"{run_dir.name}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                train(cfg, tmp)
                shutil.rmtree(run_dir, ignore_errors=True)
                os.replace(tmp, run_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return run_dir


@pytest.fixture(scope="session")
def small_golden_run() -> Path:
    """Run dir of a short real pruned AlexNet training (metrics.json, golden/step_000119/).

    ``sparsetrain.golden.training.tensors.load_golden(small_golden_run)`` loads its golden tensors:
    layers features.2.conv and features.4.conv (conv_relu, stride 1, padding 2 and 1).
    """
    return cached_training_run(small_run_config())


@pytest.fixture
def seed() -> int:
    """Seed of a randomised test: $SPARSETRAIN_SEED if set, else a fixed default; printed."""
    value = int(os.environ.get("SPARSETRAIN_SEED", DEFAULT_SEED))
    print(f"seed = {value} (set SPARSETRAIN_SEED to reproduce or vary)")
    return value


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the machine is shared, and tiny layers run faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers this mark itself; without xdist (-p no:xdist) it would be unknown.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker (--dist loadgroup)")
