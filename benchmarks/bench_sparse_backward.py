"""Dense vs sparse convolution back-propagation on the CPU (Ye et al. 2019, sections 5.2 and 6.3).

For AlexNet and ResNet-18 at CIFAR shapes (32x32 input; the golden model trains on
Fashion-MNIST, so the first conv has 1 input channel instead of 3), the output gradients dO of
every conv come from a real pruned training run of the golden model (a few SGD steps after the
threshold FIFO is full, p in {0.9, 0.99}). Each layer's backward pass (dI and dW; no dI for
the first conv, as in training) is timed side by side with three implementations:

* native: torch's own convolution backward (oneDNN), the fastest dense code available;
* im2col: the same transposed-im2col formulation as the sparse one with dense GEMMs (MKL),
  i.e. the paper's Caffe baseline;
* sparse: golden.sparse_backward (MKL sparse x dense products on dO).

Then a density sweep on one layer finds where sparse stops paying off.

    .venv/bin/python benchmarks/bench_sparse_backward.py            # full run (< 10 min)
    .venv/bin/python benchmarks/bench_sparse_backward.py --quick    # smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from sparsetrain.golden.data import fashion_mnist
from sparsetrain.golden.fixedpoint import check_param
from sparsetrain.golden.networks import build_model
from sparsetrain.golden.pruning import PruneConfig
from sparsetrain.golden.sparse_backward import (ConvCapture, capture_conv_gradients, dense_conv2d_backward,
                                                native_conv2d_backward, sparse_conv2d_backward)

BACKWARDS: dict[str, Callable] = {"native": native_conv2d_backward, "im2col": dense_conv2d_backward,
                                  "sparse": sparse_conv2d_backward}
SWEEP_DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def real_captures(model_name: str, p: float, batch: int, steps: int, width_mult: float,
                  seed: int) -> list[ConvCapture]:
    """Every conv's I, W and pruned dO from the last of `steps` pruned training steps."""
    torch.manual_seed(seed)
    model = build_model(model_name, in_channels=1, width_mult=width_mult, prune=PruneConfig(p=p, n_f=4, seed=seed))
    split = fashion_mnist("train", samples=batch * steps, input_size=32, subset_seed=seed)
    return capture_conv_gradients(model, split.batches(batch, generator=torch.Generator().manual_seed(seed)), steps)


NOISE: list[float] = []  # median / best of every timed call: how noisy the shared machine was


def time_backward(backward: Callable, cap: ConvCapture, grad_output: torch.Tensor, need_input: bool,
                  repeats: int) -> float:
    """Best of `repeats` wall times in seconds (after one warm-up call); the best is the least disturbed."""
    def call() -> None:
        backward(cap.inp, cap.weight, grad_output, cap.stride, cap.padding, cap.dilation, cap.groups,
                 need_input=need_input, need_weight=True)
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    NOISE.append(statistics.median(times) / min(times))
    return min(times)


def time_layers(captures: list[ConvCapture], repeats: int) -> list[dict]:
    rows = []
    for index, cap in enumerate(captures):
        need_input = index > 0  # the first conv's input is the image: no dI in training
        times = {name: time_backward(fn, cap, cap.grad_output, need_input, repeats) for name, fn in BACKWARDS.items()}
        rows.append({"layer": cap.name, "shape": list(cap.grad_output.shape), "density": cap.density, **times})
    return rows


def sweep(cap: ConvCapture, densities: tuple[float, ...], repeats: int, seed: int) -> list[dict]:
    """Same layer, synthetic dO (normal values, uniform random mask) at each density."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for density in densities:
        shape = cap.grad_output.shape
        d_o = torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < density)
        times = {name: time_backward(fn, cap, d_o, True, repeats) for name, fn in BACKWARDS.items()}
        rows.append({"density": density, **times})
    return rows


def break_even(rows: list[dict], baseline: str) -> float | None:
    """Density where sparse time crosses `baseline` time (linear interpolation); None if it never wins."""
    ratio = [(r["density"], r["sparse"] / r[baseline]) for r in rows]
    if ratio[0][1] >= 1.0:
        return None
    for (d0, r0), (d1, r1) in zip(ratio, ratio[1:]):
        if r1 >= 1.0:
            return d0 + (1.0 - r0) * (d1 - d0) / (r1 - r0)
    return float("inf")


def print_layers(title: str, rows: list[dict]) -> dict:
    print(f"\n## {title}")
    print(f"{'layer':28s} {'dO shape':>18s} {'density':>7s} {'native ms':>9s} {'im2col ms':>9s} {'sparse ms':>9s}"
          f" {'x im2col':>8s} {'x native':>8s}")
    for r in rows:
        print(f"{r['layer']:28s} {str(tuple(r['shape'])):>18s} {r['density']:7.3f} {r['native'] * 1e3:9.2f} "
              f"{r['im2col'] * 1e3:9.2f} {r['sparse'] * 1e3:9.2f} {r['im2col'] / r['sparse']:8.2f} "
              f"{r['native'] / r['sparse']:8.2f}")
    total = {k: sum(r[k] for r in rows) for k in BACKWARDS}
    elements = sum(r["density"] * _numel(r["shape"]) for r in rows) / sum(_numel(r["shape"]) for r in rows)
    print(f"{'whole backward':28s} {'':>18s} {elements:7.3f} {total['native'] * 1e3:9.2f} "
          f"{total['im2col'] * 1e3:9.2f} {total['sparse'] * 1e3:9.2f} {total['im2col'] / total['sparse']:8.2f} "
          f"{total['native'] / total['sparse']:8.2f}")
    return {"density": elements, **total}


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def run(models: list[str], rates: list[float], threads: list[int], batch: int, steps: int, width_mult: float,
        repeats: int, sweep_model: str, sweep_layer: str, seed: int) -> dict:
    results: dict = {"config": {"models": models, "p": rates, "threads": threads, "batch": batch, "steps": steps,
                                "width_mult": width_mult, "repeats": repeats, "seed": seed,
                                "torch": torch.__version__}, "runs": [], "sweep": []}
    sweep_capture = None
    for model_name in models:
        for p in rates:
            t0 = time.perf_counter()
            captures = real_captures(model_name, p, batch, steps, width_mult, seed)
            print(f"\n# {model_name} p={p}: captured {len(captures)} conv layers from {steps} pruned training "
                  f"steps in {time.perf_counter() - t0:.1f} s", flush=True)
            if model_name == sweep_model and sweep_capture is None:
                sweep_capture = next((c for c in captures if c.name == sweep_layer), captures[len(captures) // 2])
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                rows = time_layers(captures, repeats)
                total = print_layers(f"{model_name} p={p} threads={n_threads}", rows)
                results["runs"].append({"model": model_name, "p": p, "threads": n_threads, "layers": rows,
                                        "total": total})
    if sweep_capture is not None:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            rows = sweep(sweep_capture, SWEEP_DENSITIES, repeats, seed)
            print(f"\n## density sweep: {sweep_model} {sweep_capture.name} dO {tuple(sweep_capture.grad_output.shape)}"
                  f" threads={n_threads}")
            print(f"{'density':>7s} {'native ms':>9s} {'im2col ms':>9s} {'sparse ms':>9s} {'x im2col':>8s} {'x native':>8s}")
            for r in rows:
                print(f"{r['density']:7.3f} {r['native'] * 1e3:9.2f} {r['im2col'] * 1e3:9.2f} {r['sparse'] * 1e3:9.2f}"
                      f" {r['im2col'] / r['sparse']:8.2f} {r['native'] / r['sparse']:8.2f}")
            even = {b: break_even(rows, b) for b in ("im2col", "native")}
            for b, d in even.items():
                text = ("never (slower at every density)" if d is None else
                        "above every density swept" if d == float("inf") else f"density {d:.3f}")
                print(f"sparse stops paying off against {b}: {text}")
            results["sweep"].append({"layer": sweep_capture.name, "threads": n_threads, "rows": rows,
                                     "break_even": {b: (None if d is None else (-1.0 if d == float('inf') else d))
                                                    for b, d in even.items()}})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny models, one p, one thread, batch 4")
    ap.add_argument("--models", nargs="+", default=["alexnet", "resnet18"])
    ap.add_argument("--p", nargs="+", type=float, default=[0.9, 0.99])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="pruned training steps before capturing (FIFO depth 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--sweep-model", default="resnet18")
    ap.add_argument("--sweep-layer", default="layer2.1.cb1.conv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.p, args.threads, args.batch, args.steps, args.repeats, args.width_mult = [0.99], [1], 4, 5, 1, 0.25
    check_param("batch", args.batch, 1, 1024)
    check_param("steps", args.steps, 5, 1000, allowed="5 .. 1000 (the FIFO of depth 4 must be full)")
    check_param("repeats", args.repeats, 1, 100)
    for n in args.threads:
        check_param("threads", n, 1, 256)
    t0 = time.perf_counter()
    results = run(args.models, args.p, args.threads, args.batch, args.steps, args.width_mult, args.repeats,
                  args.sweep_model, args.sweep_layer, args.seed)
    results["wall_s"] = time.perf_counter() - t0
    results["noise_median_over_best"] = {"median": statistics.median(NOISE), "max": max(NOISE)}
    print(f"\nnoise: median/best of repeated calls: median {statistics.median(NOISE):.2f}, max {max(NOISE):.2f}")
    print(f"wall time {results['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
