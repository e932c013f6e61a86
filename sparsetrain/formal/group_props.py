"""Formal harness of a PE group (hw/group.py): unit sequencer, fetch engines, 3 PEs, PPU.

Environment (assumptions), i.e. what the core guarantees (docs/architecture.md s.11):
a unit arrives only while the group is ``free`` and passes the core's unit checks (length
<= W_MAX, shift < ACC_W, slot < N_SLOTS, bias in range, result inside the buffer); a PPU
command arrives only while the group is ``idle`` and is not START/ACCUM/FINISH; buffer and
mask read data change only in the cycle after a read (synchronous read ports with enable).
Instruction words, buffer and mask contents are free: any op word, valid or not.

Property groups: ``issue`` (the sequencer never gives a cfg to a busy PE; after an error
no op is issued and the group never reports ``free`` again), ``write`` (each unit's result
row is written once: exactly one directory write per unit, entries at consecutive
addresses from ``out_addr``, at most ``max(1, length)`` of them, none outside a unit),
``stream`` (every internal stream, fetch engine to PE Port-1/2/3 and PE to PPU, and the
PPU's output obey the stream rule), ``cover`` (a unit with ops finishes and writes its
row; each of the group's error codes).
"""
from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cover, Signal

from ..arch.isa import CoreParams, ErrorCode
from ..arch.ppu import Op
from ..hw.group import Group, N_BUF_PORTS
from .props import Harness, check_groups, popcount, submodules

GROUPS = ("issue", "write", "stream", "cover")

GROUP_SMALL = CoreParams(dw=4, k_max=2, w_max=3, acc_w=9, groups=1, buf_depth=16, mask_depth=2,
                         imem_depth=16, dir_depth=2, n_slots=1, n_f=2, r_w=8)


def group_harness(p: CoreParams = GROUP_SMALL, groups: tuple[str, ...] = GROUPS, group_cls=Group) -> Harness:
    check_groups(groups, GROUPS)
    h = Harness()
    m = h.m
    dut = group_cls(p)
    subs = submodules(h.add_block("group", dut))
    pes = [subs[f"pe{j}"] for j in range(3)]
    ppu = subs["ppu"]

    # ---- environment: what the core guarantees
    u = dut.unit
    lim = (1 << (p.acc_w - 1)) - 1
    with m.If(dut.unit_valid):
        m.d.comb += Assume(dut.free & ~dut.ppu_cmd_valid & (u.length <= p.w_max) & (u.shift < p.acc_w) &
                           (u.slot < p.n_slots) & (~u.bias_en | ((u.bias >= -lim) & (u.bias <= lim))) &
                           (u.out_addr + u.length <= p.buf_depth) & (u.out_addr < p.buf_depth) &
                           (u.n_ops <= 3))
    cmd = dut.ppu_cmd
    with m.If(dut.ppu_cmd_valid):
        m.d.comb += Assume(dut.idle & (cmd.op != Op.START) & (cmd.op != Op.ACCUM) & (cmd.op != Op.FINISH) &
                           (cmd.slot < p.n_slots))
    for i in range(N_BUF_PORTS):
        ren = h.past(dut.buf_ren[i], f"buf_ren{i}")
        rd = h.past(dut.buf_rdata[i], f"buf_rdata{i}")
        with m.If(h.past_valid & ~ren):
            m.d.comb += Assume(dut.buf_rdata[i] == rd)
    for j in range(3):
        ren = h.past(dut.mask_ren[j], f"mask_ren{j}")
        rd = h.past(dut.mask_rdata[j], f"mask_rdata{j}")
        with m.If(h.past_valid & ~ren):
            m.d.comb += Assume(dut.mask_rdata[j] == rd)

    # ---- the harness's record of the unit in flight
    had_unit, written = Signal(), Signal()
    out_addr = Signal(len(u.out_addr))
    length = Signal(len(u.length))
    n_wr = Signal(len(u.length) + 1)
    with m.If(dut.unit_valid):
        m.d.sync += [had_unit.eq(1), written.eq(0), out_addr.eq(u.out_addr), length.eq(u.length), n_wr.eq(0)]
    with m.Else():
        with m.If(dut.dir_en):
            m.d.sync += written.eq(1)
        with m.If(dut.wr_en):
            m.d.sync += n_wr.eq(n_wr + 1)

    if "issue" in groups:
        for pe in pes:
            with m.If(pe.cfg.valid):
                m.d.comb += Assert(pe.cfg.ready & ~dut.error)
        past_error = h.past(dut.error, "error")
        with m.If(h.past_valid & past_error):
            m.d.comb += Assert(dut.error & ~dut.free)

    if "write" in groups:
        with m.If(dut.dir_en):
            m.d.comb += Assert(had_unit & ~written & dut.wr_en)
        with m.If(dut.wr_en):
            m.d.comb += Assert(had_unit & ~written & (dut.wr_addr == out_addr + n_wr) &
                               (n_wr < length + (length == 0)))
        with m.If(dut.free & had_unit & ~dut.dir_en):
            m.d.comb += Assert(written)

    if "stream" in groups:
        for j, pe in enumerate(pes):
            for port in ("port1", "port2", "port3", "out"):
                h.stream_rule(getattr(pe, port), f"pe{j}_{port}", kind=Assert)
        h.stream_rule(ppu.out, "ppu_out", kind=Assert)

    if "cover" in groups:
        ops_issued = Signal(range(4))
        two_at_once = Signal()
        with m.If(dut.unit_valid):
            m.d.sync += [ops_issued.eq(0), two_at_once.eq(0)]
        with m.Else():
            n_cfg = popcount([pe.cfg.valid for pe in pes])
            with m.If(n_cfg != 0):
                m.d.sync += ops_issued.eq(ops_issued + n_cfg)
            with m.If(n_cfg >= 2):
                m.d.sync += two_at_once.eq(1)
        m.d.comb += [
            Cover(dut.dir_en & had_unit & (ops_issued >= 1) & ~dut.error),
            Cover(dut.dir_en & had_unit & two_at_once & ~dut.error),
        ]
        for code in (ErrorCode.BAD_OPCODE, ErrorCode.ADDRESS, ErrorCode.BAD_OP):
            m.d.comb += Cover(dut.error & (dut.error_code == code))
    return h
