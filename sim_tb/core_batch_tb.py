"""cocotb process of the core running several programs in one simulator start (run by
``sim_tb.core_batch``, never imported by the user).

The toplevel is the backdoor build of ``core_tb`` (``core_driver.build_core(backdoor=True)``):
the core inside a wrapper that makes the clock and loads / dumps whole memories by file. For
each program of the stimulus JSON named by ``CORE_STIM``: copy its memory images to the names
the wrapper reads, hold reset while a ``mem_load`` pulse loads every memory at once, pulse
``start``, let the core run free until ``done`` (or the watchdog), read the status registers,
dump the buffer and the directory with a ``mem_dump`` pulse, read the PPU status through the
host port. Everything goes to the JSON named by ``CORE_RESULT`` and the dumped files;
comparison happens in the driver, outside the simulator.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

N_STEPS = 4
COUNTER_W = 32
MEMORIES = ("buf", "mask", "imem", "dir")
DUMPS = ("buf", "dir")


def _split(value: int, n: int, width: int) -> list[int]:
    return [(value >> (i * width)) & ((1 << width) - 1) for i in range(n)]


@cocotb.test()
async def run_programs(dut):
    stim = json.loads(Path(os.environ["CORE_STIM"]).read_text())
    for sig in (dut.host_we, dut.host_wsel, dut.host_waddr, dut.host_wdata, dut.host_rsel, dut.host_raddr,
                dut.start, dut.ppu_sel_group, dut.ppu_sel_slot, dut.ppu_sel_index, dut.mem_load, dut.mem_dump):
        sig.value = 0
    # The watchdog counts clock periods as the simulator measures them (in its own time steps),
    # whatever time unit and precision the build gave the wrapper's `#` delay.
    await RisingEdge(dut.clk)
    t_edge = get_sim_time(units="step")
    await RisingEdge(dut.clk)
    period = get_sim_time(units="step") - t_edge
    results = []
    for prog in stim["programs"]:
        prefix = prog["prefix"]
        for stem in MEMORIES:
            shutil.copyfile(f"{prefix}{stem}.hex", f"{stem}.hex")
        dut.rst.value = 1
        dut.mem_load.value = 1   # the wrapper's $readmemh of every memory
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.mem_load.value = 0
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        t0 = time.perf_counter()
        timeout = Timer(prog["watchdog_cycles"] * period, units="step")
        fired = await First(RisingEdge(dut.done), timeout)
        wall = time.perf_counter() - t0
        await FallingEdge(dut.clk)
        res = {
            "timed_out": fired is timeout,
            "done": int(dut.done.value),
            "error": int(dut.error.value),
            "error_code": int(dut.error_code.value),
            "cycles": int(dut.cycles.value),
            "total_cycles": int(dut.total_cycles.value),
            "step_nnz": _split(int(dut.step_nnz.value), N_STEPS, COUNTER_W),
            "step_rows": _split(int(dut.step_rows.value), N_STEPS, COUNTER_W),
            "step_elems": _split(int(dut.step_elems.value), N_STEPS, COUNTER_W),
            "run_seconds": wall,
        }
        dut.mem_dump.value = 1   # the wrapper's $writememh of the buffer and the directory
        await FallingEdge(dut.clk)
        dut.mem_dump.value = 0
        for stem in DUMPS:
            os.replace(f"{stem}_out.hex", f"{prefix}{stem}_out.hex")
        status = []
        for g, slot in stim.get("ppu_status", []):
            dut.ppu_sel_group.value = g
            dut.ppu_sel_slot.value = slot
            await FallingEdge(dut.clk)
            status.append(int(dut.ppu_status.value))
        res["ppu_status"] = status
        results.append(res)
    with open(os.environ["CORE_RESULT"], "w") as f:
        json.dump(results, f)
