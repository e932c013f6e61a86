"""The core testbench's watchdog counts clock cycles (sim_tb.core_driver.WATCHDOG_VERILOG), so a
core that really hangs ends with the timeout error within the configured cycles on Verilator and
on Icarus, whatever time unit each simulator gives the wrapper's clock delay.

The hung core: ``stall=True`` holds ``start`` high, so the controller restarts every cycle and
never reaches ``done`` (the ISA has no jump, so no program alone can loop forever).
"""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from sparsetrain.arch.isa import CoreParams, Opcode, encode
from sparsetrain.sim_tb import core_batch
from sparsetrain.sim_tb.core_driver import run_core_program

# the configurations tests/test_core.py already builds (one compile each, cached under build/sim)
VERILATOR_P = CoreParams(groups=2, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5)
ICARUS_P = CoreParams(groups=1, buf_depth=256, imem_depth=64, dir_depth=16, mask_depth=16, w_max=8, k_max=3)


@pytest.mark.parametrize("sim,params,limit", [("verilator", VERILATOR_P, 50_000), ("icarus", ICARUS_P, 3_000)])
def test_hung_core_ends_at_the_watchdog(sim, params, limit):
    prog = [encode(Opcode.END)]
    free = run_core_program(prog, [], params, sim=sim, dir_count=0, watchdog_cycles=limit)
    assert free.done and not free.timed_out and free.waited_cycles < 10  # the same program, not stalled
    t0 = time.time()
    r = run_core_program(prog, [], params, sim=sim, dir_count=0, watchdog_cycles=limit, stall=True)
    print(f"{sim}: hung core stopped after {r.waited_cycles} cycles (limit {limit}) in {time.time() - t0:.1f} s")
    assert r.timed_out and not r.done
    assert limit <= r.waited_cycles <= limit + 1


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, 1 << 48])
def test_watchdog_cycles_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="watchdog_cycles = .* is out of range; allowed: 1 .. "):
        run_core_program([encode(Opcode.END)], [], VERILATOR_P, watchdog_cycles=bad)


def test_check_reports_a_hung_core_as_error_15(small_golden_run, monkeypatch):
    """`sparsetrain check` on a core that hangs: the report says error 15 (watchdog), FAIL."""
    from sparsetrain.compiler import LayerData, compile_step
    from sparsetrain.compiler_check import TIMEOUT_CODE, check_compiled, sim_params
    from sparsetrain.golden.training.tensors import load_golden

    seen = []
    run_all = core_batch.run_core_programs

    def hung(jobs, *args, **kwargs):  # check runs every chunk in one start (sim_tb.core_batch)
        jobs = [replace(j, stall=True) for j in jobs]
        rs = run_all(jobs, *args, **kwargs)
        seen.extend((r.waited_cycles, j.watchdog_cycles) for r, j in zip(rs, jobs))
        return rs

    monkeypatch.setattr(core_batch, "run_core_programs", hung)
    data = LayerData.from_golden(load_golden(small_golden_run), "features.2.conv")
    # the layer's first 2 filters (one short program: the watchdog of 4x its cycles + 100k is soon reached)
    a = data.arrays
    data = replace(data, spec=replace(data.spec, out_channels=2),
                   arrays={"I": a["I"], "W": a["W"][:2], "b": a["b"][:2]})
    rep = check_compiled(compile_step(data, "forward", sim_params(), samples=1), data)
    print(rep.text(), seen)
    assert rep.rtl_error == TIMEOUT_CODE and not rep.ok and "RTL error code 15 (watchdog)" in rep.text()
    assert seen and all(limit <= waited <= limit + 1 for waited, limit in seen)


def test_batch_testbench_hung_core_ends_at_the_watchdog():
    """The one-start testbench (sim_tb.core_batch_tb) uses the same cycle-counting watchdog; the
    program after a hung one still runs to its end."""
    prog = [encode(Opcode.END)]
    hung, free = core_batch.run_core_programs([core_batch.CoreJob(prog, [], dir_count=0, watchdog_cycles=3_000,
                                                                  stall=True),
                                               core_batch.CoreJob(prog, [], dir_count=0, watchdog_cycles=3_000)],
                                              VERILATOR_P)
    assert hung.timed_out and not hung.done and 3_000 <= hung.waited_cycles <= 3_001
    assert free.done and not free.timed_out and free.waited_cycles < 10
