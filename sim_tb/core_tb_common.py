"""What both core testbenches (``core_tb``, ``core_batch_tb``) do the same way: the run under the
wrapper's cycle-counting watchdog and the status registers read after it (cocotb code, run inside
the simulator; never imported by the user)."""
from __future__ import annotations

import time
from typing import Any

from cocotb.triggers import FallingEdge, First, RisingEdge

N_STEPS = 4
COUNTER_W = 32
NEVER = (1 << 64) - 1  # a watchdog deadline that is never reached (the wrapper's tb_cycle is 64 bits)


def split_counters(value: int, n: int = N_STEPS, width: int = COUNTER_W) -> list[int]:
    return [(value >> (i * width)) & ((1 << width) - 1) for i in range(n)]


async def run_until_done(dut: Any, watchdog_cycles: int) -> dict[str, Any]:
    """Wait for ``done`` or for ``watchdog_cycles`` clock cycles from now, whichever comes first.

    The watchdog counts clock edges in the wrapper (``tb_cycle``, ``tb_wd_deadline``,
    ``tb_wd_expired``), never simulated time: how long `#5` lasts is the simulator's business
    (cocotb's Verilator build ignores the timescale), a clock edge is the same on every simulator.
    """
    begin = int(dut.tb_cycle.value)
    dut.tb_wd_deadline.value = begin + int(watchdog_cycles)
    expired = RisingEdge(dut.tb_wd_expired)
    t0 = time.perf_counter()
    fired = await First(RisingEdge(dut.done), expired)
    wall = time.perf_counter() - t0
    waited = int(dut.tb_cycle.value) - begin
    dut.tb_wd_deadline.value = NEVER
    return {"timed_out": fired is expired, "waited_cycles": waited, "run_seconds": wall}


def status_registers(dut: Any) -> dict[str, Any]:
    """The core's status outputs after a run."""
    return {
        "done": int(dut.done.value),
        "error": int(dut.error.value),
        "error_code": int(dut.error_code.value),
        "cycles": int(dut.cycles.value),
        "total_cycles": int(dut.total_cycles.value),
        "step_nnz": split_counters(int(dut.step_nnz.value)),
        "step_rows": split_counters(int(dut.step_rows.value)),
        "step_elems": split_counters(int(dut.step_elems.value)),
    }


async def read_ppu_status(dut: Any, selections: list) -> list[int]:
    """The PPU status word of each (group, slot) through the host's select port, one per cycle."""
    status = []
    for g, slot in selections:
        dut.ppu_sel_group.value = g
        dut.ppu_sel_slot.value = slot
        await FallingEdge(dut.clk)
        status.append(int(dut.ppu_status.value))
    return status
