"""The host of a ``core`` in Amaranth's own simulator (no Verilator): load its memories through the
host write port and start it (docs/architecture.md section 11.5). For tests that watch internal
signals cycle by cycle, which the Verilator testbench (``sim_tb.core_driver``) does not expose."""
from __future__ import annotations

from typing import Sequence


async def load_and_start(ctx, dut, images: Sequence[Sequence[int]]) -> None:
    """Write ``images`` (buffer, mask, instruction, directory words: ``host_wsel`` = the index)
    one word per cycle, then pulse ``start``; returns in the cycle after the pulse."""
    for sel, words in enumerate(images):
        for addr, word in enumerate(words):
            ctx.set(dut.host_we, 1)
            ctx.set(dut.host_wsel, sel)
            ctx.set(dut.host_waddr, addr)
            ctx.set(dut.host_wdata, int(word))
            await ctx.tick()
    ctx.set(dut.host_we, 0)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)


async def read_result_row(ctx, dut, index: int, params) -> list[tuple[int, int, int]]:
    """The result row of directory entry ``index``: its directory word, then its entries
    (value, offset, last) one host read per cycle (``host_rsel`` 1, then 0)."""
    from ..arch.isa import dir_decode, entry_decode
    ctx.set(dut.host_rsel, 1)
    ctx.set(dut.host_raddr, index)
    await ctx.tick()
    e = dir_decode(ctx.get(dut.host_rdata))
    row = []
    for a in range(e["start"], e["start"] + e["entries"]):
        ctx.set(dut.host_rsel, 0)
        ctx.set(dut.host_raddr, a)
        await ctx.tick()
        row.append(entry_decode(ctx.get(dut.host_rdata), params))
    return row
