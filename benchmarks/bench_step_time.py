"""Per-step training time of the networks, as `sparsetrain train` runs them, on real Fashion-MNIST.

Each network is built by ``golden.training.train.make_model`` (pruning layers active, p = 0.9 unless
``--no-prune``), carries the same density hooks as a training run (``ActivationDensity``) and
takes momentum-SGD steps on real batches. N_F + 1 untimed warm-up steps fill the threshold FIFOs
first, so the timed steps are pruned ones. The networks are timed in alternating blocks so
that load changes on a shared machine hit them alike; each prints the median step time over
its blocks and its ratio to the first network.

    .venv/bin/python benchmarks/bench_step_time.py                       # resnet18:0.25 alexnet:0.5 mobilenet:0.5
    .venv/bin/python benchmarks/bench_step_time.py --models mobilenet:0.5 --profile   # torch.profiler table
    .venv/bin/python benchmarks/bench_step_time.py --threads 2            # torch's intra-op threads
    .venv/bin/python benchmarks/bench_step_time.py --count-nonzero both   # torch's count_nonzero vs ours

``--count-nonzero both`` times every network twice in the same run, once with the density
counters on ``torch.count_nonzero`` (as before) and once on ``golden.training.pruning.count_nonzero``.
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

from sparsetrain.golden.training import pruning
from sparsetrain.golden.training import train as golden_train
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.networks import MODEL_NAMES
from sparsetrain.golden.training.train import ActivationDensity, TrainConfig, make_model


@dataclass
class Arm:
    label: str
    model: nn.Module
    opt: torch.optim.Optimizer
    hooks: ActivationDensity | None
    times: list[float]
    counter: str = "numpy"  # which count_nonzero the density counters use


def torch_count_nonzero(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t))


COUNTERS = {"numpy": pruning.count_nonzero, "torch": torch_count_nonzero}


def use_counter(name: str) -> None:
    """Point the training code's density counters at one count_nonzero implementation."""
    pruning.count_nonzero = golden_train.count_nonzero = COUNTERS[name]


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


def build_arm(name: str, width: float, args: argparse.Namespace, counter: str) -> Arm:
    cfg = TrainConfig(model=name, width_mult=width, p=args.p, prune=not args.no_prune, seed=0, progress=False)
    model = make_model(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    hooks = None if args.no_hooks else ActivationDensity(model)
    label = f"{name} x{width:g}" + (f" [{counter}]" if args.count_nonzero == "both" else "")
    return Arm(label, model, opt, hooks, [], counter)


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
    ap.add_argument("--keep-denormals", action="store_true",
                    help="do not flush denormal floats to zero (sparsetrain train flushes them)")
    ap.add_argument("--count-nonzero", choices=("numpy", "torch", "both"), default="numpy",
                    help="density counters on golden.training.pruning.count_nonzero (numpy), torch's, or both in turn")
    args = ap.parse_args(argv)
    if not 1 <= args.batch_size <= 4096 or args.steps < 1 or args.blocks < 1 or not 1 <= args.threads <= 256:
        raise SystemExit("--batch-size 1..4096, --steps >= 1, --blocks >= 1, --threads 1..256")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)  # sparsetrain train flushes them
    n_warm = TrainConfig().n_f + 1
    data = fashion_mnist("train", samples=args.batch_size * (n_warm + args.steps * args.blocks))
    batches = list(data.batches(args.batch_size, generator=torch.Generator().manual_seed(0)))
    warm, timed = batches[:n_warm], batches[n_warm:]
    counters = ["torch", "numpy"] if args.count_nonzero == "both" else [args.count_nonzero]
    arms = [build_arm(*parse_model(s), args, c) for s in args.models for c in counters]
    for arm in arms:
        use_counter(arm.counter)
        train_steps(arm, warm)
    print(f"batch {args.batch_size}, {args.threads} thread(s), {'no pruning' if args.no_prune else f'p = {args.p}'}"
          f"{', no density hooks' if args.no_hooks else ''}{', denormals kept' if args.keep_denormals else ''}; {args.blocks} blocks of {args.steps} steps, "
          f"interleaved", flush=True)
    for b in range(args.blocks):
        for arm in arms:
            chunk = timed[b * args.steps:(b + 1) * args.steps]
            use_counter(arm.counter)
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
            use_counter(arm.counter)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                train_steps(arm, timed[:1])
            print(f"\n{arm.label}: one step, by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            print_shares(prof)
    return 0


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::thnn_conv2d",
            "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward")


def print_shares(prof) -> None:
    """Share of the profiled step in depthwise convs (weight C x 1 x K x K, K > 1), other convs,
    BatchNorm, and the density counters (count_nonzero; numpy's count does not show as an op)."""
    total, shares = 0.0, {"depthwise conv": 0.0, "other conv": 0.0, "batch norm": 0.0, "count_nonzero": 0.0}
    for k in prof.key_averages(group_by_input_shape=True):
        total += k.self_cpu_time_total
        if k.key in CONV_OPS:
            # forward ops: (input, weight, ...); convolution_backward: (grad_output, input, weight, ...)
            i = 1 if k.key == "aten::convolution_backward" else 0
            x, w = (k.input_shapes[i:i + 2] + [[], []])[:2]
            dw = len(x) == 4 and len(w) == 4 and w[1] == 1 and w[2] > 1 and x[1] == w[0] > 1
            shares["depthwise conv" if dw else "other conv"] += k.self_cpu_time_total
        elif "batch_norm" in k.key:
            shares["batch norm"] += k.self_cpu_time_total
        elif k.key == "aten::count_nonzero":
            shares["count_nonzero"] += k.self_cpu_time_total
    print("share of the step: " + ", ".join(f"{n} {100 * v / total:.1f} %" for n, v in shares.items()))


if __name__ == "__main__":
    sys.exit(main())
