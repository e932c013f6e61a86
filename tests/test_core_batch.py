"""sim_tb.core_batch: several programs in one simulator start with backdoor memory loading
($readmemh) and read-back ($writememh), each bit for bit against golden.bitexact.core_model (rows,
directory, counters, PPU status, cycles), state from one program never leaking into the next
(an invalid program between valid ones), and the watchdog ending a program that runs too long."""
from __future__ import annotations

import os

import numpy as np

from sparsetrain.arch.isa import CoreParams, ErrorCode
from sparsetrain.golden.bitexact.core_model import random_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs
from test_core_model import invalid_program

SEED = int(os.environ.get("SPARSETRAIN_SEED", "1234"))
P = CoreParams(groups=2, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5)


def test_programs_in_one_start_match_the_model_and_do_not_leak_state():
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    jobs, expect = [], []
    for i in range(3):
        b, results = random_program(P, rng, units_per_step=4)
        prog, img, masks = b.build()
        jobs.append(CoreJob(prog, img, masks, dir_count=len(results), watchdog_cycles=20000))
        expect.append((run_program_fast(prog, img, P, masks=masks), results))
        if i == 0:  # an invalid program between two valid ones
            bad, bad_img = invalid_program("addr", P)
            jobs.append(CoreJob(bad, bad_img, dir_count=4, watchdog_cycles=5000))
            expect.append((None, []))
    out = run_core_programs(jobs, P, ppu_status=[(g, 1) for g in range(P.groups)])
    assert len(out) == len(jobs)
    for (model, results), r in zip(expect, out):
        assert r.done and not r.timed_out
        if model is None:
            assert r.error and r.error_code == ErrorCode.ADDRESS
            continue
        assert not r.error
        for d, length in results:
            assert r.rows[d] == model.row_entries(d, P), f"result row {d} differs"
        assert (r.step_nnz, r.step_rows, r.step_elems) == (model.step_nnz, model.step_rows, model.step_elems)
        assert r.cycles == model.cycles
        assert [s.as_dict() for s in r.ppu_status] == [pp.status(1).as_dict() for pp in model.ppus]


def test_watchdog_ends_a_program_that_runs_too_long():
    b, results = random_program(P, np.random.default_rng(SEED), units_per_step=4)
    prog, img, masks = b.build()
    model = run_program_fast(prog, img, P, masks=masks)
    short, full = run_core_programs([CoreJob(prog, img, masks, dir_count=len(results), watchdog_cycles=20),
                                     CoreJob(prog, img, masks, dir_count=len(results), watchdog_cycles=20000)], P)
    assert short.timed_out and not short.done
    assert full.done and not full.timed_out and full.cycles == model.cycles
