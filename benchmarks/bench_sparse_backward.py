"""Convolution back-propagation on the CPU: torch's native backward vs the two sparse paths.

For AlexNet (and optionally ResNet-18) at CIFAR shapes (32x32 input; the golden model trains
on Fashion-MNIST, so the first conv has 1 input channel instead of 3), the output gradients dO
of every conv come from a real pruned training run of the golden model (a few SGD steps after
the threshold FIFO is full, p in {0.9, 0.99}). Each layer's backward pass (dI and dW; no dI for
the first conv, as in training) is timed with:

* native: torch's own convolution backward (oneDNN), the fastest dense code available;
* csr:    golden.training.sparse_backward.sparse_conv2d_backward, the old sparse path (MKL CSR x dense
          products on an im2col layout);
* direct: golden.training.sparse_backward.direct_conv2d_backward, the C++ direct sparse kernel;
* im2col: (--im2col) the csr path's formulation with dense GEMMs, the paper's Caffe baseline.

The machine this runs on may be shared, so the implementations are timed interleaved: every
round calls each of them once on every layer, in an order that rotates from round to round, and
ratios are taken within a round (native time / direct time of the same round), then summarised
over the rounds as median [min .. max]. The whole conv backward is the sum over the layers of
one round. Then a density sweep (uniform random masks on one real layer's shape) locates the
break-even density of the direct kernel against native, and is plotted.

    .venv/bin/python benchmarks/bench_sparse_backward.py --json out/bench_sparse_backward.json \\
        --plot out/bench_sparse_backward.png                      # full run (a few minutes)
    .venv/bin/python benchmarks/bench_sparse_backward.py --quick  # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from sparsetrain.arch.fixedpoint import check_param
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.networks import build_model
from sparsetrain.golden.training.pruning import PruneConfig
from sparsetrain.golden.training.sparse_backward import (ConvCapture, capture_conv_gradients,
                                                         dense_conv2d_backward, direct_conv2d_backward,
                                                         native_conv2d_backward, sparse_conv2d_backward)
from sparsetrain.golden.training.sparse_conv_ext import load as load_extension

BACKWARDS: dict[str, Callable] = {"native": native_conv2d_backward, "csr": sparse_conv2d_backward,
                                  "direct": direct_conv2d_backward, "im2col": dense_conv2d_backward}
SWEEP_DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def real_captures(model_name: str, p: float, batch: int, steps: int, width_mult: float,
                  seed: int) -> list[ConvCapture]:
    """Every conv's I, W and pruned dO from the last of `steps` pruned training steps."""
    torch.manual_seed(seed)
    model = build_model(model_name, in_channels=1, width_mult=width_mult, prune=PruneConfig(p=p, n_f=4, seed=seed))
    split = fashion_mnist("train", samples=batch * steps, input_size=32, subset_seed=seed)
    return capture_conv_gradients(model, split.batches(batch, generator=torch.Generator().manual_seed(seed)), steps)


def call_once(backward: Callable, cap: ConvCapture, grad_output: torch.Tensor, need_input: bool) -> float:
    """Wall time in seconds of one backward call."""
    t0 = time.perf_counter()
    backward(cap.inp, cap.weight, grad_output, cap.stride, cap.padding, cap.dilation, cap.groups,
             need_input=need_input, need_weight=True)
    return time.perf_counter() - t0


def interleaved(names: list[str], layers: list[tuple[ConvCapture, torch.Tensor, bool]],
                rounds: int) -> dict[str, list[list[float]]]:
    """times[name][round][layer]: every round runs every implementation once per layer.

    The implementation order rotates each round (and one warm-up round is dropped), so slow
    phases of a shared machine fall on all of them alike.
    """
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        per_round: dict[str, list[float]] = {name: [] for name in names}
        for cap, d_o, need_input in layers:
            for name in order:
                per_round[name].append(call_once(BACKWARDS[name], cap, d_o, need_input))
        if r > 0:
            for name in names:
                times[name].append(per_round[name])
    return times


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(times: dict[str, list[list[float]]], baseline: str, name: str, layer: int | None) -> dict[str, float]:
    """baseline time / name time per round (one layer, or the sum over layers), summarised."""
    def pick(round_times: list[float]) -> float:
        return sum(round_times) if layer is None else round_times[layer]
    return summary([pick(b) / pick(n) for b, n in zip(times[baseline], times[name])])


def fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:5.2f}x [{r['min']:.2f}..{r['max']:.2f}]"


def layer_table(title: str, captures: list[ConvCapture], times: dict[str, list[list[float]]]) -> dict:
    names = list(times)
    others = [n for n in names if n != "direct"]
    print(f"\n## {title} (median ms over {len(times['direct'])} interleaved rounds; ratio = other / direct, "
          "median [min..max] over rounds)")
    print(f"{'layer':18s} {'dO shape':>18s} {'density':>7s} " + " ".join(f"{n + ' ms':>10s}" for n in names)
          + " " + " ".join(f"{'direct vs ' + n:>26s}" for n in others))
    rows = []
    for i, cap in enumerate(captures):
        med = {n: statistics.median(t[i] for t in times[n]) for n in names}
        rat = {n: ratios(times, n, "direct", i) for n in others}
        print(f"{cap.name:18s} {str(tuple(cap.grad_output.shape)):>18s} {cap.density:7.3f} "
              + " ".join(f"{med[n] * 1e3:10.2f}" for n in names) + " "
              + " ".join(f"{fmt_ratio(rat[n]):>26s}" for n in others))
        rows.append({"layer": cap.name, "shape": list(cap.grad_output.shape), "density": cap.density,
                     "need_input": i > 0, "median_s": med, "speedup_of_direct": rat})
    total_med = {n: statistics.median(sum(t) for t in times[n]) for n in names}
    total_rat = {n: ratios(times, n, "direct", None) for n in others}
    numel = [c.grad_output.numel() for c in captures]
    density = sum(c.density * k for c, k in zip(captures, numel)) / sum(numel)
    print(f"{'whole backward':18s} {'':>18s} {density:7.3f} " + " ".join(f"{total_med[n] * 1e3:10.2f}" for n in names)
          + " " + " ".join(f"{fmt_ratio(total_rat[n]):>26s}" for n in others))
    return {"layers": rows, "total": {"density": density, "median_s": total_med, "speedup_of_direct": total_rat}}


def sweep(cap: ConvCapture, densities: tuple[float, ...], names: list[str], rounds: int, seed: int) -> list[dict]:
    """Same layer, synthetic dO (normal values, uniform random mask) at each density."""
    gen = torch.Generator().manual_seed(seed)
    shape = cap.grad_output.shape
    layers = [(cap, torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < d), True)
              for d in densities]
    times = interleaved(names, layers, rounds)
    rows = []
    for i, d in enumerate(densities):
        med = {n: statistics.median(t[i] for t in times[n]) for n in names}
        rows.append({"density": d, "median_s": med,
                     "speedup_of_direct": {n: ratios(times, n, "direct", i) for n in names if n != "direct"}})
    return rows


def break_even(rows: list[dict], baseline: str) -> float | None:
    """Density where the direct kernel's median speedup over `baseline` falls to 1 (linear
    interpolation); None if it never wins, inf if it wins at every density swept."""
    pts = [(r["density"], r["speedup_of_direct"][baseline]["median"]) for r in rows]
    if pts[0][1] <= 1.0:
        return None
    for (d0, s0), (d1, s1) in zip(pts, pts[1:]):
        if s1 <= 1.0:
            return d0 + (s0 - 1.0) * (d1 - d0) / (s0 - s1)
    return float("inf")


def plot_sweep(sweeps: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for s in sweeps:
        d = [r["density"] for r in s["rows"]]
        for name in s["rows"][0]["median_s"]:
            axes[0].plot(d, [r["median_s"][name] * 1e3 for r in s["rows"]], "o-" if s["threads"] == 1 else "s--",
                         label=f"{name}, {s['threads']} thr")
        sp = [r["speedup_of_direct"]["native"] for r in s["rows"]]
        axes[1].errorbar(d, [x["median"] for x in sp], yerr=[[x["median"] - x["min"] for x in sp],
                                                             [x["max"] - x["median"] for x in sp]],
                         fmt="o-" if s["threads"] == 1 else "s--", capsize=3, label=f"{s['threads']} thread(s)")
    axes[0].set(xscale="log", yscale="log", xlabel="dO density", ylabel="backward time (ms, median)",
                title=f"{sweeps[0]['layer']} dO {tuple(sweeps[0]['shape'])}: dI + dW")
    axes[1].axhline(1.0, color="k", lw=1)
    axes[1].set(xscale="log", yscale="log", xlabel="dO density", ylabel="native time / direct time",
                title="direct kernel speedup over native (median, min..max)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> dict:
    names = ["native", "direct"] + (["csr"] if not args.no_csr else []) + (["im2col"] if args.im2col else [])
    ext = load_extension()
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "torch": torch.__version__, "isa": ext.isa(), "cpus": os.cpu_count(),
                     "loadavg_start": os.getloadavg(), "runs": [], "sweep": []}
    print(f"direct kernel instruction set: {ext.isa()}; load average at start {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    sweep_capture = None
    for model_name in args.models:
        for p in args.p:
            t0 = time.perf_counter()
            captures = real_captures(model_name, p, args.batch, args.steps, args.width_mult, args.seed)
            print(f"\n# {model_name} p={p}: captured {len(captures)} conv layers from {args.steps} pruned training "
                  f"steps in {time.perf_counter() - t0:.1f} s", flush=True)
            if model_name == args.sweep_model and sweep_capture is None:
                sweep_capture = next((c for c in captures if c.name == args.sweep_layer), captures[len(captures) // 2])
            layers = [(c, c.grad_output, i > 0) for i, c in enumerate(captures)]
            for n_threads in args.threads:
                torch.set_num_threads(n_threads)
                times = interleaved(names, layers, args.rounds)
                table = layer_table(f"{model_name} p={p} threads={n_threads}", captures, times)
                results["runs"].append({"model": model_name, "p": p, "threads": n_threads, **table})
    if sweep_capture is not None and args.sweep:
        for n_threads in args.threads:
            torch.set_num_threads(n_threads)
            rows = sweep(sweep_capture, SWEEP_DENSITIES, names, args.rounds, args.seed)
            print(f"\n## density sweep: {args.sweep_model} {sweep_capture.name} dO "
                  f"{tuple(sweep_capture.grad_output.shape)} threads={n_threads} (median ms; direct vs other)")
            print(f"{'density':>7s} " + " ".join(f"{n + ' ms':>10s}" for n in names) + " "
                  + " ".join(f"{'vs ' + n:>26s}" for n in names if n != "direct"))
            for r in rows:
                print(f"{r['density']:7.3f} " + " ".join(f"{r['median_s'][n] * 1e3:10.2f}" for n in names) + " "
                      + " ".join(f"{fmt_ratio(r['speedup_of_direct'][n]):>26s}" for n in names if n != "direct"))
            even = {b: break_even(rows, b) for b in names if b != "direct"}
            for b, d in even.items():
                text = ("never (slower at every density)" if d is None else
                        "above every density swept" if d == float("inf") else f"density {d:.3f}")
                print(f"direct kernel stops paying off against {b}: {text}")
            results["sweep"].append({"layer": sweep_capture.name, "shape": list(sweep_capture.grad_output.shape),
                                     "threads": n_threads, "rows": rows,
                                     "break_even": {b: (None if d is None else (-1.0 if d == float("inf") else d))
                                                    for b, d in even.items()}})
        if args.plot:
            print(f"plot: {plot_sweep(results['sweep'], args.plot)}")
    results["loadavg_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: narrow AlexNet, p=0.99, 1 thread, 2 rounds")
    ap.add_argument("--models", nargs="+", default=["alexnet"], help="alexnet, resnet18, ... (default alexnet)")
    ap.add_argument("--p", nargs="+", type=float, default=[0.9, 0.99])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="pruned training steps before capturing (FIFO depth 4)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (after one warm-up round)")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--sweep-model", default="alexnet")
    ap.add_argument("--sweep-layer", default="features.5.conv")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false")
    ap.add_argument("--no-csr", action="store_true", help="leave out the old CSR sparse path (slow)")
    ap.add_argument("--im2col", action="store_true", help="also time the dense im2col + GEMM baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--plot", type=Path, help="write the density sweep plot here (PNG)")
    args = ap.parse_args(argv)
    if args.quick:
        args.p, args.threads, args.batch, args.steps, args.rounds, args.width_mult = [0.99], [1], 4, 5, 2, 0.25
    check_param("batch", args.batch, 1, 1024)
    check_param("steps", args.steps, 5, 1000, allowed="5 .. 1000 (the FIFO of depth 4 must be full)")
    check_param("rounds", args.rounds, 1, 1000)
    for n in args.threads:
        check_param("threads", n, 1, 256)
    t0 = time.perf_counter()
    results = run(args)
    results["wall_s"] = time.perf_counter() - t0
    print(f"\nwall time {results['wall_s']:.0f} s; load average at end {results['loadavg_end'][0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
