"""Scalar vs vectorised bit-accurate core model: time per row operation and the ratio (goal >= 50).

Runs the same programs through ``golden.bitexact.core_model.run_program`` (the scalar oracle) and
``golden.bitexact.core_vec.run_program_fast``, checks that every result word, directory entry, counter
and cycle count is equal, and prints seconds per row op of each and scalar / vectorised. The
programs are the compiled chunks of a golden run's layer step (``--run-dir``, ``--layer``,
``--step``) or, without a run, large random three-step programs at the check configuration.

    .venv/bin/python benchmarks/bench_core_model.py
    .venv/bin/python benchmarks/bench_core_model.py --run-dir RUN --layer features.2.conv --steps forward,gta,gtw
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sparsetrain.compiler_check import sim_params
from sparsetrain.golden.bitexact.core_model import random_program, run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast


def programs(args: argparse.Namespace, step: str) -> list[tuple[list[int], list[int], list[int]]]:
    p = sim_params()
    if args.run_dir:
        from sparsetrain.compiler import LayerData, compile_step
        from sparsetrain.golden.training.tensors import load_golden
        data = LayerData.from_golden(load_golden(args.run_dir), args.layer)
        c = compile_step(data, step, p, samples=args.samples)
        return [(ch.program, ch.buffer_image, ch.masks) for ch in c.chunks]
    rng = np.random.default_rng(args.seed)
    print(f"seed {args.seed}")
    out = []
    for _ in range(args.programs):
        b, _ = random_program(p, rng, units_per_step=15, max_ops=12)
        out.append(b.build())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--layer", default="features.2.conv")
    ap.add_argument("--steps", default="forward,gta,gtw", help="comma-separated steps (with --run-dir)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--programs", type=int, default=4, help="random programs (without --run-dir)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    p = sim_params()
    total_scalar = total_vec = 0.0
    for step in (args.steps.split(",") if args.run_dir else ["random"]):
        progs = programs(args, step)
        t_scalar = t_vec = 0.0
        n_ops = 0
        for prog, img, masks in progs:
            t0 = time.perf_counter()
            a = run_program(prog, img, p, masks=masks)
            t1 = time.perf_counter()
            b = run_program_fast(prog, img, p, masks=masks)
            t2 = time.perf_counter()
            t_scalar, t_vec = t_scalar + t1 - t0, t_vec + t2 - t1
            n_ops += sum(len(u.op_cycles) for u in a.units)
            assert b.vectorised, "the fast path fell back to the scalar model"
            assert list(a.buffer) == list(b.buffer) and list(a.directory) == list(b.directory)
            assert (a.cycles, a.cycles_contract, a.step_nnz, a.error) == \
                (b.cycles, b.cycles_contract, b.step_nnz, b.error)
        total_scalar, total_vec = total_scalar + t_scalar, total_vec + t_vec
        print(f"{step}: {len(progs)} programs, {n_ops} row ops, results equal; per row op: scalar "
              f"{t_scalar / n_ops * 1e6:.1f} us, vectorised {t_vec / n_ops * 1e6:.1f} us, ratio {t_scalar / t_vec:.1f}")
    print(f"ratio scalar / vectorised over every program: {total_scalar / total_vec:.1f} "
          f"({total_scalar:.2f} s / {total_vec:.2f} s; goal >= 50; one run, shared machine)")

if __name__ == "__main__":
    main()
