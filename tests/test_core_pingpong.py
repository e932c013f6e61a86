"""The core with PINGPONG=1 (docs/architecture.md 12.3: two PPU accumulators, a unit's FINISH
overlapping the next unit's ops) on Verilator against golden.bitexact.core_model: random programs
and the first program of each step of a compiled real layer, in one simulator start on one build;
rows, directory, counters and cycles exactly the model's (scalar and vectorised)."""
from __future__ import annotations

import dataclasses

import pytest

from sparsetrain.arch.isa import CoreParams
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs

# one Verilator build: ACC_W 52 fits features.4.conv of the small golden run
PP = CoreParams(groups=2, buf_depth=1024, imem_depth=1024, dir_depth=256, mask_depth=64, w_max=16, k_max=5,
                acc_w=52, pingpong=1)
LAYER = "features.4.conv"


def pingpong_jobs(p: CoreParams, rng, golden_run) -> list[tuple[str, CoreJob]]:
    """3 random programs and the first program of Forward, GTA and GTW of LAYER."""
    from sparsetrain.compiler import LayerData, compile_step
    from sparsetrain.golden.training.tensors import load_golden
    jobs = []
    for i in range(3):
        b, results = random_program(p, rng, units_per_step=6)
        prog, img, masks = b.build()
        jobs.append((f"random {i}", CoreJob(prog, img, masks, dir_count=p.dir_depth, watchdog_cycles=50000)))
    data = LayerData.from_golden(load_golden(golden_run), LAYER)
    for step in ("forward", "gta", "gtw"):
        ch = compile_step(data, step, p, samples=1).chunks[0]
        jobs.append((step, CoreJob(ch.program, ch.buffer_image, ch.masks, dir_count=p.dir_depth,
                                   watchdog_cycles=200000)))
    return jobs


def check_jobs(p: CoreParams, jobs: list[tuple[str, CoreJob]]) -> list[tuple[str, int, int]]:
    """Run every job in one simulator start; everything equal to the model. Returns (name, RTL
    cycles, cycles of the same program on the PINGPONG=0 model) per job."""
    out = run_core_programs([j for _, j in jobs], p)
    first_gen = dataclasses.replace(p, pingpong=0)
    table = []
    for (name, job), r in zip(jobs, out):
        model = run_program(job.program, job.buffer_image, p, job.masks)
        fast = run_program_fast(job.program, job.buffer_image, p, masks=job.masks)
        assert model.error == 0, model.error_message
        assert r.done and not r.timed_out and not r.error, name
        written = [d for d in range(p.dir_depth) if model.directory[d]]
        assert written, name
        for d in written:
            assert r.rows[d] == model.row_entries(d, p), f"{name}: result row {d} differs"
        assert (r.step_nnz, r.step_rows, r.step_elems) == (model.step_nnz, model.step_rows, model.step_elems), name
        assert r.cycles == model.cycles == fast.cycles, (name, r.cycles, model.cycles, fast.cycles)
        assert fast.buffer.tolist() == model.buffer.tolist(), name
        base = run_program(job.program, job.buffer_image, first_gen, job.masks).cycles
        print(f"{name}: RTL cycles {r.cycles} = model; PINGPONG=0 model {base} ({base / r.cycles:.3f}x)")
        table.append((name, r.cycles, base))
    return table


def test_pingpong_core_random_and_compiled_layer_match_the_model(small_golden_run, rng):
    table = check_jobs(PP, pingpong_jobs(PP, rng, small_golden_run))
    # the overlap is real: every compiled step is faster than without ping-pong
    assert all(c < base for name, c, base in table if name in ("forward", "gta", "gtw"))


def test_pingpong_parameter_is_validated():
    with pytest.raises(ValueError, match="PINGPONG"):
        CoreParams(pingpong=2)
    assert CoreParams(pingpong=1).ppu_config().pingpong == 1
