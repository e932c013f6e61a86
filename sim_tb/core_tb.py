"""cocotb process of the core (run by ``sim_tb.core_driver``, never imported by the user).

The toplevel is ``core_tb``, the core inside a wrapper whose clock the simulator itself
drives; the watchdog counts its cycles. Reads the stimulus JSON named by ``CORE_STIM``: memory
words to load, how many directory entries and which PPU status to read back, and the watchdog.
``HostPortTB`` loads the memories one word per cycle through the host write port, pulses
``start``, lets the core run free until ``done`` (or the watchdog), reads the status registers,
the directory and every written result row, and writes them to the JSON named by
``CORE_RESULT``. Comparison with the golden model happens in the driver, outside the simulator.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import cocotb

from ..arch.isa import dir_decode
from .core_tb_common import RSEL_BUF, RSEL_DB, RSEL_DIR, CoreTB


class HostPortTB(CoreTB):
    """The core loaded and read back through its host ports, one word per cycle."""

    async def load(self, loads: Iterable[Sequence[Any]]) -> None:
        """``loads``: (memory select, base address, words) each."""
        for sel, base, words in loads:
            await self.write(sel, base, words)

    async def read_directory(self, count: int) -> list[int]:
        return await self.read(RSEL_DIR, range(count))

    async def read_rows(self, dir_words: Sequence[int]) -> dict[str, list[int]]:
        """Every written result row (by directory index) through the directory's start and length."""
        rows = {}
        for i, w in enumerate(dir_words):
            d = dir_decode(w)
            if d["written"]:
                rows[str(i)] = await self.read(RSEL_BUF, range(d["start"], d["start"] + d["entries"]))
        return rows


@cocotb.test()
async def run_program(dut):
    stim = json.loads(Path(os.environ["CORE_STIM"]).read_text())
    tb = HostPortTB(dut)
    await tb.reset()
    await tb.load(stim["loads"])
    res = await tb.run(stim["watchdog_cycles"], stall=bool(stim.get("stall")))
    res["directory"] = await tb.read_directory(stim["dir_count"])
    res["rows"] = await tb.read_rows(res["directory"])
    res["ppu_status"] = await tb.read_ppu_status(stim.get("ppu_status", []))
    res["db"] = await tb.read(RSEL_DB, range(stim.get("db_count", 0)))
    with open(os.environ["CORE_RESULT"], "w") as f:
        json.dump(res, f)
