"""Formal harness of the core's controller (hw/core.py, docs/architecture.md s.11).

Environment: every host input is free (writes to any memory at any time), except that
``start`` comes only while the core is not ``busy``; memories start empty as after reset.
The groups are the real ones.

Property groups: ``control`` (a unit goes only to a ``free`` group (``unit.free``), at most
``UNIT_RATE`` groups take a unit in one cycle (one at ``UNIT_RATE = 1``, section 12.9); a PPU command only to ``idle`` groups (``ppu_cmd.idle``); ``busy`` and ``done`` never together; an error
ends the run: ``done`` and ``error`` are raised together and, with the code, stay until
the next ``start``; nothing is issued once done), ``cover`` (each error code of
``ErrorCode`` ends a run, and a run ends normally at ``END``). The core has no watchdog
on this branch: every error path is a decode or address check.
"""
from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cover

from ..arch.isa import CoreParams, ErrorCode
from ..hw.core import Core
from .props import Harness, check_groups, submodules

GROUPS = ("control", "cover")

CORE_SMALL = CoreParams(dw=4, k_max=2, w_max=3, acc_w=9, groups=2, buf_depth=16, mask_depth=2,
                        imem_depth=16, dir_depth=2, n_slots=1, n_f=2, r_w=8)


def core_harness(p: CoreParams = CORE_SMALL, groups: tuple[str, ...] = GROUPS, core_cls=Core) -> Harness:
    check_groups(groups, GROUPS)
    h = Harness()
    m = h.m
    dut = core_cls(p)
    subs = submodules(h.add_block("core", dut))
    grps = [subs[f"group{g}"] for g in range(p.groups)]

    # host rule: `start` only while no run is in progress (section 11.5 defines no restart of
    # a running core; a start then would restart the controller under running groups)
    m.d.comb += Assume(~dut.start | ~dut.busy)
    past_done = h.past(dut.done, "done")
    past_error = h.past(dut.error, "error")
    past_code = h.past(dut.error_code, "code")
    past_start = h.past(dut.start, "start")

    if "control" in groups:
        n_units = 0
        for g in grps:
            with m.If(g.unit.valid):
                m.d.comb += Assert(g.unit.free & dut.busy & ~dut.start)
            with m.If(g.ppu_cmd.valid):
                m.d.comb += Assert(g.ppu_cmd.idle & dut.busy)
            n_units = n_units + g.unit.valid
        m.d.comb += [Assert(n_units <= p.unit_rate), Assert(~(dut.busy & dut.done))]
        m.d.comb += Assert(~dut.error | dut.done)
        with m.If(h.past_valid & past_done & ~past_start):
            m.d.comb += Assert(dut.done & (dut.error == past_error) & (dut.error_code == past_code))
        # invariants (for k-induction): a run in progress has no error yet; a group's error
        # always carries a code
        with m.If(dut.busy):
            m.d.comb += Assert(~dut.error & (dut.error_code == 0))
        for g in grps:
            m.d.comb += Assert(~g.error | (g.error_code != 0))
        with m.If(h.past_valid & ~past_done & dut.done & ~past_start):
            # entering done: with an error exactly when a code is set
            m.d.comb += Assert(dut.error == (dut.error_code != 0))

    if "cover" in groups:
        # every error code the ISA defines (a code added later gets its cover automatically)
        for code in (c for c in ErrorCode if c != ErrorCode.NONE):
            m.d.comb += Cover(dut.done & dut.error & (dut.error_code == code))
        m.d.comb += Cover(dut.done & ~dut.error & h.past(dut.busy, "busy"))
    return h
