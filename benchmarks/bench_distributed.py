"""Throughput of golden training on 1 vs 2 processes (gloo, CPU), and what the extra all-reduces cost.

Three runs of the same training at the same global batch (``--batch-size`` is the global batch
here): one process with one torch thread, one process with ``--nproc`` threads, and ``--nproc``
processes with one thread each (``train_distributed``). Throughput is samples per second over
the steps after ``--warmup`` (rank 0's step clock). In the distributed run every collective that
single-process training does not need is timed on rank 0:

* pruning thresholds: the all-reduce of every pruned layer's ``[sum|g|, n]`` (one per step in
  FIFO mode, one per layer in ``--two-pass`` mode) and the epoch-end metric sums;
* BatchNorm statistics of the global batch (CPU sync BatchNorm; forward and backward);
* the stop flag (SIGINT/SIGTERM agreement), one tiny all-reduce per step.

DDP's own gradient all-reduce is not "extra" (any data-parallel training has it); it overlaps
the backward pass and is included in the step time. The time inside a blocking collective
includes waiting for the slower rank, so the per-category times are an upper bound; the cost
itself is measured by an ablated distributed run in which those collectives are no-ops
(per-rank BatchNorm, local thresholds; wrong results, right timing): cost = 1 - ablated step
time / full step time. A gloo latency probe (a 2-element all-reduce, median of many) gives the
bare per-call cost. Prints one JSON object and a summary; ratios come from one run. The
machine may be shared: compare ratios, not seconds.

    .venv/bin/python benchmarks/bench_distributed.py --model resnet18 --width-mult 0.25 --steps 30
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sparsetrain.golden.training import distributed
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.networks import MODEL_NAMES
from sparsetrain.golden.training.train import TrainConfig, train


class _Timer:
    """Wall time and calls per category of the extra collectives (rank 0)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, name: str, category: str) -> None:
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[category] = self.seconds.get(category, 0.0) + time.perf_counter() - t0
                self.calls[category] = self.calls.get(category, 0) + 1
        setattr(owner, name, staticmethod(timed) if isinstance(owner.__dict__.get(name), staticmethod) else timed)


def _step_clock(stamps: list[float]):
    return lambda step, model: stamps.append(time.perf_counter())


def _latency_probe(d: distributed.Dist, n: int = 300) -> float:
    t = torch.zeros(2, dtype=torch.float64)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        d.sum_(t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(cfg: TrainConfig, out_file: str, ablate: bool) -> None:
    """One rank of the distributed run: time the training and its extra collectives."""
    timer = _Timer()
    if ablate:  # the extra collectives become no-ops (this worker process only)
        distributed.Dist.sum_ = lambda self, t: t
        distributed.Dist.max_ = lambda self, t: t
        distributed.sync_batchnorm = lambda model, d, device: model
    elif os.environ["RANK"] == "0":
        timer.wrap(distributed.Dist, "sum_", "thresholds_and_metrics")
        timer.wrap(distributed.Dist, "max_", "stop_flag")
        # forward does every all-reduce of the sync BatchNorm (its backward applies it again)
        timer.wrap(distributed._SumOverRanks, "forward", "batchnorm_stats")
    stamps: list[float] = []
    train(cfg, None, step_callback=_step_clock(stamps))
    seconds, calls = dict(timer.seconds), dict(timer.calls)
    # a separate small job for the latency probe (train has torn its process group down)
    d = distributed.setup(torch.device("cpu"))
    latency = _latency_probe(d)
    distributed.teardown(d)
    if os.environ["RANK"] == "0":
        Path(out_file).write_text(json.dumps({"stamps": stamps, "seconds": seconds, "calls": calls,
                                              "latency_s": latency}))


def throughput(stamps: list[float], warmup: int, global_batch: int) -> float:
    s = stamps[warmup:]
    return (len(s) - 1) * global_batch / (s[-1] - s[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODEL_NAMES, default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (split over the processes)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the throughput")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--two-pass", action="store_true")
    args = ap.parse_args(argv)
    if args.batch_size % args.nproc:
        print(f"--batch-size {args.batch_size} must be a multiple of --nproc {args.nproc}", file=sys.stderr)
        return 2
    if args.warmup + 2 > args.steps:
        print(f"--steps must exceed --warmup + 1 (got {args.steps}, {args.warmup})", file=sys.stderr)
        return 2
    cfg = TrainConfig(model=args.model, width_mult=args.width_mult, batch_size=args.batch_size, epochs=1,
                      max_steps=args.steps, train_samples=args.steps * args.batch_size, test_samples=200,
                      threads=1, progress=False, seed=0, two_pass=args.two_pass)
    train_split = fashion_mnist("train", samples=cfg.train_samples)
    test_split = fashion_mnist("test", samples=cfg.test_samples)
    res: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    for threads in sorted({1, args.nproc}):
        stamps: list[float] = []
        train(replace(cfg, threads=threads), None, train_split=train_split, test_split=test_split,
              step_callback=_step_clock(stamps))
        res[f"1proc_{threads}threads_samples_per_s"] = throughput(stamps, args.warmup, args.batch_size)
    torch.set_num_threads(1)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ablate in (False, True):
            out = Path(tmp) / f"rank0-{ablate}.json"
            distributed.launch_local(args.nproc, worker, replace(cfg, batch_size=args.batch_size // args.nproc),
                                     str(out), ablate)
            runs[ablate] = json.loads(out.read_text())
    r0 = runs[False]
    res[f"{args.nproc}proc_ablated_samples_per_s"] = throughput(runs[True]["stamps"], args.warmup, args.batch_size)
    steps_timed = len(r0["stamps"])
    tp = throughput(r0["stamps"], args.warmup, args.batch_size)
    step_s = args.batch_size / tp
    res[f"{args.nproc}proc_samples_per_s"] = tp
    extra = {k: {"calls_per_step": r0["calls"][k] / steps_timed, "ms_per_step": 1e3 * v / steps_timed,
                 "share_of_step": v / steps_timed / step_s} for k, v in r0["seconds"].items()}
    res["extra_collectives"] = extra
    res["extra_wait_share_of_step_upper_bound"] = sum(e["share_of_step"] for e in extra.values())
    res["extra_cost_share_of_step"] = 1.0 - tp / res[f"{args.nproc}proc_ablated_samples_per_s"]
    res["gloo_2_float_allreduce_latency_ms"] = 1e3 * r0["latency_s"]
    one = res["1proc_1threads_samples_per_s"]
    res[f"speedup_{args.nproc}proc_vs_1proc_1thread"] = tp / one
    res[f"speedup_{args.nproc}proc_vs_1proc_{args.nproc}threads"] = tp / res[f"1proc_{args.nproc}threads_samples_per_s"]
    print(json.dumps(res, indent=1))
    print(f"\n{args.model} x{args.width_mult}, global batch {args.batch_size}, {args.steps} steps "
          f"({os.cpu_count()} CPUs; ratios from one run, the machine may be shared):")
    print(f"  throughput {args.nproc} processes / 1 process 1 thread: {res[f'speedup_{args.nproc}proc_vs_1proc_1thread']:.2f}x;"
          f" / 1 process {args.nproc} threads: {res[f'speedup_{args.nproc}proc_vs_1proc_{args.nproc}threads']:.2f}x")
    for k, e in extra.items():
        print(f"  {k}: {e['calls_per_step']:.1f} all-reduces/step, {e['ms_per_step']:.2f} ms/step = "
              f"{100 * e['share_of_step']:.1f}% of a step")
    print(f"  time inside the extra collectives (incl. waiting for the other rank): "
          f"{100 * res['extra_wait_share_of_step_upper_bound']:.1f}% of a step")
    print(f"  cost of the extra collectives (vs the ablated run): {100 * res['extra_cost_share_of_step']:.1f}% "
          f"of a step; gloo latency of one tiny all-reduce: {res['gloo_2_float_allreduce_latency_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
