"""A PE group: N_PE PEs, their op dispatcher and 1 PPU (architecture s.10, s.11).

The group takes one unit at a time (``unit``: the ``UNIT`` word and its address). Its
dispatcher (``hw/dispatch.py``, ``OpDispatch``) reads the unit's ``OP`` words from the
instruction memory (N_PE read ports, ``imem``), gives each op to its first free PE and streams
the operands from the buffer (``buf_read``: 2 read ports per PE; ``mask_read``: 1 per PE). The
group's unit sequencer runs the PPU's START / ACCUM / FINISH and writes the result row
(``buf_write``) and its directory entry (``dir_write``). The memory ports are
``amaranth.lib.memory`` port signatures, so the core joins them to its memories with
``wiring.connect``.

The PPU's ACCUM ends when every PE of its ``pe_mask`` has sent a ``last`` beat; a PE runs
several ops of a unit, so the group forwards a PE's ``last`` only on the final beat of the
PE's final op of the unit (known in the cycle of that beat: the PEs that free in this cycle
take the remaining ops, lowest index first).
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from ..arch.isa import DIR_FIELDS, DIR_W, ERR_W, CoreParams, Opcode
from ..arch.ppu import N_PE, PPUConfig
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .dispatch import (IMEM_PORTS, N_BUF_PORTS, PC_W, FetchEngine, MaskFetch, OpDispatch, buf_ports,
                       buf_read_signature, check_core_params, copy_fields, dir_layout, dir_ports, dir_read_signature,
                       imem_ports, imem_read_signature, mask_read_signature)
from .enums import ErrorShape, PpuOp, field_width
from .layouts import entry_layout, instr_layout
from .pe import PE
from .ppu import PPU, hw_params, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout

__all__ = ["ERR_W", "IMEM_PORTS", "N_BUF_PORTS", "PC_W", "Group", "FetchEngine", "MaskFetch", "UnitSignature",
           "PpuCommandSignature", "PpuStatusSignature", "RowCountSignature", "BiasGradSignature",
           "check_core_params", "copy_fields"]

ROW_LEN_W = field_width(Opcode.UNIT, "length")

# The second-generation switches of the group and the core (docs/architecture.md section 12,
# CoreParams); the defaults are the first generation exactly.
GEN2_PARAMS = {
    "PREFETCH": ParamSpec(0, "A: every PE with a shadow Reg-1 and a cfg queue, operands prefetched (0 off, 1 on)"),
    "LOOKAHEAD": ParamSpec(1, "B: MSRC look-ahead, Port-1 entries per cycle (1 off, 2 on)"),
    "OSRC_WINDOW": ParamSpec(1, "E: OSRC merge actions a PE examines per cycle, Port-1/2 entry pairs (1 off, 2 on)"),
    "PINGPONG": ParamSpec(0, "C: two PPU accumulators, a unit's finish overlaps the next unit (0 off, 1 on)"),
    "SKIP_EMPTY": ParamSpec(0, "D: never issue an op whose sparse operand row is empty (0 off, 1 on)"),
    "OP_SCAN": ParamSpec(4, "D: OP words the op reader examines per cycle (1 .. 7: ISSUE_QUEUE + N_PE)"),
}


# ---- memory port signatures: the ports of the core's memories (amaranth.lib.memory), seen
# from the memory; a group port is the flipped one (it drives the address and enable).

def buf_write_signature(p: CoreParams) -> WritePort.Signature:
    return WritePort.Signature(addr_width=ceil_log2(p.buf_depth), shape=entry_layout(hw_params(p)))


def dir_write_signature(p: CoreParams) -> WritePort.Signature:
    return WritePort.Signature(addr_width=ceil_log2(p.dir_depth), shape=dir_layout())


# ---- the group's interfaces with the controller, seen from the controller

class UnitSignature(wiring.Signature):
    """A unit to run: the ``UNIT`` ``word`` and ``op_addr``, the instruction address of its first
    ``OP`` word (a bare unit's ``pc + 1``, a block unit's ``o_i``: docs/architecture.md 12.9), taken
    in the cycle ``valid`` is high; the controller raises ``valid`` only while ``free``."""

    def __init__(self, p: CoreParams):
        check_core_params(p)
        super().__init__({"valid": Out(1), "word": Out(instr_layout(Opcode.UNIT)), "op_addr": Out(PC_W),
                          "free": In(1)})


class PpuCommandSignature(wiring.Signature):
    """A PPU command other than START / ACCUM / FINISH (those are the group's own), taken in the
    cycle ``valid`` is high; the controller raises ``valid`` only while ``idle``."""

    def __init__(self, cfg: PPUConfig):
        super().__init__({"valid": Out(1), "cmd": Out(ppu_cmd_layout(cfg)), "idle": In(1)})


class PpuStatusSignature(wiring.Signature):
    """Readback of the group's PPU: ``sel`` selects what ``status`` shows (combinational)."""

    def __init__(self, cfg: PPUConfig):
        super().__init__({"sel": Out(ppu_status_sel_layout(cfg)), "status": In(ppu_status_layout(cfg))})


class RowCountSignature(wiring.Signature):
    """What the group writes, per cycle, for the controller's counters: a non-zero result entry
    (``nnz_inc``), a finished result row (``row_done``) and that row's ``row_len``."""

    def __init__(self):
        super().__init__({"nnz_inc": Out(1), "row_done": Out(1), "row_len": Out(ROW_LEN_W)})


class BiasGradSignature(wiring.Signature):
    """A finished result row's sum for the core's bias-gradient bank of the group (section 11.6):
    ``en`` in the cycle the row's last entry is written by a unit with ``db_en``; ``idx`` the
    unit's ``db`` (held for the whole unit, so the bank can be read ahead); ``value`` the sum of
    the values written (after pruning), exact (``DW + OFF_W`` bits)."""

    def __init__(self, p: CoreParams):
        check_core_params(p)
        super().__init__({"en": Out(1), "idx": Out(field_width(Opcode.UNIT, "db")),
                          "value": Out(signed(p.dw + p.off_w))})


class _RowWrite(NamedTuple):
    """The registers of the result row being written (``Group._result_write``)."""

    out_idx: Signal   # entries written so far
    nnz: Signal       # non-zeros written so far
    row_sum: Signal   # sum of the values written so far (the unit's db contribution)
    wr_last: Signal   # the row's last entry is written in this cycle


class Group(wiring.Component):
    """N_PE PEs + PPU + fetch engines + unit sequencer; memories are outside (in the core).

    ``params``: a CoreParams (a TypeError otherwise; CoreParams refuses out-of-range values
    with a ValueError naming the parameter and its range)."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        self.ppu_cfg = p.ppu_config()
        super().__init__({
            "unit": In(UnitSignature(p)),
            "ppu_cmd": In(PpuCommandSignature(self.ppu_cfg)),
            "ppu_status": In(PpuStatusSignature(self.ppu_cfg)),
            "imem": In(imem_read_signature(p)).array(imem_ports(p)),
            "buf_read": In(buf_read_signature(p)).array(buf_ports(p)),
            "mask_read": In(mask_read_signature(p)).array(N_PE),
            "buf_write": In(buf_write_signature(p)),
            "dir_write": In(dir_write_signature(p)),
            "rows": Out(RowCountSignature()),
            "db": Out(BiasGradSignature(p)),
            "busy": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorShape),
            **({"dir_read": In(dir_read_signature(p)).array(dir_ports(p))} if p.skip_empty else {}),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        hp = hw_params(p)
        m = Module()
        pes = []
        for j in range(N_PE):
            m.submodules[f"pe{j}"] = pe = PE(hp, prefetch=bool(p.prefetch), lookahead=p.lookahead,
                                             osrc_window=p.osrc_window)
            pes.append(pe)
        m.submodules.ppu = ppu = PPU(self.ppu_cfg)
        m.d.comb += [ppu.status_sel.eq(self.ppu_status.sel), self.ppu_status.status.eq(ppu.status)]
        unit = self.unit

        # ---- unit registers
        u = Signal(instr_layout(Opcode.UNIT))
        pc = Signal(PC_W)
        error = Signal()
        code = Signal(ErrorShape)
        busy = Signal()   # a unit is in flight (the sequencer is not IDLE)
        m.d.comb += [self.error.eq(error), self.error_code.eq(code), self.busy.eq(busy)]

        # ---- op dispatch (hw/dispatch.py): OP reads, checks, PE choice, operand fetch
        m.submodules.dispatch = disp = OpDispatch(p)
        m.d.comb += [disp.unit.valid.eq(unit.valid), disp.unit.pc.eq(unit.op_addr),
                     disp.unit.n_ops.eq(unit.word.n_ops), disp.unit.enable.eq(~error & busy)]
        for i in range(imem_ports(p)):
            connect(m, flipped(self.imem[i]), disp.imem[i])
        for i in range(buf_ports(p)):
            connect(m, flipped(self.buf_read[i]), disp.buf_read[i])
        for i in range(dir_ports(p)):
            connect(m, flipped(self.dir_read[i]), disp.dir_read[i])
        for j, pe in enumerate(pes):
            connect(m, flipped(self.mask_read[j]), disp.mask_read[j])
            connect(m, disp.pe_cfg[j], pe.cfg)
            connect(m, disp.port1[j], pe.port1)
            connect(m, disp.port2[j], pe.port2)
            connect(m, disp.port3[j], pe.port3)
            if p.lookahead == 2 or p.osrc_window == 2:
                m.d.comb += disp.port1_take2[j].eq(pe.port1_take2)
            if p.osrc_window == 2:
                m.d.comb += disp.port2_take2[j].eq(pe.port2_take2)
        remaining_after = disp.remaining
        if p.pingpong:
            self._pingpong_sequencer(m, ppu, pes, disp, error, busy)
            with m.If(~error & disp.error):
                m.d.sync += [error.eq(1), code.eq(disp.error_code)]
            return m

        cmd = ppu.cmd.payload
        # ACCUM waits for the PEs that run an op of the unit: the lowest min(n_ops, N_PE)
        n_pe_used = (1 << N_PE) - 1
        for k in reversed(range(N_PE)):
            n_pe_used = Mux(u.n_ops == k, (1 << k) - 1, n_pe_used)

        # ---- PE beats to the PPU; `last` only on a PE's final op of the unit
        if p.prefetch or p.skip_empty:
            self._beats_counted(m, pes, ppu, disp, unit, busy, n_pe_used)
        else:
            below = Const(0, range(N_PE + 1))
            for j, pe in enumerate(pes):
                to_ppu = getattr(ppu, f"pe{j}")
                lastbeat = Signal(name=f"lastbeat{j}")
                m.d.comb += lastbeat.eq(pe.out.valid & to_ppu.ready & pe.out.payload.last)
                final = Signal(name=f"final{j}")
                m.d.comb += final.eq(below >= remaining_after)
                below = below + lastbeat
                m.d.comb += [
                    to_ppu.valid.eq(pe.out.valid),
                    to_ppu.payload.eq(pe.out.payload),
                    to_ppu.payload.last.eq(pe.out.payload.last & final),
                    pe.out.ready.eq(to_ppu.ready),
                ]

        # ---- PPU command sequencer and result write
        out = ppu.out
        writing = Signal()
        sequencer_idle = Signal()
        row = self._result_write(m, ppu, u, writing)
        out_idx, nnz, row_sum, wr_last = row.out_idx, row.nnz, row.row_sum, row.wr_last
        m.d.comb += [
            self.ppu_cmd.idle.eq(sequencer_idle & ppu.cmd.ready),
            unit.free.eq(~error & ((sequencer_idle & ppu.cmd.ready) | wr_last)),
        ]

        def accept_unit() -> None:
            # a new unit (sent only while `free`) starts with START (bias), ACCUM or FINISH
            with m.If(unit.valid):
                with m.If(unit.word.bias_en):
                    m.next = "START"
                with m.Elif(unit.word.n_ops != 0):
                    m.next = "ACCUM"
                with m.Else():
                    m.next = "FINISH"

        with m.FSM(name="group_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += [ppu.cmd.valid.eq(self.ppu_cmd.valid), cmd.eq(self.ppu_cmd.cmd)]
                accept_unit()
            with m.State("START"):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(PpuOp.START), cmd.bias.eq(u.bias)]
                with m.If(ppu.cmd.ready):
                    with m.If(u.n_ops != 0):
                        m.next = "ACCUM"
                    with m.Else():
                        m.next = "FINISH"
                accept_unit()
            with m.State("ACCUM"):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(PpuOp.ACCUM), cmd.pe_mask.eq(n_pe_used)]
                with m.If(ppu.cmd.ready):
                    m.next = "FINISH"
                accept_unit()
            with m.State("FINISH"):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(PpuOp.FINISH)]
                m.d.comb += copy_fields(cmd, u, ("slot", "length", "shift", "relu", "acc_g", "prune", "g_first"))
                with m.If(ppu.cmd.ready):
                    m.d.sync += [out_idx.eq(0), nnz.eq(0), row_sum.eq(0)]
                    m.next = "WRITE"
                accept_unit()
            with m.State("WRITE"):
                m.d.comb += out.ready.eq(1)
                with m.If(out.valid & out.payload.last):
                    m.next = "IDLE"
                accept_unit()
        m.d.comb += [sequencer_idle.eq(fsm.ongoing("IDLE")), busy.eq(~fsm.ongoing("IDLE")),
                     writing.eq(fsm.ongoing("WRITE"))]
        with m.If(unit.valid):
            m.d.sync += u.eq(unit.word)

        # ---- errors: the first one wins
        with m.If(~error & disp.error):
            m.d.sync += [error.eq(1), code.eq(disp.error_code)]
        return m

    def _result_write(self, m: Module, ppu: PPU, word, writing: Signal) -> "_RowWrite":
        """The result row of the unit ``word`` (a ``UNIT`` layout view) while ``writing``: every PPU
        output entry to the buffer at ``out_addr`` onwards, the directory entry ``dir`` with the
        last one, the row counters and the bias-gradient bank (section 11.6). The same for both
        sequencers; the caller sets ``out.ready`` and clears the returned registers at FINISH."""
        p = self.params
        out = ppu.out
        entries_w = dict((n, w) for n, _, w in DIR_FIELDS)
        row = _RowWrite(out_idx=Signal(entries_w["entries"], name="out_idx"), nnz=Signal(entries_w["nnz"], name="nnz"),
                        # values written so far of the row being written
                        row_sum=Signal(signed(p.dw + p.off_w), name="row_sum"), wr_last=Signal(name="wr_last"))
        wr, dw, rows = self.buf_write, self.dir_write, self.rows
        m.d.comb += [
            wr.en.eq(writing & out.valid),
            wr.addr.eq(word.out_addr + row.out_idx),
            wr.data.eq(out.payload),
            row.wr_last.eq(writing & out.valid & out.payload.last),
            rows.nnz_inc.eq(wr.en & (out.payload.offset != p.off_end)),
            dw.en.eq(row.wr_last),
            dw.addr.eq(word.dir),
            dw.data.start.eq(word.out_addr),
            dw.data.entries.eq(row.out_idx + 1),
            dw.data.nnz.eq(row.nnz + rows.nnz_inc),
            dw.data.written.eq(1),
            rows.row_done.eq(row.wr_last),
            rows.row_len.eq(word.length),
            self.db.en.eq(row.wr_last & word.db_en),
            self.db.idx.eq(word.db),
            self.db.value.eq(row.row_sum + out.payload.value),
        ]
        with m.If(writing & out.valid):
            m.d.sync += [row.out_idx.eq(row.out_idx + 1), row.nnz.eq(row.nnz + rows.nnz_inc),
                         row.row_sum.eq(row.row_sum + out.payload.value)]
        return row

    def _pingpong_sequencer(self, m: Module, ppu: PPU, pes: list, disp: OpDispatch, error: Signal,
                            busy: Signal) -> None:
        """The unit sequencer with PINGPONG=1 (architecture 12.3): the k-th unit uses PPU
        accumulator k mod 2; the group takes the next unit once every op of the current one is
        issued (``disp.all_issued``) and the next unit's accumulator is free (its previous FINISH
        wrote its last entry), so a unit's FINISH overlaps the next unit's ops. Per PE a FIFO
        (depth 3: the PE's ops A, S, Q) holds the accumulator of each op handed to it, pushed on
        ``disp.issued[j]`` and popped at the op's last beat; its head is the PE's ``pe_acc``
        sideband. A unit's FINISH is offered in the cycle after its ops are issued and their last
        beats are in (units finish in order); it has priority over a START (bias), which the PPU
        takes while a FINISH of the other accumulator runs."""
        p = self.params
        unit, cmd, out = self.unit, ppu.cmd.payload, ppu.out
        ulay = instr_layout(Opcode.UNIT)
        uw = [Signal(ulay, name=f"unit_acc{a}") for a in range(2)]   # the unit held by accumulator a
        pend = Signal(2)        # accumulator a holds a unit whose result row is not written yet
        issued_all = Signal(2)  # every op of that unit was issued (or skipped)
        started = Signal(2)     # its FINISH was accepted
        start_pend = Signal(2)  # its START (bias) is still to be sent
        outstanding = [Signal(range(3 * N_PE + 1), name=f"outstanding{a}") for a in range(2)]
        next_acc = Signal()     # the accumulator of the next unit taken
        disp_acc = Signal()     # the accumulator of the unit the dispatcher issues
        disp_active = Signal()  # the dispatcher still has ops of that unit to issue
        fin_turn = Signal()     # the accumulator whose FINISH comes next (units finish in order)
        fin_acc = Signal()      # the accumulator of the row being written
        writing = Signal()
        m.d.comb += [disp_acc.eq(~next_acc), busy.eq(pend.any())]

        # ---- beats to the PPU with their accumulator; per-PE FIFO of op accumulators
        pushes = [[] for _ in range(2)]
        pops = [[] for _ in range(2)]
        for j, pe in enumerate(pes):
            to_ppu = getattr(ppu, f"pe{j}")
            q = Signal(N_PE, name=f"acc_fifo{j}")          # bit i: accumulator of the i-th oldest op
            n = Signal(range(N_PE + 1), name=f"acc_fifo{j}_n")
            lastbeat = Signal(name=f"lastbeat{j}")
            m.d.comb += [
                to_ppu.valid.eq(pe.out.valid), to_ppu.payload.eq(pe.out.payload), pe.out.ready.eq(to_ppu.ready),
                ppu.pe_acc[j].eq(q[0]),
                lastbeat.eq(pe.out.valid & to_ppu.ready & pe.out.payload.last),
            ]
            q_pop = Signal(N_PE, name=f"acc_fifo{j}_pop")
            n_pop = Signal(range(N_PE + 1), name=f"acc_fifo{j}_npop")
            m.d.comb += [q_pop.eq(Mux(lastbeat, q >> 1, q)), n_pop.eq(n - lastbeat)]
            with m.If(disp.issued[j]):
                m.d.sync += [q.eq(q_pop | (disp_acc << n_pop)), n.eq(n_pop + 1)]
            with m.Else():
                m.d.sync += [q.eq(q_pop), n.eq(n_pop)]
            for a in range(2):
                pushes[a].append(disp.issued[j] & (disp_acc == a))
                pops[a].append(lastbeat & (q[0] == a))
        for a in range(2):
            m.d.sync += outstanding[a].eq(outstanding[a] + sum(pushes[a]) - sum(pops[a]))

        # ---- result write of the FINISH running
        wu = Signal(ulay)
        m.d.comb += [wu.eq(Mux(fin_acc, uw[1].as_value(), uw[0].as_value())), out.ready.eq(1)]
        row = self._result_write(m, ppu, wu, writing)
        out_idx, nnz, row_sum, wr_last = row.out_idx, row.nnz, row.row_sum, row.wr_last
        with m.If(wr_last):
            m.d.sync += [writing.eq(0), pend.bit_select(fin_acc, 1).eq(0)]

        # ---- PPU commands: FINISH (in unit order) before START (bias) before the controller's
        fu = Signal(ulay)
        m.d.comb += fu.eq(Mux(fin_turn, uw[1].as_value(), uw[0].as_value()))
        fin_ready = Signal()
        m.d.comb += fin_ready.eq(pend.bit_select(fin_turn, 1) & issued_all.bit_select(fin_turn, 1)
                                 & (Mux(fin_turn, outstanding[1], outstanding[0]) == 0)
                                 & ~start_pend.bit_select(fin_turn, 1) & ~started.bit_select(fin_turn, 1))
        s_acc = Signal()  # the older START first
        m.d.comb += s_acc.eq(Mux(start_pend.bit_select(next_acc, 1), next_acc, disp_acc))
        with m.If(fin_ready):
            m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(PpuOp.FINISH), cmd.acc.eq(fin_turn)]
            m.d.comb += copy_fields(cmd, fu, ("slot", "length", "shift", "relu", "acc_g", "prune", "g_first"))
            with m.If(ppu.cmd.ready):
                m.d.sync += [started.bit_select(fin_turn, 1).eq(1), fin_turn.eq(~fin_turn), fin_acc.eq(fin_turn),
                             writing.eq(1), out_idx.eq(0), nnz.eq(0), row_sum.eq(0)]
        with m.Elif(start_pend.any()):
            m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(PpuOp.START), cmd.acc.eq(s_acc),
                         cmd.bias.eq(Mux(s_acc, uw[1].bias, uw[0].bias))]
            with m.If(ppu.cmd.ready):
                m.d.sync += start_pend.bit_select(s_acc, 1).eq(0)
        with m.Elif(~pend.any()):
            m.d.comb += [ppu.cmd.valid.eq(self.ppu_cmd.valid), cmd.eq(self.ppu_cmd.cmd)]
        m.d.comb += self.ppu_cmd.idle.eq(~pend.any() & ~ppu.status.busy)

        # ---- taking units
        acc_free = Signal(2)  # accumulator a can hold a new unit in this cycle
        for a in range(2):
            m.d.comb += acc_free[a].eq(~pend[a] | (wr_last & (fin_acc == a)))
        m.d.comb += unit.free.eq(~error & (pend.any() | ~ppu.status.busy) & (~disp_active | disp.all_issued)
                                 & acc_free.bit_select(next_acc, 1))
        with m.If(disp_active & disp.all_issued):
            m.d.sync += [issued_all.bit_select(disp_acc, 1).eq(1), disp_active.eq(0)]
        with m.If(unit.valid):
            for a in range(2):
                with m.If(next_acc == a):
                    m.d.sync += [uw[a].eq(unit.word), pend[a].eq(1), issued_all[a].eq(unit.word.n_ops == 0),
                                 started[a].eq(0), start_pend[a].eq(unit.word.bias_en)]
            m.d.sync += [next_acc.eq(~next_acc), disp_active.eq(unit.word.n_ops != 0)]


    @staticmethod
    def _beats_counted(m: Module, pes, ppu, disp: OpDispatch, unit, busy, pe_mask) -> None:
        """PE beats to the PPU when a PE may hold several ops (PREFETCH) or a PE of the ACCUM
        may get no op (SKIP_EMPTY): each PE counts its ops in flight (issued, not yet ended by
        their final beat); a final beat is the PE's last of the unit when the PE has no other op
        and every op of the unit has been issued (``all_issued``). A PE of the ACCUM's
        ``pe_mask`` that has no op in flight once every op is issued, and has not sent the
        unit's last beat, sends an empty one (``count = 0``, ``last``), held until taken."""
        for j, pe in enumerate(pes):
            to_ppu = getattr(ppu, f"pe{j}")
            inflight = Signal(range(4), name=f"inflight{j}")
            closed = Signal(name=f"closed{j}")   # the unit's last beat of this PE has been taken
            lastbeat = Signal(name=f"lastbeat{j}")
            final = Signal(name=f"final{j}")
            empty_beat = Signal(name=f"empty_beat{j}")
            m.d.comb += [
                lastbeat.eq(pe.out.valid & to_ppu.ready & pe.out.payload.last),
                final.eq(disp.all_issued & (inflight == 1) & ~disp.issued[j]),
                empty_beat.eq(busy & ~unit.valid & disp.all_issued & pe_mask[j] & ~closed & (inflight == 0) &
                              ~disp.issued[j]),
                to_ppu.valid.eq(pe.out.valid | empty_beat),
                pe.out.ready.eq(to_ppu.ready),
            ]
            with m.If(empty_beat):
                m.d.comb += [to_ppu.payload.count.eq(0), to_ppu.payload.last.eq(1)]
            with m.Else():
                m.d.comb += [to_ppu.payload.eq(pe.out.payload),
                             to_ppu.payload.last.eq(pe.out.payload.last & final)]
            m.d.sync += inflight.eq(inflight + disp.issued[j] - lastbeat)
            with m.If(unit.valid):
                m.d.sync += closed.eq(0)
            with m.Elif((lastbeat & final) | (empty_beat & to_ppu.ready)):
                m.d.sync += closed.eq(1)


BLOCK = BlockSpec(
    name="group",
    help="PE group: N_PE (3) PEs, fetch engines, PPU and unit sequencer (docs/architecture.md s.10, s.11)",
    params={
        **DATAPATH_PARAMS,
        "BUF_DEPTH": ParamSpec(16384, "buffer words the fetch engines may address (16 .. 2**20)"),
        "MASK_DEPTH": ParamSpec(1024, "mask words (1 .. 65536)"),
        "IMEM_DEPTH": ParamSpec(8192, "instruction words the op reader may address (16 .. 2**20)"),
        "DIR_DEPTH": ParamSpec(4096, "row directory entries (1 .. 65536; SKIP_EMPTY reads them)"),
        "N_SLOTS": ParamSpec(4, "PPU threshold slots, one per layer (1 .. 64)"),
        "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
        **GEN2_PARAMS,
    },
    params_class=CoreParams,
    make=Group,
)
