"""cocotb process of the core (run by ``sim_tb.core_driver``, never imported by the user).

The toplevel is ``core_tb``, the core inside a wrapper whose clock the simulator itself
drives; the watchdog counts its cycles. Reads the stimulus JSON named by ``CORE_STIM``: memory words
to load, how many directory
entries and which PPU status to read back, and the watchdog. Loads the memories one word
per cycle through the host write port, pulses ``start``, lets the core run free until
``done`` (or the watchdog), reads the status registers, the directory and every written
result row, and writes them to the JSON named by ``CORE_RESULT``. Comparison with the
golden model happens in the driver, outside the simulator.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from sparsetrain.sim_tb.core_tb_common import NEVER, read_ppu_status, run_until_done, status_registers

DIR_FIELDS = (("start", 0, 20), ("entries", 20, 13), ("nnz", 33, 13), ("written", 46, 1))


@cocotb.test()
async def run_program(dut):
    stim = json.loads(Path(os.environ["CORE_STIM"]).read_text())
    # dut is the clock wrapper (core_driver.clock_wrapper): the simulator makes the clock
    for sig in (dut.host_we, dut.host_wsel, dut.host_waddr, dut.host_wdata, dut.host_rsel, dut.host_raddr,
                dut.start, dut.ppu_sel_group, dut.ppu_sel_slot, dut.ppu_sel_index):
        sig.value = 0
    dut.tb_wd_deadline.value = NEVER  # armed at the start pulse
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    # bulk load: one word per cycle (set on the falling edge, written on the rising edge)
    dut.host_we.value = 1
    for sel, base, words in stim["loads"]:
        dut.host_wsel.value = sel
        for i, w in enumerate(words):
            dut.host_waddr.value = base + i
            dut.host_wdata.value = w
            await FallingEdge(dut.clk)
    dut.host_we.value = 0

    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = int(bool(stim.get("stall")))  # stall: start held, the core never finishes
    res = await run_until_done(dut, stim["watchdog_cycles"])
    dut.start.value = 0
    await FallingEdge(dut.clk)
    res.update(status_registers(dut))

    async def read(sel: int, addrs: list[int]) -> list[int]:
        out = []
        dut.host_rsel.value = sel
        for a in addrs:
            dut.host_raddr.value = a
            await FallingEdge(dut.clk)
            out.append(int(dut.host_rdata.value))
        return out

    dir_words = await read(1, list(range(stim["dir_count"])))
    res["directory"] = dir_words
    rows = {}
    for i, w in enumerate(dir_words):
        d = {n: (w >> lsb) & ((1 << width) - 1) for n, lsb, width in DIR_FIELDS}
        if d["written"]:
            rows[str(i)] = await read(0, list(range(d["start"], d["start"] + d["entries"])))
    res["rows"] = rows
    res["ppu_status"] = await read_ppu_status(dut, stim.get("ppu_status", []))
    with open(os.environ["CORE_RESULT"], "w") as f:
        json.dump(res, f)
