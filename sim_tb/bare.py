"""A bare-Verilator harness of the core: the same Verilog under a small C++ main, no cocotb.

``build_bare(params)`` compiles the core (the same ``core_verilog`` text the cocotb builds
simulate) inside a wrapper whose clock is an input the C++ main toggles, and whose memories
load and dump by file as in the backdoor build (``core_driver.clock_wrapper``); C++ at -O3,
parallel make, cached under build/sim/bare. ``run_bare(job, params)`` runs one program and
returns the core's cycles and the wall time of its free run, so a cocotb run's free-running
rate can be reported as a fraction of what Verilator alone does on the same program.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..arch.isa import CoreParams
from . import runner
from .core_batch import CoreJob, _write_hex
from .core_driver import CORE_DUMPS, CORE_MEMORIES, clock_wrapper, core_verilog

TOP = "core_bare"
MAIN_CPP = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include "Vcore_bare.h"
#include "verilated.h"

// One program: reset while the wrapper loads every memory ($readmemh), start, run free until
// done or the watchdog, dump the buffer and directory ($writememh); print cycles and seconds.
int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    ctx->commandArgs(argc, argv);
    long long watchdog = argc > 1 ? atoll(argv[1]) : 2000000;
    Vcore_bare* top = new Vcore_bare{ctx};
    auto tick = [&]() { top->clk = 1; top->eval(); top->clk = 0; top->eval(); };
    top->clk = 0; top->rst = 1; top->start = 0; top->mem_load = 0; top->mem_dump = 0; top->eval();
    top->mem_load = 1; tick(); tick(); top->mem_load = 0;
    top->rst = 0; top->start = 1; tick(); top->start = 0;
    auto t0 = std::chrono::steady_clock::now();
    long long n = 0;
    while (!top->done && n < watchdog) { tick(); ++n; }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top->mem_dump = 1; top->eval();
    printf("{\"done\": %d, \"cycles\": %u, \"total_cycles\": %u, \"ticks\": %lld, \"seconds\": %.9f}\n",
           (int)top->done, (unsigned)top->cycles, (unsigned)top->total_cycles, n, secs);
    top->final();
    delete top;
    delete ctx;
    return 0;
}
"""


def bare_wrapper(verilog: str) -> str:
    """The backdoor clock wrapper, with the clock an input (``clk``) instead of a generator."""
    text = clock_wrapper(verilog, wrapper=TOP, backdoor=CORE_MEMORIES, dump=CORE_DUMPS)
    head, sep, tail = text.rpartition(f"\n\nmodule {TOP}(")
    tail = tail.replace(");\n", ", clk);\n  input clk;\n", 1)
    tail = re.sub(r"  reg clk = 1'b0;\n  always #\d+ clk = ~clk;\n", "", tail)
    return head + sep + tail


@dataclass(frozen=True)
class BareBuild:
    binary: Path
    build_seconds: float   # 0 when it came from the cache


def build_bare(params: CoreParams, *, threads: int = 1, cxx_opt: str = runner.FAST_CXX_OPT,
               root: Path | None = None) -> BareBuild:
    """Compile the bare harness for ``params`` once (cache key: params, hw sources, flags)."""
    flags = ["-O3", "-Wno-fatal"] + (["--threads", str(threads)] if threads > 1 else [])  # as runner's
    key = hashlib.sha256(json.dumps([params.as_dict(), runner.hw_fingerprint(), flags, cxx_opt, MAIN_CPP],
                                    default=str).encode()).hexdigest()[:16]
    bdir = (root or runner.build_root() / "bare") / f"{TOP}-{key}"
    binary = bdir / TOP
    if binary.exists():
        return BareBuild(binary, 0.0)
    bdir.mkdir(parents=True, exist_ok=True)
    (bdir / f"{TOP}.v").write_text(bare_wrapper(core_verilog(params)))
    (bdir / "main.cpp").write_text(MAIN_CPP)
    t0 = time.time()
    subprocess.run(["verilator", "--cc", "--exe", "--build", "-j", str(runner.build_jobs()), *flags,
                    "--top-module", TOP, "-Mdir", str(bdir / "obj"), "-o", str(binary),
                    "-MAKEFLAGS", f"OPT_FAST={cxx_opt}", f"{TOP}.v", "main.cpp"],
                   cwd=bdir, check=True, capture_output=True, text=True)
    return BareBuild(binary, time.time() - t0)


def run_bare(job: CoreJob, params: CoreParams, build: BareBuild | None = None) -> dict:
    """Run one program on the bare harness: done, cycles, total_cycles, seconds (free run)."""
    b = build or build_bare(params)
    p = params
    with tempfile.TemporaryDirectory(prefix="bare-") as tmp:
        work = Path(tmp)
        for stem, words, depth in (("buf", job.buffer_image, p.buf_depth), ("mask", job.masks, p.mask_depth),
                                   ("imem", job.program, p.imem_depth), ("dir", job.directory, p.dir_depth)):
            _write_hex(work / f"{stem}.hex", words, depth)
        out = subprocess.run([str(b.binary), str(job.watchdog_cycles)], cwd=work, check=True, capture_output=True,
                             text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rates(jobs: Sequence[CoreJob], params: CoreParams, build: BareBuild | None = None) -> tuple[int, float]:
    """(total cycles, seconds) of the bare harness over ``jobs``."""
    b = build or build_bare(params)
    cycles, secs = 0, 0.0
    for j in jobs:
        r = run_bare(j, params, b)
        cycles, secs = cycles + r["total_cycles"], secs + r["seconds"]
    return cycles, secs
