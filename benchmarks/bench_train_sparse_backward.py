"""Training with the direct sparse convolution backward vs torch's dense backward (golden model).

Two checks, on AlexNet with activation-gradient pruning at p = 0.99 (Fashion-MNIST, 32x32):

* accuracy: `golden.training.train.train` twice per seed, once with `sparse_backward=True` (what
  `sparsetrain train --sparse-backward` runs) and once without, same seed, same data; the
  test accuracies must agree within the spread between seeds (the noise of training itself);
* speed: two copies of the same model, one converted with `convert_model`, take training steps
  (forward, backward, SGD step) on the same batches in alternation; the per-step time ratio
  dense / sparse is summarised as median [min .. max] over the step pairs. The first steps run
  without pruning (the threshold FIFO fills), so only steps after those are timed.

    .venv/bin/python benchmarks/bench_train_sparse_backward.py --json out/bench_train_sparse_backward.json
    .venv/bin/python benchmarks/bench_train_sparse_backward.py --quick
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sparsetrain.arch.fixedpoint import check_param
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.pruning import pruners
from sparsetrain.golden.training.sparse_backward import SparseBackwardConv2d, convert_model
from sparsetrain.golden.training.train import TrainConfig, make_model, train


def accuracy(args: argparse.Namespace) -> list[dict]:
    rows = []
    for seed in args.seeds:
        row: dict = {"seed": seed}
        for sparse in (False, True):
            cfg = TrainConfig(model="alexnet", p=args.p, epochs=args.epochs, batch_size=args.acc_batch,
                              train_samples=args.train_samples, test_samples=args.test_samples, seed=seed,
                              width_mult=args.acc_width_mult, threads=args.threads, progress=False,
                              sparse_backward=sparse)
            t0 = time.perf_counter()
            metrics = train(cfg, None)
            key = "sparse" if sparse else "dense"
            row[key] = {"test_acc": metrics["summary"]["test_acc"], "wall_s": time.perf_counter() - t0,
                        "steps": metrics["steps"], "grad_density": metrics["summary"]["grad_density"]}
            print(f"seed {seed} {key:6s}: test acc {row[key]['test_acc']:.2f} %  ({metrics['steps']} steps, "
                  f"{row[key]['wall_s']:.0f} s, pruned-gradient density {row[key]['grad_density']:.3f})", flush=True)
        row["difference"] = row["sparse"]["test_acc"] - row["dense"]["test_acc"]
        rows.append(row)
    return rows


def step_times(args: argparse.Namespace) -> dict:
    """Alternating training steps of a dense and a converted copy of the same model."""
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as golden.training.train does
    cfg = TrainConfig(model="alexnet", p=args.p, batch_size=args.batch, seed=args.seeds[0],
                      width_mult=args.width_mult)
    dense = make_model(cfg)
    sparse = convert_model(copy.deepcopy(dense))
    for model in (dense, sparse):
        model.train()
        for pruner in pruners(model).values():
            pruner.reset_state()  # identical pruning random streams in both copies
    opts = [torch.optim.SGD(m.parameters(), lr=cfg.learning_rate, momentum=0.9) for m in (dense, sparse)]
    split = fashion_mnist("train", samples=args.batch * (args.warmup + args.timed_steps), input_size=32,
                          subset_seed=args.seeds[0])
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for step, (x, y) in enumerate(split.batches(args.batch, generator=torch.Generator().manual_seed(0))):
        order = [(0, "dense"), (1, "sparse")] if step % 2 == 0 else [(1, "sparse"), (0, "dense")]
        for index, name in order:
            model, opt = (dense, sparse)[index], opts[index]
            torch.manual_seed(step)  # same dropout masks in both copies
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    ratios = [d / s for d, s in zip(times["dense"], times["sparse"])]
    convs = [m for m in sparse.modules() if isinstance(m, SparseBackwardConv2d)]
    stats = {name: {"sparse_calls": m.sparse_stats.sparse_calls, "dense_calls": m.sparse_stats.dense_calls,
                    "last_density": m.sparse_stats.last_density}
             for name, m in sparse.named_modules() if m in convs}
    result = {"dense_median_s": statistics.median(times["dense"]), "sparse_median_s": statistics.median(times["sparse"]),
              "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
              "timed_steps": len(ratios), "layers": stats}
    print(f"\nper training step (AlexNet width {args.width_mult}, batch {args.batch}, p={args.p}, {args.threads} thread(s), "
          f"{len(ratios)} alternating step pairs after {args.warmup} warm-up steps):")
    print(f"  dense {result['dense_median_s'] * 1e3:.0f} ms, sparse backward {result['sparse_median_s'] * 1e3:.0f} ms "
          f"(medians); dense / sparse per step pair {result['ratio']['median']:.2f}x "
          f"[{result['ratio']['min']:.2f}..{result['ratio']['max']:.2f}]")
    for name, s in stats.items():
        print(f"  {name:18s} sparse kernel {s['sparse_calls']:3d} calls, dense fallback {s['dense_calls']:3d}, "
              f"last dO density {s['last_density']:.3f}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny subsets, narrow model")
    ap.add_argument("--p", type=float, default=0.99)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    # accuracy runs: the settings of docs/reproduction.md (AlexNet x0.25, 3 epochs of 8000 images)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--acc-batch", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--acc-width-mult", type=float, default=0.25, help="channel scale of the accuracy runs")
    ap.add_argument("--batch", type=int, default=128, help="batch of the timed steps")
    ap.add_argument("--width-mult", type=float, default=1.0, help="channel scale of the timed steps")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps first (FIFO depth 4 fills)")
    ap.add_argument("--timed-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    ap.add_argument("--no-steps", dest="steps", action="store_false", help="skip the timed steps")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.train_samples, args.test_samples, args.batch, args.acc_batch = [0], 512, 256, 32, 32
        args.epochs = 1
        args.acc_width_mult, args.width_mult, args.warmup, args.timed_steps = 0.25, 0.25, 5, 3
    check_param("threads", args.threads, 1, 256)
    check_param("timed_steps", args.timed_steps, 1, 10000)
    check_param("warmup", args.warmup, 5, 10000, allowed="5 .. 10000 (the FIFO of depth 4 must be full)")
    t0 = time.perf_counter()
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "loadavg_start": os.getloadavg()}
    if args.steps:
        results["step"] = step_times(args)
    if args.accuracy:
        results["accuracy"] = accuracy(args)
        diffs = [r["difference"] for r in results["accuracy"]]
        dense = [r["dense"]["test_acc"] for r in results["accuracy"]]
        print(f"\ntest accuracy sparse - dense, same seed: {', '.join(f'{d:+.2f}' for d in diffs)} points; "
              f"dense accuracy across seeds spans {max(dense) - min(dense):.2f} points")
    results["loadavg_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t0
    print(f"wall time {results['wall_s']:.0f} s; load average {results['loadavg_start'][0]:.1f} at start, "
          f"{results['loadavg_end'][0]:.1f} at end")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
