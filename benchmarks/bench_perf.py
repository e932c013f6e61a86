"""Timings of the performance model, and (with --rtl) the model-vs-RTL table of docs/performance.md.

    .venv/bin/python benchmarks/bench_perf.py [--rtl] [--seed N]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def bench_resnet152() -> None:
    from sparsetrain.perf.densities import paper_table
    from sparsetrain.perf.model import evaluate
    from sparsetrain.perf.shapes import network_shapes
    network_shapes("resnet18", "cifar")  # warm the imports
    t0 = time.perf_counter()
    shapes = network_shapes("resnet152", "imagenet")
    t1 = time.perf_counter()
    res = evaluate(shapes, paper_table("resnet152", "imagenet"))
    t2 = time.perf_counter()
    print(f"resnet152 imagenet: {len(shapes)} conv layers, shapes {t1 - t0:.3f} s, model {t2 - t1:.3f} s, "
          f"speedup {res.speedup:.2f}x")


def bench_exact(seed: int) -> None:
    from sparsetrain.perf.model import exact_layer
    from sparsetrain.perf.shapes import LayerShape
    rng = np.random.default_rng(seed)
    s = LayerShape("bench", 16, 16, 16, 16, 16, 16, 3, 1, 1, 1)
    pats = {"in": rng.random((1, 16, 16, 16)) < 0.5, "grad": rng.random((1, 16, 16, 16)) < 0.3}
    t0 = time.perf_counter()
    exact_layer(s, pats)
    print(f"exact model, 16x16x16 3x3 layer (3 x 12288 ops): {time.perf_counter() - t0:.2f} s")


def bench_rtl(seed: int) -> None:
    from sparsetrain.sim_tb.perf_check import compare_with_rtl, markdown_table, random_layer_tensors
    from sparsetrain.arch.schedule import ArchParams
    from sparsetrain.perf.shapes import LayerShape
    rng = np.random.default_rng(seed)
    layers = []
    for name, c, f, h, w, k, s, p, d_in, d_grad in [
            ("conv3x3", 4, 4, 12, 16, 3, 1, 1, 0.5, 0.3), ("conv3x3_s2", 4, 4, 13, 15, 3, 2, 1, 0.6, 0.4),
            ("conv5x5", 2, 3, 10, 20, 5, 1, 2, 0.5, 0.2), ("conv1x1", 8, 4, 6, 12, 1, 1, 0, 0.4, 0.1),
            ("dense3x3", 2, 2, 8, 12, 3, 1, 1, 1.0, 1.0)]:
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        shape = LayerShape(name, c, f, h, w, ho, wo, k, s, p, 1)
        layers.append((shape, random_layer_tensors(shape, rng, d_in, d_grad)))
    t0 = time.perf_counter()
    rows = compare_with_rtl(layers, ArchParams(groups=4))
    print(markdown_table(rows))
    print(f"RTL comparison: {sum(r.ops for r in rows)} ops in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtl", action="store_true", help="also run the model-vs-RTL table on Verilator")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SPARSETRAIN_SEED", "2024")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"seed {args.seed}")
    bench_resnet152()
    bench_exact(args.seed)
    if args.rtl:
        bench_rtl(args.seed)


if __name__ == "__main__":
    main()
