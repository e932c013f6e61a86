"""Op dispatch of a PE group (architecture s.10, s.11): the part of the group between the
unit sequencer and the PEs.

The dispatcher takes a unit's first ``OP`` address and op count (``unit``), reads the unit's
``OP`` words from the instruction memory (N_PE read ports, ``imem``, so up to N_PE ops start in
one cycle), checks each op (section 11.3), gives each op to its first free PE (ties: lowest
index; ``pe_cfg``) and streams the operands from the buffer to the PE ports (``buf_read``: 2
read ports per PE, ``FetchEngine``; ``mask_read``: 1 per PE, ``MaskFetch``; an engine starts
reading in the cycle its PE accepts the cfg, so no operand ever stalls). It tells the unit
sequencer which PEs accepted an op in this cycle (``issued``), how many ops of the unit are
left after this cycle (``remaining``; ``all_issued`` when none) and reports the first bad op
or operand address (``error``, ``error_code``).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from ..arch.isa import ADDR_W, INSTR_W, CoreParams, ErrorCode, Opcode
from ..arch.ppu import N_PE
from .enums import ErrorShape, Mode, field_width
from .layouts import entry_layout, instr_layout, mask_layout, pe_cfg_layout
from .ppu import hw_params

__all__ = ["FETCH_ADDR_W", "IMEM_PORTS", "N_BUF_PORTS", "N_OPS_W", "PC_W", "FetchEngine", "MaskFetch",
           "OpDispatch", "check_core_params", "copy_fields", "op_is_valid"]

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


def check_core_params(params: object, name: str = "params") -> CoreParams:
    """``params`` itself when it is a CoreParams (validated on creation), else a TypeError."""
    if not isinstance(params, CoreParams):
        raise TypeError(f"{name} = {params!r} is not a CoreParams; allowed: a CoreParams instance")
    return params


# ---- memory read port signatures (amaranth.lib.memory), seen from the memory; a dispatcher
# port is the flipped one (it drives the address and enable).

def buf_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.buf_depth), shape=entry_layout(hw_params(p)))


def mask_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.mask_depth), shape=mask_layout(hw_params(p)))


def imem_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.imem_depth), shape=INSTR_W)


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


class DispatchUnitSignature(wiring.Signature):
    """A unit's ops to dispatch, seen from the sequencer: in the cycle ``valid`` is high, the
    unit's first ``OP`` word is at ``pc`` and it has ``n_ops`` ops; ``enable`` low (an error,
    no unit in flight) stops every issue."""

    def __init__(self):
        super().__init__({"valid": Out(1), "pc": Out(PC_W), "n_ops": Out(N_OPS_W), "enable": Out(1)})


class OpDispatch(wiring.Component):
    """OP reading, op checks, PE choice and the per-PE operand fetch engines of a group.

    ``pe_cfg``, ``port1``, ``port2``, ``port3`` (one per PE) join the PEs' ports of the same
    names; ``issued`` bit j: PE j accepted an op of the current unit in this cycle;
    ``remaining``: ops of the unit not yet issued after this cycle (``all_issued``: none)."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        hp = hw_params(p)
        super().__init__({
            "unit": In(DispatchUnitSignature()),
            "imem": In(imem_read_signature(p)).array(IMEM_PORTS),
            "buf_read": In(buf_read_signature(p)).array(N_BUF_PORTS),
            "mask_read": In(mask_read_signature(p)).array(N_PE),
            "pe_cfg": Out(stream.Signature(pe_cfg_layout(hp))).array(N_PE),
            "port1": Out(stream.Signature(entry_layout(hp))).array(N_PE),
            "port2": Out(stream.Signature(entry_layout(hp))).array(N_PE),
            "port3": Out(stream.Signature(mask_layout(hp))).array(N_PE),
            "issued": Out(N_PE),
            "remaining": Out(N_OPS_W),
            "all_issued": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorShape),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        m = Module()
        unit = self.unit
        remaining = Signal(N_OPS_W)
        pc = Signal(PC_W)

        # ---- the i-th free PE (in index order) takes the op at pc + i
        ops = [Signal(instr_layout(Opcode.OP), name=f"op{i}") for i in range(IMEM_PORTS)]
        for i in range(IMEM_PORTS):
            m.d.comb += ops[i].eq(self.imem[i].data)
        n_avail = Signal(range(N_PE + 1))
        m.d.comb += n_avail.eq(Mux(remaining > N_PE, N_PE, remaining))
        rank = []  # rank[j]: free PEs below j
        take = []
        acc = Const(0, range(N_PE + 1))
        for j in range(N_PE):
            cfg = self.pe_cfg[j]
            r = Signal(range(N_PE + 1), name=f"rank{j}")
            m.d.comb += r.eq(acc)
            rank.append(r)
            t = Signal(name=f"take{j}")
            m.d.comb += t.eq(cfg.ready & (r < n_avail) & unit.enable)
            take.append(t)
            acc = acc + cfg.ready
        n_taken = Signal(range(N_PE + 1))
        m.d.comb += n_taken.eq(sum(take))
        bad_op = Signal()
        bad_code = Signal(ErrorShape)
        checks = [op_is_valid(m, ops[i], p) for i in range(IMEM_PORTS)]
        op_array = Array([o.as_value() for o in ops])
        fetch_errors = []
        for j in range(N_PE):
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
            m.d.comb += [start.eq(take[j] & ok & ~bad_op), self.pe_cfg[j].valid.eq(start), self.issued[j].eq(start)]
            m.d.comb += copy_fields(self.pe_cfg[j].payload, op)
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
            connect(m, f1.port, flipped(self.port1[j]))
            connect(m, f2.port, flipped(self.port2[j]))
            connect(m, fm.port, flipped(self.port3[j]))
            fetch_errors += [f1.error, f2.error]

        # ---- instruction reads: address for the next cycle
        pc_next = Signal(PC_W)
        m.d.comb += pc_next.eq(Mux(unit.valid, unit.pc, pc + n_taken))
        for i in range(IMEM_PORTS):
            m.d.comb += self.imem[i].addr.eq(pc_next + i)
        m.d.sync += pc.eq(pc_next)
        m.d.comb += [self.remaining.eq(remaining - n_taken), self.all_issued.eq(self.remaining == 0)]
        with m.If(unit.valid):
            m.d.sync += remaining.eq(unit.n_ops)
        with m.Else():
            m.d.sync += remaining.eq(self.remaining)

        # ---- errors: a bad op, else a fetch past the buffer
        ferr = Signal()
        m.d.comb += [ferr.eq(Cat(*fetch_errors).any()), self.error.eq(bad_op | ferr),
                     self.error_code.eq(Mux(bad_op, bad_code, ErrorCode.ADDRESS))]
        return m
