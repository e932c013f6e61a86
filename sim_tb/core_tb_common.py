"""``CoreTB``: what both core testbenches (``core_tb``, ``core_batch_tb``) do the same way: reset,
the host ports, the start pulse, the run under the wrapper's cycle-counting watchdog, the status
registers and the PPU status read after it (cocotb code, run inside the simulator; never imported
by the user).

The core has no streams at its boundary (the host loads and reads memories through plain ports
and the core then runs free), so there is no back-pressure to generate here; the PE and PPU
testbenches (``streams.BlockTB``) have it.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from cocotb.triggers import FallingEdge, First, RisingEdge

from ..arch.isa import COUNTER_W, N_STEPS
from .streams import RESET_CYCLES

NEVER = (1 << 64) - 1  # a watchdog deadline that is never reached (the wrapper's tb_cycle is 64 bits)
# the host ports' memory selects (hw/core.py): host_wsel for writes, host_rsel for reads
SEL_BUF, SEL_MASK, SEL_IMEM, SEL_DIR = range(4)
RSEL_BUF, RSEL_DIR, RSEL_DB = 0, 1, 2   # buffer, directory, bias-gradient sum (section 11.5)
HOST_INPUTS = ("host_we", "host_wsel", "host_waddr", "host_wdata", "host_rsel", "host_raddr", "start",
               "ppu_sel_group", "ppu_sel_slot", "ppu_sel_index")


def split_counters(value: int, n: int = N_STEPS, width: int = COUNTER_W) -> list[int]:
    return [(value >> (i * width)) & ((1 << width) - 1) for i in range(n)]


class CoreTB:
    """The core inside its clock wrapper (``core_driver.clock_wrapper``; the simulator makes the
    clock). Every input is set just after a falling edge, so the core samples it at the next
    rising edge. ``extra_inputs``: further wrapper inputs held at 0 (the backdoor's pulses)."""

    def __init__(self, dut: Any, extra_inputs: Iterable[str] = ()):
        self.dut = dut
        for name in (*HOST_INPUTS, *extra_inputs):
            getattr(dut, name).value = 0
        dut.tb_wd_deadline.value = NEVER  # armed at each start pulse

    async def reset(self, cycles: int = RESET_CYCLES, during: Sequence[Any] = ()) -> None:
        """``rst`` high for ``cycles`` rising edges, low from the next falling edge; the signals in
        ``during`` are pulsed high together with ``rst`` (the backdoor's memory load)."""
        self.dut.rst.value = 1
        for sig in during:
            sig.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        for sig in during:
            sig.value = 0
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def write(self, sel: int, base: int, words: Iterable[int]) -> None:
        """Host writes: one word per cycle into memory ``sel`` from address ``base``."""
        dut = self.dut
        dut.host_we.value = 1
        dut.host_wsel.value = sel
        for i, w in enumerate(words):
            dut.host_waddr.value = base + i
            dut.host_wdata.value = w
            await FallingEdge(dut.clk)
        dut.host_we.value = 0

    async def read(self, sel: int, addrs: Iterable[int]) -> list[int]:
        """Host reads: one word per cycle from memory ``sel`` (RSEL_BUF or RSEL_DIR)."""
        dut = self.dut
        out = []
        dut.host_rsel.value = sel
        for a in addrs:
            dut.host_raddr.value = a
            await FallingEdge(dut.clk)
            out.append(int(dut.host_rdata.value))
        return out

    async def run(self, watchdog_cycles: int, stall: bool = False) -> dict[str, Any]:
        """Pulse ``start``, let the core run free until ``done`` or the watchdog; the run's record
        and the status registers. ``stall`` (watchdog tests) holds ``start`` high: the controller
        restarts every cycle and never finishes, a core that really hangs."""
        dut = self.dut
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = int(bool(stall))
        res = await self.run_until_done(watchdog_cycles)
        dut.start.value = 0
        await FallingEdge(dut.clk)
        res.update(self.status_registers())
        return res

    async def run_until_done(self, watchdog_cycles: int) -> dict[str, Any]:
        """Wait for ``done`` or for ``watchdog_cycles`` clock cycles from now, whichever comes first.

        The watchdog counts clock edges in the wrapper (``tb_cycle``, ``tb_wd_deadline``,
        ``tb_wd_expired``), never simulated time: how long `#5` lasts is the simulator's business
        (cocotb's Verilator build ignores the timescale), a clock edge is the same on every simulator.
        """
        dut = self.dut
        begin = int(dut.tb_cycle.value)
        dut.tb_wd_deadline.value = begin + int(watchdog_cycles)
        expired = RisingEdge(dut.tb_wd_expired)
        t0 = time.perf_counter()
        fired = await First(RisingEdge(dut.done), expired)
        wall = time.perf_counter() - t0
        waited = int(dut.tb_cycle.value) - begin
        dut.tb_wd_deadline.value = NEVER
        return {"timed_out": fired is expired, "waited_cycles": waited, "run_seconds": wall}

    def status_registers(self) -> dict[str, Any]:
        """The core's status outputs after a run."""
        dut = self.dut
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

    async def read_ppu_status(self, selections: Iterable[Sequence[int]]) -> list[int]:
        """The PPU status word of each (group, slot) or (group, slot, FIFO entry index) through the
        host's select port, one per cycle."""
        dut = self.dut
        status = []
        for sel in selections:
            g, slot = sel[0], sel[1]
            dut.ppu_sel_group.value = g
            dut.ppu_sel_slot.value = slot
            dut.ppu_sel_index.value = sel[2] if len(sel) > 2 else 0
            await FallingEdge(dut.clk)
            status.append(int(dut.ppu_status.value))
        return status
