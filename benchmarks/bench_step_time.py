"""Per-step training time of the networks, as `sparsetrain train` runs them, on real Fashion-MNIST.

Each network is built by ``golden.train.make_model`` (pruning layers active, p = 0.9 unless
``--no-prune``), carries the same density hooks as a training run (``ActivationDensity``) and
takes momentum-SGD steps on real batches. N_F + 1 untimed warm-up steps fill the threshold FIFOs
first, so the timed steps are pruned ones. The networks are timed in alternating blocks so
that load changes on a shared machine hit them alike; each prints the median step time over
its blocks and its ratio to the first network.

    .venv/bin/python benchmarks/bench_step_time.py                       # resnet18:0.25 alexnet:0.5 mobilenet:0.5
    .venv/bin/python benchmarks/bench_step_time.py --models mobilenet:0.5 --profile   # torch.profiler table
    .venv/bin/python benchmarks/bench_step_time.py --threads 2            # torch's intra-op threads
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sparsetrain.golden.data import fashion_mnist
from sparsetrain.golden.networks import MODEL_NAMES
from sparsetrain.golden.train import ActivationDensity, TrainConfig, make_model


@dataclass
class Arm:
    label: str
    model: nn.Module
    opt: torch.optim.Optimizer
    hooks: ActivationDensity | None
    times: list[float]


def parse_model(spec: str) -> tuple[str, float]:
    name, _, width = spec.partition(":")
    if name not in MODEL_NAMES:
        raise SystemExit(f"--models: {name!r} is not a model; allowed: {', '.join(MODEL_NAMES)}")
    try:
        return name, float(width or 1.0)
    except ValueError:
        raise SystemExit(f"--models: width in {spec!r} is not a number (expected NAME:WIDTH, e.g. mobilenet:0.5)")


def train_steps(arm: Arm, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for x, y in batches:
        arm.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(arm.model(x), y)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        arm.opt.step()


def build_arm(name: str, width: float, args: argparse.Namespace) -> Arm:
    cfg = TrainConfig(model=name, width_mult=width, p=args.p, prune=not args.no_prune, seed=0, progress=False)
    model = make_model(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    hooks = None if args.no_hooks else ActivationDensity(model)
    return Arm(f"{name} x{width:g}", model, opt, hooks, [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18:0.25", "alexnet:0.5", "mobilenet:0.5"],
                    help="NAME:WIDTH, the first is the reference of the ratios")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per block")
    ap.add_argument("--blocks", type=int, default=3, help="alternating blocks per network")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--p", type=float, default=0.9)
    ap.add_argument("--no-prune", action="store_true", help="pruning layers observe only (the baseline)")
    ap.add_argument("--no-hooks", action="store_true", help="without the per-conv density counters")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table per network")
    args = ap.parse_args(argv)
    if not 1 <= args.batch_size <= 4096 or args.steps < 1 or args.blocks < 1 or not 1 <= args.threads <= 256:
        raise SystemExit("--batch-size 1..4096, --steps >= 1, --blocks >= 1, --threads 1..256")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as sparsetrain train does
    n_warm = TrainConfig().n_f + 1
    data = fashion_mnist("train", samples=args.batch_size * (n_warm + args.steps * args.blocks))
    batches = list(data.batches(args.batch_size, generator=torch.Generator().manual_seed(0)))
    warm, timed = batches[:n_warm], batches[n_warm:]
    arms = [build_arm(*parse_model(s), args) for s in args.models]
    for arm in arms:
        train_steps(arm, warm)
    print(f"batch {args.batch_size}, {args.threads} thread(s), {'no pruning' if args.no_prune else f'p = {args.p}'}"
          f"{', no density hooks' if args.no_hooks else ''}; {args.blocks} blocks of {args.steps} steps, "
          f"interleaved", flush=True)
    for b in range(args.blocks):
        for arm in arms:
            chunk = timed[b * args.steps:(b + 1) * args.steps]
            t0 = time.perf_counter()
            train_steps(arm, chunk)
            arm.times.append((time.perf_counter() - t0) / len(chunk))
    ref = statistics.median(arms[0].times)
    for arm in arms:
        med = statistics.median(arm.times)
        print(f"{arm.label:16s} {med:7.3f} s/step (blocks: {', '.join(f'{t:.3f}' for t in arm.times)})  "
              f"ratio to {arms[0].label}: {med / ref:5.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for arm in arms:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train_steps(arm, timed[:1])
            print(f"\n{arm.label}: one step, by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
