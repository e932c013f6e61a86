"""cocotb process of the core running several programs in one simulator start (run by
``sim_tb.core_batch``, never imported by the user).

The toplevel is the backdoor build of ``core_tb`` (``core_driver.build_core(backdoor=True)``):
the core inside a wrapper that makes the clock and loads / dumps whole memories by file. For
each program of the stimulus JSON named by ``CORE_STIM``, ``BackdoorTB``: copies its memory
images to the names the wrapper reads, holds reset while a ``mem_load`` pulse loads every memory
at once, pulses ``start``, lets the core run free until ``done`` (or the watchdog), reads the
status registers, dumps the buffer and the directory with a ``mem_dump`` pulse, reads the PPU
status through the host port. Everything goes to the JSON named by ``CORE_RESULT`` and the
dumped files; comparison happens in the driver, outside the simulator.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cocotb
from cocotb.triggers import FallingEdge

from .core_tb_common import RSEL_DB, CoreTB

MEMORIES = ("buf", "mask", "imem", "dir")
DUMPS = ("buf", "dir")


class BackdoorTB(CoreTB):
    """The core with whole memories loaded and dumped by the wrapper ($readmemh / $writememh)."""

    def __init__(self, dut: Any):
        super().__init__(dut, extra_inputs=("mem_load", "mem_dump"))

    async def load(self, prefix: str, keep_state: bool = False) -> None:
        """Reset, with a ``mem_load`` pulse that loads every memory from ``<prefix><stem>.hex``;
        ``keep_state``: the pulse without the reset (the core is idle in ``done``), so the PPUs keep
        their state from the previous program."""
        for stem in MEMORIES:
            shutil.copyfile(f"{prefix}{stem}.hex", f"{stem}.hex")
        if not keep_state:
            await self.reset(during=[self.dut.mem_load])
            return
        self.dut.mem_load.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.mem_load.value = 0
        await FallingEdge(self.dut.clk)

    async def dump(self, prefix: str) -> None:
        """A ``mem_dump`` pulse: the buffer and directory to ``<prefix><stem>_out.hex``."""
        self.dut.mem_dump.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.mem_dump.value = 0
        for stem in DUMPS:
            os.replace(f"{stem}_out.hex", f"{prefix}{stem}_out.hex")


@cocotb.test()
async def run_programs(dut):
    stim = json.loads(Path(os.environ["CORE_STIM"]).read_text())
    tb = BackdoorTB(dut)
    results = []
    for i, prog in enumerate(stim["programs"]):
        await tb.load(prog["prefix"], keep_state=i > 0 and bool(prog.get("keep_state")))
        res = await tb.run(prog["watchdog_cycles"], stall=bool(prog.get("stall")))
        await tb.dump(prog["prefix"])
        res["ppu_status"] = await tb.read_ppu_status(stim.get("ppu_status", []))
        res["db"] = await tb.read(RSEL_DB, range(prog.get("db_count", 0)))
        results.append(res)
    with open(os.environ["CORE_RESULT"], "w") as f:
        json.dump(results, f)
