"""The core's simulation rate under cocotb as a fraction of bare Verilator, and its build time.

Runs the same programs (a golden run's layer step with ``--run-dir``, else random programs at
the check configuration) on the cocotb backdoor build (``sim_tb.core_batch``) and on the bare
C++ harness (``sim_tb.bare``, C++ -O3), and prints the free-running cycles per second of each
and cocotb / bare (goal >= 0.6). ``--build`` also times an uncached fast core build (only the
wrapper public, -O3, parallel make; goal < 60 s) and ``--build-default`` one with cocotb's
own flags (--public-flat-rw, verilated.mk's -Os, serial make) in a scratch build folder.
``--threads N`` builds the bare harness with Verilator --threads N. Rates from one run on a
shared machine: compare the ratio, not the absolute numbers.

    .venv/bin/python benchmarks/bench_core_sim.py --run-dir RUN --layer features.2.conv --step gta --build
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsetrain.compiler_check import sim_params
from sparsetrain.golden.bitexact.core_model import random_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb import runner
from sparsetrain.sim_tb.bare import build_bare, rates
from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs
from sparsetrain.sim_tb.core_driver import CORE_DUMPS, CORE_MEMORIES, TB_TOPLEVEL, clock_wrapper, core_verilog


def jobs_of(args: argparse.Namespace) -> list[CoreJob]:
    p = sim_params()
    if args.run_dir:
        from sparsetrain.compiler import LayerData, compile_step
        from sparsetrain.golden.training.tensors import load_golden
        data = LayerData.from_golden(load_golden(args.run_dir), args.layer)
        chunks = compile_step(data, args.step, p, samples=args.samples).chunks
        progs = [(ch.program, ch.buffer_image, ch.masks, len(ch.results)) for ch in chunks]
    else:
        rng = np.random.default_rng(args.seed)
        print(f"seed {args.seed}")
        progs = []
        for _ in range(args.programs):
            b, results = random_program(p, rng, units_per_step=15, max_ops=12)
            progs.append((*b.build(), len(results)))
    out = []
    for prog, img, masks, n in progs:
        m = run_program_fast(prog, img, p, masks=masks)
        out.append(CoreJob(prog, img, masks, dir_count=n, watchdog_cycles=4 * max(m.cycles, 1000) + 100_000))
    return out


def time_build(fast: bool) -> float:
    """Seconds of an uncached Verilator build (Verilog generated beforehand, not counted)."""
    p = sim_params()
    wrap = dict(backdoor=CORE_MEMORIES, dump=CORE_DUMPS) if fast else {}
    text = clock_wrapper(core_verilog(p), **wrap)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        old = os.environ.get("SPARSETRAIN_BUILD_DIR")
        os.environ["SPARSETRAIN_BUILD_DIR"] = tmp
        try:
            t0 = time.time()
            runner.build(text, TB_TOPLEVEL, "verilator", name="bench", timing=True, fast=fast)
            return time.time() - t0
        finally:
            if old is None:
                del os.environ["SPARSETRAIN_BUILD_DIR"]
            else:
                os.environ["SPARSETRAIN_BUILD_DIR"] = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--layer", default="features.2.conv")
    ap.add_argument("--step", default="gta", choices=("forward", "gta", "gtw"))
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--programs", type=int, default=4, help="random programs (without --run-dir)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="Verilator --threads of the bare harness")
    ap.add_argument("--build", action="store_true", help="time an uncached fast core build")
    ap.add_argument("--build-default", action="store_true", help="time an uncached build with cocotb's flags")
    args = ap.parse_args()
    p = sim_params()
    t0 = time.time()
    core_verilog(p)
    print(f"core Verilog generated in {time.time() - t0:.1f} s (cached per process)")
    if args.build:
        print(f"uncached fast core build (Verilator + C++ -O3, make -j{runner.build_jobs()}): {time_build(True):.1f} s "
              "(goal < 60 s)")
    if args.build_default:
        print(f"uncached core build with cocotb's flags (--public-flat-rw, -Os, serial make): {time_build(False):.1f} s")
    jobs = jobs_of(args)
    bare = build_bare(p, threads=args.threads)
    if bare.build_seconds:
        print(f"bare harness built in {bare.build_seconds:.1f} s")
    res = run_core_programs(jobs, p)
    assert all(r.done and not r.error for r in res)
    cocotb_cycles = sum(r.total_cycles for r in res)
    cocotb_s = sum(r.sim_seconds for r in res)
    bare_cycles, bare_s = rates(jobs, p, bare)
    assert bare_cycles == cocotb_cycles, (bare_cycles, cocotb_cycles)
    c_rate, b_rate = cocotb_cycles / cocotb_s, bare_cycles / bare_s
    print(f"{len(jobs)} programs, {cocotb_cycles} cycles (equal on both)")
    print(f"cocotb (backdoor build) free run: {c_rate:,.0f} cycles/s")
    print(f"bare Verilator (C++ -O3{', --threads ' + str(args.threads) if args.threads > 1 else ''}): "
          f"{b_rate:,.0f} cycles/s")
    print(f"ratio cocotb / bare: {c_rate / b_rate:.2f} (goal >= 0.6; one run, shared machine)")


if __name__ == "__main__":
    main()
