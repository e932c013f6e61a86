"""The core RTL (hw/core.py) under cocotb against golden.bitexact.core_model: result rows bit for bit,
directory, per-step counters, cycles (exactly the model, within 5 % of section 10), invalid
programs ending in an error status, Icarus on a small subset; the same for a second-generation
core (PREFETCH=1 LOOKAHEAD=2 SKIP_EMPTY=1 OP_SCAN=4, section 12) on random programs and compiled
layers with empty rows, and the first generation on a compiled layer with empty rows."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.isa import CoreParams, ErrorCode, Opcode, decode
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.sim_tb.core_driver import run_core_program
from test_core_model import invalid_program

# one Verilator configuration per generation (each compiled once, cached under build/sim)
P = CoreParams(groups=2, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5)
P_GEN2 = CoreParams(groups=2, buf_depth=4096, imem_depth=1024, dir_depth=1024, mask_depth=256, w_max=16, k_max=5,
                    acc_w=48, prefetch=1, lookahead=2, skip_empty=1, op_scan=4)


def check_against_model(p: CoreParams, seed: int, sim: str, units_per_step: int) -> None:
    print(f"seed {seed} sim {sim}")
    b, results = random_program(p, np.random.default_rng(seed), units_per_step=units_per_step)
    prog, img, masks = b.build()
    model = run_program(prog, img, p, masks)
    assert model.error == 0, model.error_message
    r = run_core_program(prog, img, p, masks=masks, sim=sim, dir_count=len(results), watchdog_cycles=20000)
    assert r.done and not r.timed_out and not r.error
    for d, length in results:
        assert r.rows[d] == model.row_entries(d, p), f"result row {d} differs"
        assert r.directory[d]["nnz"] == int(np.count_nonzero(model.row(d, length, p)))
    assert (r.step_nnz, r.step_rows, r.step_elems) == (model.step_nnz, model.step_rows, model.step_elems)
    assert (r.cycles, r.total_cycles) == (model.cycles, model.total_cycles)
    err = abs(r.cycles - model.cycles_contract) / model.cycles_contract
    print(f"cycles rtl {r.cycles} contract {model.cycles_contract} error {100 * err:.2f} % "
          f"({r.total_cycles} cycles in {r.sim_seconds:.3f} s)")
    # the contract at the core's unit rate (12.9) sees the units, not the program: a unit block's
    # header costs a controller cycle it does not count (the random programs open blocks mid-step)
    headers = sum(decode(w)[0] == Opcode.UNITS for w in prog)
    assert abs(r.cycles - model.cycles_contract) <= headers, (r.cycles, model.cycles_contract, headers)


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_random_src_msrc_osrc_steps_match_model(offset, seed):
    """SRC (bias, ReLU, stride 2, padding), pruned MSRC with masks, OSRC, K up to K_MAX, 2 groups."""
    check_against_model(P, seed + offset, "verilator", units_per_step=5)


def check_program(p: CoreParams, prog, img, masks, directory, results) -> tuple[int, int, int]:
    """One program on the RTL against the model: rows, directory nnz, counters, cycles exactly.
    Returns (RTL cycles, contract cycles, ops skipped by SKIP_EMPTY)."""
    model = run_program(prog, img, p, masks, directory=directory or None)
    assert model.error == 0, model.error_message
    r = run_core_program(prog, img, p, masks=masks, dir_count=len(results), watchdog_cycles=200_000,
                         directory=directory)
    assert r.done and not r.timed_out and not r.error
    for d, length in results:
        assert r.rows[d] == model.row_entries(d, p), f"result row {d} differs"
        assert r.directory[d]["nnz"] == int(np.count_nonzero(model.row(d, length, p)))
    assert (r.step_nnz, r.step_rows, r.step_elems) == (model.step_nnz, model.step_rows, model.step_elems)
    assert (r.cycles, r.total_cycles) == (model.cycles, model.total_cycles)
    skipped = sum(not o.issued for u in model.units for o in u.ops)
    return r.cycles, model.cycles_contract, skipped


# make test time (2 shared cores): this configuration (A+B+D without C) is a core build of its own and runs
# under `make regress`; make test covers the built set (A+B+C+D) in test_core_pingpong and the check tests.
@pytest.mark.regress
@pytest.mark.parametrize("offset", [0, 1])
def test_gen2_random_programs_with_empty_rows_match_model(offset, seed):
    """Prefetch, look-ahead and skipped empty rows: results bit for bit, cycles exactly the model's."""
    print(f"seed {seed + offset}")
    b, results = random_program(P_GEN2, np.random.default_rng(seed + offset), units_per_step=6, density=0.15)
    prog, img, masks = b.build()
    cycles, contract, skipped = check_program(P_GEN2, prog, img, masks, b.directory_image(), results)
    print(f"cycles rtl {cycles} contract {contract}, {skipped} ops skipped")
    assert skipped > 0, "a program with no empty row proves nothing about SKIP_EMPTY"
    assert cycles == contract   # the contract at the core's unit rate (12.9)


# E (OSRC_WINDOW = 2, section 12.6) on the built set A+B+C+D: a core build of its own, under `make regress`
P_E = CoreParams(groups=2, buf_depth=4096, imem_depth=1024, dir_depth=1024, mask_depth=256, w_max=16, k_max=5,
                 acc_w=48, prefetch=1, lookahead=2, skip_empty=1, op_scan=4, pingpong=1, osrc_window=2)


@pytest.mark.regress
@pytest.mark.parametrize("offset", [0, 1])
def test_osrc_window_random_programs_match_model(offset, seed):
    """The OSRC window in the core (Port-1 and Port-2 entry pairs from the group's PairFetch engines):
    results bit for bit, cycles exactly the model's, and fewer than without the window."""
    from dataclasses import replace
    print(f"seed {seed + offset}")
    b, results = random_program(P_E, np.random.default_rng(seed + offset), units_per_step=6, density=0.15)
    prog, img, masks = b.build()
    d = b.directory_image()
    cycles, contract, skipped = check_program(P_E, prog, img, masks, d, results)
    without = run_program(prog, img, replace(P_E, osrc_window=1), masks, directory=d or None).cycles
    print(f"cycles rtl {cycles} (model without the window {without}) contract {contract}, {skipped} ops skipped")
    assert cycles < without
    assert abs(cycles - contract) <= 0.05 * contract


@pytest.mark.parametrize("p", [P, pytest.param(P_GEN2, marks=pytest.mark.regress)], ids=["gen1", "gen2"])
def test_compiled_layer_with_empty_rows_matches_model(p, seed):
    """A compiled layer (the compiler's directory entries for SKIP_EMPTY), every step and program."""
    from sparsetrain.arch.steps import Step
    from sparsetrain.compiler import compile_step
    from test_compiler import random_layer
    print(f"seed {seed}")
    data = random_layer(np.random.default_rng(seed), n=1, c=3, f=4, h=6, w=9, density=0.15)
    skipped = 0
    for step in Step:
        for ch in compile_step(data, step, p).chunks:
            results = [(r.dir, r.length) for r in ch.results]
            cycles, contract, sk = check_program(p, ch.program, ch.buffer_image, ch.masks, ch.directory, results)
            print(f"{step.value}: cycles rtl {cycles} contract {contract}, {sk} ops skipped")
            assert cycles == contract
            skipped += sk
    assert (skipped > 0) == bool(p.skip_empty)


def test_same_program_twice_is_reproducible(rng):
    b, results = random_program(P, rng, units_per_step=3)
    prog, img, masks = b.build()
    r1 = run_core_program(prog, img, P, masks=masks, dir_count=len(results))
    r2 = run_core_program(prog, img, P, masks=masks, dir_count=len(results))
    assert r1.rows == r2.rows and r1.cycles == r2.cycles and r1.rows


@pytest.mark.parametrize("case,code", [
    ("opcode", ErrorCode.BAD_OPCODE), ("op_outside", ErrorCode.BAD_OPCODE), ("k", ErrorCode.BAD_OP),
    ("pad", ErrorCode.BAD_OP), ("addr", ErrorCode.ADDRESS), ("no_end", ErrorCode.ADDRESS),
    ("slot", ErrorCode.BAD_UNIT), ("group", ErrorCode.BAD_UNIT)])
def test_invalid_program_ends_in_error_not_hang(case, code):
    prog, img = invalid_program(case, P)
    r = run_core_program(prog, img, P, dir_count=4, watchdog_cycles=5000)
    assert not r.timed_out and r.done and r.error
    assert r.error_code == code


def test_invalid_unit_blocks_end_in_the_model_error():
    """Every invalid unit block (section 12.9) at UNIT_RATE = 1, in one simulator start."""
    from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs
    from test_core_units import BLOCK_CASES, invalid_block
    jobs = [CoreJob(*invalid_block(case, P), dir_count=4, watchdog_cycles=5000) for case, _ in BLOCK_CASES]
    for (case, code), r in zip(BLOCK_CASES, run_core_programs(jobs, P)):
        assert run_program(*invalid_block(case, P), P).error == code
        assert not r.timed_out and r.done and r.error and r.error_code == code, case


@pytest.mark.regress   # the A+B+D build (see above); test_core_pingpong checks invalid programs on A+B+C+D
@pytest.mark.parametrize("case,code", [
    ("opcode", ErrorCode.BAD_OPCODE), ("k", ErrorCode.BAD_OP), ("addr", ErrorCode.ADDRESS),
    ("no_end", ErrorCode.ADDRESS)])
def test_gen2_invalid_program_ends_in_error_not_hang(case, code):
    """The op reader checks every OP word it examines, skipped or not (the directory is loaded
    zero here, so every op's row counts as empty): the model's error, never a hang."""
    prog, img = invalid_program(case, P_GEN2)
    assert run_program(prog, img, P_GEN2).error == code
    r = run_core_program(prog, img, P_GEN2, dir_count=4, watchdog_cycles=5000)
    assert not r.timed_out and r.done and r.error
    assert r.error_code == code


def test_icarus_small_subset(seed):
    p = CoreParams(groups=1, buf_depth=256, imem_depth=64, dir_depth=16, mask_depth=16, w_max=8, k_max=3)
    check_against_model(p, seed, "icarus", units_per_step=2)


def test_clock_wrapper_passes_every_port_but_the_clock():
    """The core runs inside a wrapper whose simulator-side clock replaces a cocotb Clock."""
    import re

    from amaranth.back import verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from sparsetrain.sim_tb.core_driver import clock_wrapper

    class Counter(wiring.Component):
        def __init__(self):
            super().__init__({"en": In(1), "count": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.count.eq(self.count + self.en)
            return m

    text = clock_wrapper(verilog.convert(Counter(), name="core", emit_src=False), half_period=7)
    wrapper = text[text.index("module core_tb("):]
    header = wrapper[:wrapper.index(")")]
    assert sorted(re.findall(r"\w+", header)[2:]) == ["count", "en", "rst", "tb_cycle", "tb_wd_deadline",
                                                      "tb_wd_expired"]
    assert "input en;" in wrapper and "output [7:0] count;" in wrapper
    assert "always #7 clk = ~clk;" in wrapper and ".clk(clk)" in wrapper
    comb = verilog.convert(Counter(), name="core", emit_src=False).replace("input clk;", "input clock;")
    with pytest.raises(ValueError, match="top = 'core' has no 'clk' input"):
        clock_wrapper(comb)
