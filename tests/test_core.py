"""The core RTL (hw/core.py) under cocotb against golden.bitexact.core_model: result rows bit for bit,
directory, per-step counters, cycles (exactly the model, within 5 % of section 10), invalid
programs ending in an error status, Icarus on a small subset."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparsetrain.arch.isa import CoreParams, ErrorCode
from sparsetrain.golden.bitexact.core_model import random_program, run_program
from sparsetrain.sim_tb.core_driver import run_core_program
from test_core_model import invalid_program

SEED = int(os.environ.get("SPARSETRAIN_SEED", "1234"))
# one Verilator configuration for every test (compiled once, cached under build/sim)
P = CoreParams(groups=2, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5)


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
    assert r.cycles == model.cycles
    err = abs(r.cycles - model.cycles_contract) / model.cycles_contract
    print(f"cycles rtl {r.cycles} contract {model.cycles_contract} error {100 * err:.2f} % "
          f"({r.total_cycles} cycles in {r.sim_seconds:.3f} s)")
    assert err <= 0.05


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_random_src_msrc_osrc_steps_match_model(offset):
    """SRC (bias, ReLU, stride 2, padding), pruned MSRC with masks, OSRC, K up to K_MAX, 2 groups."""
    check_against_model(P, SEED + offset, "verilator", units_per_step=5)


def test_same_program_twice_is_reproducible():
    b, results = random_program(P, np.random.default_rng(SEED), units_per_step=3)
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


def test_icarus_small_subset():
    p = CoreParams(groups=1, buf_depth=256, imem_depth=64, dir_depth=16, mask_depth=16, w_max=8, k_max=3)
    check_against_model(p, SEED, "icarus", units_per_step=2)


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
