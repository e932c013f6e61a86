"""Shared fixtures: a short real pruned training run with golden tensors, and test seeds.

``small_golden_run`` trains a small AlexNet (width 1/8, Conv-ReLU blocks) on a Fashion-MNIST
subset for 120 steps (batch 32) with p = 0.9 and dumps the golden tensors of two conv layers at the last
step (FIFO full, so pruning is on). It runs once per code version and parameter set: the
result is cached under build/golden-cache/<key>/ (key = hash of the parameters and of every
source file under ``TRAINING_SOURCES``: all of the golden package, its C++ included), guarded
by a file lock so that pytest-xdist workers share it.

Seeds: every randomised test takes the one ``seed`` fixture (or ``rng`` / ``rng_for``, made from
it). Its value is ``--seed N``, else $SPARSETRAIN_SEED, else ``DEFAULT_SEED``; pytest prints it
in its header and each test prints it with its output, so a failure is reproduced with the same
option or variable.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "golden-cache"
# Source folders and files (relative to the repository) that key the training cache: training uses
# much of the golden package (campfire.py, sparse_backward.py and its C++ too) and the contract's
# number format and output folders, so a list of single modules would go stale;
# tests/test_golden_cache.py checks that training imports nothing outside these.
TRAINING_SOURCES = ("golden", "sparsetrain/arch", "sparsetrain/outdir.py", "sparsetrain/__init__.py")  # folders or files
SOURCE_SUFFIXES = (".py", ".cpp", ".h")
DEFAULT_SEED = 1234
SEED_ENV = "SPARSETRAIN_SEED"

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


def training_sources(root: Path = REPO) -> list[Path]:
    """Every source file that keys the training cache, in a fixed order."""
    files = []
    for name in TRAINING_SOURCES:
        path = root / name
        files += [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sorted(f for f in files if f.suffix in SOURCE_SUFFIXES and "__pycache__" not in f.parts)


def _cache_key(config_dict: dict, root: Path = REPO) -> str:
    h = hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode())
    for path in training_sources(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
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


def session_seed(config: pytest.Config) -> int:
    """``--seed``, else $SPARSETRAIN_SEED, else DEFAULT_SEED."""
    opt = config.getoption("seed")
    value = opt if opt is not None else os.environ.get(SEED_ENV, DEFAULT_SEED)
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"seed = {value!r} is not an integer; allowed: --seed N or {SEED_ENV}=N "
                                "with an integer N") from None


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """Seed of a randomised test (``session_seed``); printed with the test's output."""
    value = session_seed(request.config)
    print(f"seed = {value} (reproduce with --seed {value} or {SEED_ENV}={value})")
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with ``seed``."""
    return np.random.default_rng(seed)


@pytest.fixture
def rng_for(seed: int) -> Callable[..., np.random.Generator]:
    """``rng_for(*salt)``: a numpy generator seeded with ``seed`` and ``salt`` (ints or strings), so
    that the parts of one test draw independent, reproducible streams."""
    def make(*salt: int | str) -> np.random.Generator:
        ints = [zlib.crc32(x.encode()) if isinstance(x, str) else int(x) for x in salt]
        return np.random.default_rng([seed, *ints])
    return make


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the machine is shared, and tiny layers run faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None,
                     help=f"seed of every randomised test (default ${SEED_ENV}, else {DEFAULT_SEED})")


def pytest_report_header(config: pytest.Config) -> str:
    return f"seed: {session_seed(config)} (--seed N or {SEED_ENV}=N to change)"


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers this mark itself; without xdist (-p no:xdist) it would be unknown.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker (--dist loadgroup)")
