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
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from sparsetrain.sim_tb.core_tb_common import NEVER, read_ppu_status, run_until_done, status_registers

MEMORIES = ("buf", "mask", "imem", "dir")
DUMPS = ("buf", "dir")


@cocotb.test()
async def run_programs(dut):
    stim = json.loads(Path(os.environ["CORE_STIM"]).read_text())
    for sig in (dut.host_we, dut.host_wsel, dut.host_waddr, dut.host_wdata, dut.host_rsel, dut.host_raddr,
                dut.start, dut.ppu_sel_group, dut.ppu_sel_slot, dut.ppu_sel_index, dut.mem_load, dut.mem_dump):
        sig.value = 0
    dut.tb_wd_deadline.value = NEVER  # the wrapper's cycle-counting watchdog, armed at each start pulse
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
        dut.start.value = int(bool(prog.get("stall")))  # stall (watchdog tests): start held, never done
        res = await run_until_done(dut, prog["watchdog_cycles"])
        dut.start.value = 0
        await FallingEdge(dut.clk)
        res.update(status_registers(dut))
        dut.mem_dump.value = 1   # the wrapper's $writememh of the buffer and the directory
        await FallingEdge(dut.clk)
        dut.mem_dump.value = 0
        for stem in DUMPS:
            os.replace(f"{stem}_out.hex", f"{prefix}{stem}_out.hex")
        res["ppu_status"] = await read_ppu_status(dut, stim.get("ppu_status", []))
        results.append(res)
    with open(os.environ["CORE_RESULT"], "w") as f:
        json.dump(results, f)
