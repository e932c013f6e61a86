"""The core with PINGPONG=1 (docs/architecture.md 12.3: two PPU accumulators, a unit's FINISH
overlapping the next unit's ops) on Verilator against golden.bitexact.core_model: alone and with
PREFETCH=1 LOOKAHEAD=2 SKIP_EMPTY=1 OP_SCAN=4, on random programs and compiled layers (a real one
of the small golden run, and one with empty rows for SKIP_EMPTY), every configuration built once
and all its programs run in one simulator start; rows, directory, counters and cycles exactly
the model's (scalar and vectorised), and the section 12 contract (``cycles_contract``) close."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sparsetrain.arch.isa import CoreParams
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs

# PINGPONG alone; ACC_W 52 fits features.4.conv of the small golden run
PP = CoreParams(groups=2, buf_depth=1024, imem_depth=1024, dir_depth=256, mask_depth=64, w_max=16, k_max=5,
                acc_w=52, pingpong=1)
# with i15core's switches (the memories of tests/test_core.py's P_GEN2) and unit blocks handed out
# two per cycle (F, section 12.9: both groups can take a unit in one cycle)
PP_GEN2 = CoreParams(groups=2, buf_depth=4096, imem_depth=1024, dir_depth=1024, mask_depth=256, w_max=16, k_max=5,
                     acc_w=48, prefetch=1, lookahead=2, skip_empty=1, op_scan=4, pingpong=1, unit_rate=2)
LAYER = "features.4.conv"


def random_jobs(p: CoreParams, rng, n: int, density: float) -> list[tuple[str, CoreJob]]:
    jobs = []
    for i in range(n):
        b, _ = random_program(p, rng, units_per_step=6, density=density)
        prog, img, masks = b.build()
        jobs.append((f"random {i}", CoreJob(prog, img, masks, dir_count=p.dir_depth, watchdog_cycles=100_000,
                                            directory=b.directory_image() if p.skip_empty else ())))
    return jobs


def layer_jobs(p: CoreParams, data, name: str, chunks: int = 1) -> list[tuple[str, CoreJob]]:
    """The first ``chunks`` programs of Forward, GTA and GTW of a compiled layer."""
    from sparsetrain.compiler import compile_step
    jobs = []
    for step in ("forward", "gta", "gtw"):
        for k, ch in enumerate(compile_step(data, step, p, samples=1).chunks[:chunks]):
            jobs.append((f"{name} {step} {k}", CoreJob(ch.program, ch.buffer_image, ch.masks, dir_count=p.dir_depth,
                                                       watchdog_cycles=500_000, directory=ch.directory)))
    return jobs


INVALID = ("k", "addr", "slot", "no_end")


def invalid_jobs(p: CoreParams) -> list[tuple[str, CoreJob]]:
    """The invalid programs of test_core_model and the invalid unit blocks of test_core_units."""
    from test_core_model import invalid_program
    from test_core_units import BLOCK_CASES, invalid_block
    return ([(f"invalid {case}", CoreJob(*invalid_program(case, p), dir_count=4, watchdog_cycles=5000))
             for case in INVALID] +
            [(f"invalid {case}", CoreJob(*invalid_block(case, p), dir_count=4, watchdog_cycles=5000))
             for case, _ in BLOCK_CASES])


def check_jobs(p: CoreParams, jobs: list[tuple[str, CoreJob]]) -> list[tuple[str, int, int, int]]:
    """Run every job in one simulator start; everything equal to the model (an invalid program:
    the model's error code, no hang), every group's PPU status of slots 0 and 1 too (which group ran
    which unit: its counters and random sequence). Returns (name, RTL cycles, contract cycles,
    cycles of the same program on the PINGPONG=0 model) per valid job."""
    sel = [(g, slot) for g in range(p.groups) for slot in (0, 1)]
    out = run_core_programs([j for _, j in jobs], p, ppu_status=sel)
    no_pp = dataclasses.replace(p, pingpong=0)
    table = []
    for (name, job), r in zip(jobs, out):
        d = list(job.directory) or None
        model = run_program(job.program, job.buffer_image, p, job.masks, directory=d)
        if name.startswith("invalid"):
            assert model.error and r.done and not r.timed_out and r.error and r.error_code == model.error, name
            continue
        fast = run_program_fast(job.program, job.buffer_image, p, masks=job.masks, directory=d)
        assert model.error == 0, model.error_message
        assert r.done and not r.timed_out and not r.error, name
        written = [i for i in range(p.dir_depth) if model.directory[i] and not (d and i < len(d) and d[i])]
        assert written, name
        for i in written:
            assert r.rows[i] == model.row_entries(i, p), f"{name}: result row {i} differs"
        assert (r.step_nnz, r.step_rows, r.step_elems) == (model.step_nnz, model.step_rows, model.step_elems), name
        assert r.cycles == model.cycles == fast.cycles, (name, r.cycles, model.cycles, fast.cycles)
        assert r.total_cycles == model.total_cycles == fast.total_cycles, name
        assert [s.as_dict() for s in r.ppu_status] == [model.ppus[g].status(s).as_dict() for g, s in sel], name
        assert fast.buffer.tolist() == model.buffer.tolist(), name
        base = run_program(job.program, job.buffer_image, no_pp, job.masks, directory=d).cycles
        print(f"{name}: RTL cycles {r.cycles} = model; contract {model.cycles_contract}; "
              f"PINGPONG=0 model {base} ({base / r.cycles:.3f}x)")
        table.append((name, r.cycles, model.cycles_contract, base))
    return table


# make test time: PINGPONG alone is a core build of its own; make test runs the full built set (next test).
@pytest.mark.regress
def test_pingpong_core_random_and_compiled_layer_match_the_model(small_golden_run, rng):
    from sparsetrain.compiler import LayerData
    from sparsetrain.golden.training.tensors import load_golden
    data = LayerData.from_golden(load_golden(small_golden_run), LAYER)
    table = check_jobs(PP, random_jobs(PP, rng, 3, 0.5) + invalid_jobs(PP) + layer_jobs(PP, data, LAYER))
    layer = [t for t in table if t[0].startswith(LAYER)]
    # the overlap is real: every compiled step is faster than without ping-pong
    assert all(c < base for _, c, _, base in layer)
    # section 12's contract at the core's unit rate (12.9) is the RTL's count exactly
    assert all(c == contract for _, c, contract, _ in layer)


def test_pingpong_with_prefetch_lookahead_skip_empty_matches_the_model(small_golden_run, rng):
    from sparsetrain.compiler import LayerData
    from sparsetrain.golden.training.tensors import load_golden
    from test_compiler import random_layer
    sparse = random_layer(rng, n=1, c=3, f=4, h=6, w=9, density=0.15)
    real = LayerData.from_golden(load_golden(small_golden_run), LAYER)
    table = check_jobs(PP_GEN2, random_jobs(PP_GEN2, rng, 2, 0.15) + layer_jobs(PP_GEN2, sparse, "sparse", 2)
                       + invalid_jobs(PP_GEN2) + layer_jobs(PP_GEN2, real, LAYER))
    layer = [t for t in table if not t[0].startswith("random")]
    assert sum(base for *_, base in layer) > sum(c for _, c, _, _ in layer)
    assert all(c == contract for _, c, contract, _ in layer)


def test_pingpong_parameter_is_validated():
    with pytest.raises(ValueError, match="PINGPONG"):
        CoreParams(pingpong=2)
    assert CoreParams(pingpong=1).ppu_config().pingpong == 1
    assert np.array_equal([CoreParams(pingpong=1).microarch().pingpong], [True])
