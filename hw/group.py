"""A PE group: N_PE PEs, their operand fetch engines and 1 PPU (architecture s.10, s.11).

The group takes one unit at a time (``unit``: the ``UNIT`` word and its address), reads the
unit's ``OP`` words from the instruction memory itself (N_PE read ports, ``imem``, so up to
N_PE ops start in one cycle), gives each op to its first free PE (ties: lowest index),
streams the operands from the buffer (``buf_read``: 2 read ports per PE, ``FetchEngine``;
``mask_read``: 1 per PE, ``MaskFetch``; an engine starts reading in the cycle its PE accepts
the cfg, so no operand ever stalls), runs the PPU's START / ACCUM / FINISH and writes the
result row (``buf_write``) and its directory entry (``dir_write``). The memory ports are
``amaranth.lib.memory`` port signatures, so the core joins them to its memories with
``wiring.connect``.

The PPU's ACCUM ends when every PE of its ``pe_mask`` has sent a ``last`` beat; a PE runs
several ops of a unit, so the group forwards a PE's ``last`` only on the final beat of the
PE's final op of the unit (known in the cycle of that beat: the PEs that free in this cycle
take the remaining ops, lowest index first).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from ..arch.isa import ADDR_W, DIR_FIELDS, DIR_W, ERR_W, INSTR_W, CoreParams, ErrorCode, Opcode
from ..arch.ppu import N_PE, PPUConfig
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .enums import ErrorShape, Mode, PpuOp, field_width
from .layouts import entry_layout, instr_layout, mask_layout
from .pe import PE
from .ppu import PPU, hw_params, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout

__all__ = ["ERR_W", "IMEM_PORTS", "N_BUF_PORTS", "PC_W", "Group", "FetchEngine", "MaskFetch", "UnitSignature",
           "PpuCommandSignature", "PpuStatusSignature", "RowCountSignature", "BiasGradSignature"]

N_BUF_PORTS = 2 * N_PE
IMEM_PORTS = N_PE
# Widths from the instruction-set table: an instruction address one bit wider than a buffer
# address (IMEM_DEPTH <= 2**20, so pc + n never wraps); a fetch address one bit wider than the
# OP word's operand address (the word after the last one is still representable); a fetch
# count down-counter one bit wider than the kernel size it counts.
PC_W = ADDR_W + 1
FETCH_ADDR_W = field_width(Opcode.OP, "addr1") + 1
FETCH_COUNT_W = field_width(Opcode.OP, "k") + 1
N_OPS_W = field_width(Opcode.UNIT, "n_ops")
ROW_LEN_W = field_width(Opcode.UNIT, "length")


def check_core_params(params: object, name: str = "params") -> CoreParams:
    """``params`` itself when it is a CoreParams (validated on creation), else a TypeError."""
    if not isinstance(params, CoreParams):
        raise TypeError(f"{name} = {params!r} is not a CoreParams; allowed: a CoreParams instance")
    return params


def dir_layout() -> data.StructLayout:
    """A row directory word (``arch.isa.DIR_FIELDS``, section 11.2) as a layout."""
    members, pos = {}, 0
    for name, lsb, width in DIR_FIELDS:
        if lsb != pos:
            raise ValueError(f"DIR_FIELDS: {name} starts at bit {lsb}; allowed: {pos} (fields are contiguous)")
        members[name] = unsigned(width)
        pos += width
    if pos != DIR_W:
        raise ValueError(f"DIR_FIELDS: {pos} bits; allowed: DIR_W = {DIR_W}")
    return data.StructLayout(members)


# ---- memory port signatures: the ports of the core's memories (amaranth.lib.memory), seen
# from the memory; a group port is the flipped one (it drives the address and enable).

def buf_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.buf_depth), shape=entry_layout(hw_params(p)))


def buf_write_signature(p: CoreParams) -> WritePort.Signature:
    return WritePort.Signature(addr_width=ceil_log2(p.buf_depth), shape=entry_layout(hw_params(p)))


def mask_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.mask_depth), shape=mask_layout(hw_params(p)))


def imem_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.imem_depth), shape=INSTR_W)


def dir_write_signature(p: CoreParams) -> WritePort.Signature:
    return WritePort.Signature(addr_width=ceil_log2(p.dir_depth), shape=dir_layout())


# ---- the group's interfaces with the controller, seen from the controller

class UnitSignature(wiring.Signature):
    """A unit to run: the ``UNIT`` ``word`` and ``pc``, the address of its first ``OP`` word,
    taken in the cycle ``valid`` is high; the controller raises ``valid`` only while ``free``."""

    def __init__(self, p: CoreParams):
        check_core_params(p)
        super().__init__({"valid": Out(1), "word": Out(instr_layout(Opcode.UNIT)), "pc": Out(PC_W), "free": In(1)})


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


def copy_fields(dst: data.View, src: data.View, names: tuple[str, ...] | None = None) -> list:
    """``dst.f.eq(src.f)`` for the fields ``names`` (default: every field of ``dst``): two
    layouts with the same field names but their own widths (an instruction word and the
    command or cfg it becomes)."""
    if names is None:
        names = tuple(name for name, _ in dst.shape())
    return [dst[name].eq(src[name]) for name in names]


class FetchStartSignature(wiring.Signature):
    """Start a fetch in the cycle ``valid`` is high: from ``addr``, exactly ``count`` words
    (``counted``) or up to the word with ``last`` set."""

    def __init__(self):
        super().__init__({"valid": Out(1), "addr": Out(FETCH_ADDR_W), "counted": Out(1),
                          "count": Out(field_width(Opcode.OP, "k"))})


class FetchEngine(wiring.Component):
    """Streams buffer words to a PE port: from ``start`` until ``last`` or exactly ``count`` words.

    The first read is issued in the ``start`` cycle; after that one read per word taken, so a
    word is on offer in every cycle the port can take one. An address at or past BUF_DEPTH is
    not read: ``error`` is high in that cycle and the fetch stops."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        super().__init__({
            "start": In(FetchStartSignature()),
            "read": In(buf_read_signature(p)),
            "port": Out(stream.Signature(entry_layout(hw_params(p)))),
            "error": Out(1),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        m = Module()
        start, rd, port = self.start, self.read, self.port
        active = Signal()
        have = Signal()
        addr = Signal(FETCH_ADDR_W)
        remaining = Signal(FETCH_COUNT_W)
        cmode = Signal()
        last = rd.data.last
        consume = Signal()
        cont = Signal()
        issue = Signal()
        iaddr = Signal(FETCH_ADDR_W)
        in_range = Signal()
        m.d.comb += [
            port.valid.eq(have),
            port.payload.eq(rd.data),
            consume.eq(have & port.ready),
            cont.eq(active & (~have | consume) & Mux(cmode, remaining != 0, ~(have & last))),
            issue.eq(start.valid | cont),
            iaddr.eq(Mux(start.valid, start.addr, addr)),
            in_range.eq(iaddr < p.buf_depth),
            rd.addr.eq(iaddr),
            rd.en.eq(issue & in_range),
            self.error.eq(issue & ~in_range),
        ]
        with m.If(start.valid):
            m.d.sync += [active.eq(1), cmode.eq(start.counted), remaining.eq(start.count - 1)]
        with m.Elif(issue):
            m.d.sync += remaining.eq(remaining - 1)
        with m.If(issue & in_range):
            m.d.sync += [have.eq(1), addr.eq(iaddr + 1)]
        with m.Elif(consume | (issue & ~in_range)):
            m.d.sync += have.eq(0)
        with m.If(issue & ~in_range):
            m.d.sync += active.eq(0)
        with m.Elif(~start.valid & consume & Mux(cmode, remaining == 0, last)):
            m.d.sync += active.eq(0)  # row delivered: no read beyond it
        return m


class MaskStartSignature(wiring.Signature):
    """Read the mask word at ``addr`` in the cycle ``valid`` is high."""

    def __init__(self):
        super().__init__({"valid": Out(1), "addr": Out(field_width(Opcode.OP, "mask_addr"))})


class MaskFetch(wiring.Component):
    """The mask engine of a PE: one mask word per MSRC op, read in the op's cfg cycle and
    offered on Port-3 until taken."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        super().__init__({
            "start": In(MaskStartSignature()),
            "read": In(mask_read_signature(p)),
            "port": Out(stream.Signature(mask_layout(hw_params(p)))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        have = Signal()
        m.d.comb += [self.read.addr.eq(self.start.addr), self.read.en.eq(self.start.valid),
                     self.port.valid.eq(have), self.port.payload.eq(self.read.data)]
        with m.If(self.start.valid):
            m.d.sync += have.eq(1)
        with m.Elif(self.port.ready):
            m.d.sync += have.eq(0)
        return m


def op_is_valid(m: Module, op, p: CoreParams):
    """Section 11.3 checks of an OP word: (opcode ok, cfg ok, addresses ok) as signals."""
    is_op = Signal()
    cfg_ok = Signal()
    addr_ok = Signal()
    m.d.comb += [
        is_op.eq(op.opcode == Opcode.OP),
        cfg_ok.eq(op.mode.matches(*Mode) & (op.k >= 1) & (op.k <= p.k_max) & (op.pad < op.k) &
                  (op.in_len >= 1) & (op.in_len <= p.w_max) & (op.out_len >= 1) & (op.out_len <= p.w_max)),
        addr_ok.eq((op.addr1 < p.buf_depth) & (op.addr2 < p.buf_depth) &
                   ((op.mode != Mode.MSRC) | (op.mask_addr < p.mask_depth))),
    ]
    return is_op, cfg_ok, addr_ok


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
            "imem": In(imem_read_signature(p)).array(IMEM_PORTS),
            "buf_read": In(buf_read_signature(p)).array(N_BUF_PORTS),
            "mask_read": In(mask_read_signature(p)).array(N_PE),
            "buf_write": In(buf_write_signature(p)),
            "dir_write": In(dir_write_signature(p)),
            "rows": Out(RowCountSignature()),
            "db": Out(BiasGradSignature(p)),
            "busy": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorShape),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        hp = hw_params(p)
        m = Module()
        pes = []
        for j in range(N_PE):
            m.submodules[f"pe{j}"] = pe = PE(hp)
            pes.append(pe)
        m.submodules.ppu = ppu = PPU(self.ppu_cfg)
        m.d.comb += [ppu.status_sel.eq(self.ppu_status.sel), self.ppu_status.status.eq(ppu.status)]
        unit = self.unit

        # ---- unit registers
        u = Signal(instr_layout(Opcode.UNIT))
        pc = Signal(PC_W)
        remaining = Signal(N_OPS_W)
        entries_w = dict((n, w) for n, _, w in DIR_FIELDS)
        out_idx = Signal(entries_w["entries"])
        nnz = Signal(entries_w["nnz"])
        row_sum = Signal(signed(p.dw + p.off_w))   # values written so far of the current row
        error = Signal()
        code = Signal(ErrorShape)
        busy = Signal()   # a unit is in flight (the sequencer is not IDLE)
        m.d.comb += [self.error.eq(error), self.error_code.eq(code), self.busy.eq(busy)]

        # ---- op dispatch: the i-th free PE (in index order) takes the op at pc + i
        ops = [Signal(instr_layout(Opcode.OP), name=f"op{i}") for i in range(IMEM_PORTS)]
        for i in range(IMEM_PORTS):
            m.d.comb += ops[i].eq(self.imem[i].data)
        n_avail = Signal(range(N_PE + 1))
        m.d.comb += n_avail.eq(Mux(remaining > N_PE, N_PE, remaining))
        rank = []  # rank[j]: free PEs below j
        take = []
        acc = Const(0, range(N_PE + 1))
        for j, pe in enumerate(pes):
            r = Signal(range(N_PE + 1), name=f"rank{j}")
            m.d.comb += r.eq(acc)
            rank.append(r)
            t = Signal(name=f"take{j}")
            m.d.comb += t.eq(pe.cfg.ready & (r < n_avail) & ~error & busy)
            take.append(t)
            acc = acc + pe.cfg.ready
        n_taken = Signal(range(N_PE + 1))
        m.d.comb += n_taken.eq(sum(take))
        bad_op = Signal()
        bad_code = Signal(ErrorShape)
        checks = [op_is_valid(m, ops[i], p) for i in range(IMEM_PORTS)]
        op_array = Array([o.as_value() for o in ops])
        fetch_errors = []
        for j, pe in enumerate(pes):
            op = Signal(instr_layout(Opcode.OP), name=f"pe{j}_op")
            m.d.comb += op.eq(op_array[rank[j]])
            is_op, cfg_ok, addr_ok = (Array([c[k] for c in checks])[rank[j]] for k in range(3))
            ok = is_op & cfg_ok & addr_ok
            with m.If(take[j] & ~ok):
                m.d.comb += bad_op.eq(1)
                with m.If(~is_op):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OPCODE)
                with m.Elif(~cfg_ok):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OP)
                with m.Else():
                    m.d.comb += bad_code.eq(ErrorCode.ADDRESS)
            start = Signal(name=f"pe{j}_start")
            m.d.comb += [start.eq(take[j] & ok & ~bad_op), pe.cfg.valid.eq(start)]
            m.d.comb += copy_fields(pe.cfg.payload, op)
            # operand engines: Port-1 up to the entry with `last`, Port-2 K weights (SRC, MSRC)
            # or the dO row up to `last` (OSRC), Port-3 the mask word (MSRC)
            m.submodules[f"pe{j}_p1"] = f1 = FetchEngine(p)
            m.submodules[f"pe{j}_p2"] = f2 = FetchEngine(p)
            m.submodules[f"pe{j}_mask"] = fm = MaskFetch(p)
            m.d.comb += [
                f1.start.valid.eq(start), f1.start.addr.eq(op.addr1), f1.start.counted.eq(0),
                f1.start.count.eq(op.k),
                f2.start.valid.eq(start), f2.start.addr.eq(op.addr2), f2.start.counted.eq(op.mode != Mode.OSRC),
                f2.start.count.eq(op.k),
                fm.start.valid.eq(start & (op.mode == Mode.MSRC)), fm.start.addr.eq(op.mask_addr),
            ]
            connect(m, flipped(self.buf_read[2 * j]), f1.read)
            connect(m, flipped(self.buf_read[2 * j + 1]), f2.read)
            connect(m, flipped(self.mask_read[j]), fm.read)
            connect(m, f1.port, pe.port1)
            connect(m, f2.port, pe.port2)
            connect(m, fm.port, pe.port3)
            fetch_errors += [f1.error, f2.error]

        # ---- instruction reads: address for the next cycle
        pc_next = Signal(PC_W)
        m.d.comb += pc_next.eq(Mux(unit.valid, unit.pc + 1, pc + n_taken))
        for i in range(IMEM_PORTS):
            m.d.comb += self.imem[i].addr.eq(pc_next + i)
        m.d.sync += pc.eq(pc_next)
        remaining_after = Signal(N_OPS_W)
        m.d.comb += remaining_after.eq(remaining - n_taken)
        m.d.sync += remaining.eq(remaining_after)

        # ---- PE beats to the PPU; `last` only on a PE's final op of the unit
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
        cmd = ppu.cmd.payload
        # ACCUM waits for the PEs that run an op of the unit: the lowest min(n_ops, N_PE)
        n_pe_used = (1 << N_PE) - 1
        for k in reversed(range(N_PE)):
            n_pe_used = Mux(u.n_ops == k, (1 << k) - 1, n_pe_used)
        out = ppu.out
        writing = Signal()
        sequencer_idle = Signal()
        wr_last = Signal()
        wr, dw, rows = self.buf_write, self.dir_write, self.rows
        m.d.comb += [
            wr.en.eq(writing & out.valid),
            wr.addr.eq(u.out_addr + out_idx),
            wr.data.eq(out.payload),
            wr_last.eq(writing & out.valid & out.payload.last),
            rows.nnz_inc.eq(wr.en & (out.payload.offset != p.off_end)),
            dw.en.eq(wr_last),
            dw.addr.eq(u.dir),
            dw.data.start.eq(u.out_addr),
            dw.data.entries.eq(out_idx + 1),
            dw.data.nnz.eq(nnz + rows.nnz_inc),
            dw.data.written.eq(1),
            rows.row_done.eq(wr_last),
            rows.row_len.eq(u.length),
            self.db.en.eq(wr_last & u.db_en),
            self.db.idx.eq(u.db),
            self.db.value.eq(row_sum + out.payload.value),
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
                with m.If(out.valid):
                    m.d.sync += [out_idx.eq(out_idx + 1), nnz.eq(nnz + rows.nnz_inc),
                                 row_sum.eq(row_sum + out.payload.value)]
                    with m.If(out.payload.last):
                        m.next = "IDLE"
                accept_unit()
        m.d.comb += [sequencer_idle.eq(fsm.ongoing("IDLE")), busy.eq(~fsm.ongoing("IDLE")),
                     writing.eq(fsm.ongoing("WRITE"))]
        with m.If(unit.valid):
            m.d.sync += [u.eq(unit.word), remaining.eq(unit.word.n_ops)]

        # ---- errors: the first one wins
        ferr = Signal()
        m.d.comb += ferr.eq(Cat(*fetch_errors).any())
        with m.If(~error & (bad_op | ferr)):
            m.d.sync += [error.eq(1), code.eq(Mux(bad_op, bad_code, ErrorCode.ADDRESS))]
        return m


BLOCK = BlockSpec(
    name="group",
    help="PE group: N_PE (3) PEs, fetch engines, PPU and unit sequencer (docs/architecture.md s.10, s.11)",
    params={
        **DATAPATH_PARAMS,
        "BUF_DEPTH": ParamSpec(16384, "buffer words the fetch engines may address (16 .. 2**20)"),
        "MASK_DEPTH": ParamSpec(1024, "mask words (1 .. 65536)"),
        "N_SLOTS": ParamSpec(4, "PPU threshold slots, one per layer (1 .. 64)"),
        "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
    },
    params_class=CoreParams,
    make=Group,
)
