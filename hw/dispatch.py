"""Op dispatch of a PE group (architecture s.10, s.11, s.12): the part of the group between the
unit sequencer and the PEs.

The dispatcher takes a unit's first ``OP`` address and op count (``unit``), reads the unit's
``OP`` words from the instruction memory (``imem``), checks each op (section 11.3), gives each
op to the PEs that take a cfg in this cycle, in order (``pe_cfg``), and streams the operands
from the buffer to the PE ports (``buf_read``: Port-1 and Port-2 of every PE, ``FetchEngine``;
``mask_read``: 1 per PE, ``MaskFetch``), so no operand ever stalls. It tells the unit sequencer
which PEs accepted an op in this cycle (``issued``) and when every op of the unit is issued or
skipped (``all_issued``; ``remaining`` ops without SKIP_EMPTY), and reports the first bad op or
operand address (``error``, ``error_code``).

The second-generation switches of ``CoreParams`` (section 12): PREFETCH (the PEs hold up to
three ops; each engine's starts wait in a ``FetchQueue``; a cfg is offered to a PE that was
ready in the previous cycle, 12.2), LOOKAHEAD = 2 (Port-1 an entry pair from two read ports,
``PairFetch``), OSRC_WINDOW = 2 (Port-1 and Port-2 entry pairs, ``PairFetch``; 12.6), SKIP_EMPTY with OP_SCAN (the op reader of 12.4: OP_SCAN OP words a cycle, their
directory entries through ``dir_read``, empty-row ops dropped, an issue queue of ISSUE_QUEUE).
"""
from __future__ import annotations

import functools
import operator

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from ..arch.isa import ADDR_W, DIR_FIELDS, DIR_W, INSTR_W, CoreParams, ErrorCode, Opcode
from ..arch.microarch import ISSUE_QUEUE as ISSUE_QUEUE_DEPTH
from ..arch.ppu import N_PE
from .enums import ErrorShape, Mode, field_width
from .layouts import entry_layout, entry_pair_layout, instr_layout, mask_layout, pe_cfg_layout
from .ppu import hw_params

__all__ = ["FETCH_ADDR_W", "IMEM_PORTS", "N_BUF_PORTS", "N_OPS_W", "PC_W", "FetchEngine", "MaskFetch", "PairFetch",
           "FetchQueue", "OpDispatch", "buf_ports", "pair_ports", "imem_ports", "dir_ports", "dir_layout", "check_core_params",
           "copy_fields", "op_is_valid"]

N_BUF_PORTS = 2 * N_PE   # first generation (LOOKAHEAD = 1): Port-1 and Port-2 of every PE
IMEM_PORTS = N_PE         # first generation (SKIP_EMPTY = 0): one OP word per PE per cycle
# The op reader's issue queue (SKIP_EMPTY = 1, section 12.4): ops examined and not yet issued.
ISSUE_QUEUE = ISSUE_QUEUE_DEPTH
# Pending operand streams per PE port (PREFETCH = 1): the ops in S and Q of the PE.
STREAM_QUEUE = 3
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

def pair_ports(p: CoreParams) -> tuple[bool, bool]:
    """Whether Port-1 and Port-2 of a PE carry entry pairs: Port-1 with look-ahead (B) or the
    OSRC window (E), Port-2 with the OSRC window (sections 12.5, 12.6)."""
    return p.lookahead == 2 or p.osrc_window == 2, p.osrc_window == 2


def buf_ports(p: CoreParams) -> int:
    """Buffer read ports of a group: Port-1 and Port-2 of every PE, and a second port for each of
    them that carries entry pairs (two consecutive entries per cycle, sections 12.5, 12.6). PE j's
    ports: Port-1 (first entry), Port-2 (first entry), then Port-1's and Port-2's second."""
    return N_PE * (2 + sum(pair_ports(p)))


def imem_ports(p: CoreParams) -> int:
    """Instruction read ports of a group: OP_SCAN with SKIP_EMPTY (section 12.4), else N_PE."""
    return p.op_scan if p.skip_empty else N_PE


def dir_ports(p: CoreParams) -> int:
    """Directory read ports of a group: dir1 and dir2 of every OP word examined in a cycle (D)."""
    return 2 * p.op_scan if p.skip_empty else 0


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


def dir_read_signature(p: CoreParams) -> ReadPort.Signature:
    return ReadPort.Signature(addr_width=ceil_log2(p.dir_depth), shape=dir_layout())


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
            "free": Out(1),   # a start in this cycle is taken (idle, or the stream's final word is taken)
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
            self.free.eq(~active | (consume & Mux(cmode, remaining == 0, last))),
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
            "free": Out(1),   # a start in this cycle is taken (no mask held, or the held one is taken)
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        have = Signal()
        m.d.comb += [self.read.addr.eq(self.start.addr), self.read.en.eq(self.start.valid),
                     self.port.valid.eq(have), self.port.payload.eq(self.read.data),
                     self.free.eq(~have | self.port.ready)]
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



class PairFetch(wiring.Component):
    """Port-1 of a PE with look-ahead (LOOKAHEAD = 2, section 12.5): the first two pending
    entries of a row, read through two buffer read ports (``read0`` at the first entry's
    address, ``read1`` at the next one), from ``start`` until the entry with ``last``.

    ``take2`` (the PE's ``port1_take2``) says that a handshake consumed both entries; the next
    pair is read in the same cycle, so a pair is on offer in every cycle the port can take one.
    ``second`` is offered only when the first entry is not the row's ``last``. An address at or
    past BUF_DEPTH for the first entry is not read: ``error`` is high and the fetch stops.

    ``counted`` (Port-2 with OSRC_WINDOW = 2, section 12.6): a start may also ask for exactly
    ``count`` words (the K weights of SRC/MSRC, whose ``last`` bits are not used); such a stream is
    offered one word at a time (``has_second`` low), as FetchEngine does."""

    def __init__(self, params: CoreParams, counted: bool = False):
        self.params = p = check_core_params(params)
        self.counted = counted
        super().__init__({
            "start": In(FetchStartSignature()),
            "read0": In(buf_read_signature(p)),
            "read1": In(buf_read_signature(p)),
            "port": Out(stream.Signature(entry_pair_layout(hw_params(p)))),
            "take2": In(1),
            "error": Out(1),
            "free": Out(1),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        m = Module()
        start, port = self.start, self.port
        d0, d1 = self.read0.data, self.read1.data
        active, have, second_ok = Signal(), Signal(), Signal()
        ptr = Signal(FETCH_ADDR_W)          # address of the entry on offer as `first`
        consume, finishing, cont, issue = Signal(), Signal(), Signal(), Signal()
        iaddr = Signal(FETCH_ADDR_W)
        in_range = Signal()
        has_second = ~d0.last & second_ok
        finish_now = Mux(self.take2, d1.last, d0.last)
        more = ~finishing
        if self.counted:
            cmode = Signal()                      # this stream is `count` words, one per handshake
            remaining = Signal(FETCH_COUNT_W)     # words not yet read
            has_second = has_second & ~cmode
            finish_now = Mux(cmode, remaining == 0, finish_now)
            more = Mux(cmode, remaining != 0, ~finishing)
            with m.If(start.valid):
                m.d.sync += [cmode.eq(start.counted), remaining.eq(start.count - 1)]
            with m.Elif(issue):
                m.d.sync += remaining.eq(remaining - 1)
        m.d.comb += [
            port.valid.eq(have),
            port.payload.first.eq(d0),
            port.payload.second.eq(d1),
            port.payload.has_second.eq(has_second),
            consume.eq(have & port.ready),
            finishing.eq(consume & finish_now),
            cont.eq(active & (~have | consume) & more),
            issue.eq(start.valid | cont),
            iaddr.eq(Mux(start.valid, start.addr, Mux(have, ptr + 1 + self.take2, ptr))),
            in_range.eq(iaddr < p.buf_depth),
            self.read0.addr.eq(iaddr),
            self.read0.en.eq(issue & in_range),
            self.read1.addr.eq(iaddr + 1),
            self.read1.en.eq(issue & (iaddr + 1 < p.buf_depth)),
            self.error.eq(issue & ~in_range),
            self.free.eq(~active | finishing),
        ]
        with m.If(start.valid):
            m.d.sync += active.eq(1)
        with m.If(issue & in_range):
            m.d.sync += [have.eq(1), ptr.eq(iaddr), second_ok.eq(iaddr + 1 < p.buf_depth)]
        with m.Elif(consume | (issue & ~in_range)):
            m.d.sync += have.eq(0)
        with m.If(issue & ~in_range):
            m.d.sync += active.eq(0)
        with m.Elif(~start.valid & finishing):
            m.d.sync += active.eq(0)  # row delivered: no read beyond it
        return m


class FetchQueue(wiring.Component):
    """Start descriptors of one PE port in op order (PREFETCH = 1): a descriptor pushed while
    the port's engine is still streaming an earlier op waits here and starts in the cycle the
    engine takes the previous stream's final word (``free``), so back-to-back streams have no
    gap; with nothing waiting and the engine free, a push starts the engine in its own cycle."""

    def __init__(self, signature: wiring.Signature, depth: int = STREAM_QUEUE):
        self._members = dict(signature.members)
        self.depth = depth
        super().__init__({"push": In(signature), "start": Out(signature), "free": In(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        names = [n for n in self._members if n != "valid"]
        width = sum(len(getattr(self.push, n)) for n in names)
        m.submodules.fifo = fifo = SyncFIFO(width=width, depth=self.depth)
        head = Signal(width)
        m.d.comb += head.eq(fifo.r_data)
        pushed = Cat(*[getattr(self.push, n) for n in names])
        bypass = Signal()
        m.d.comb += [
            bypass.eq(~fifo.r_rdy & self.free),
            self.start.valid.eq((fifo.r_rdy | self.push.valid) & self.free),
            Cat(*[getattr(self.start, n) for n in names]).eq(Mux(fifo.r_rdy, head, pushed)),
            fifo.r_en.eq(fifo.r_rdy & self.free),
            fifo.w_en.eq(self.push.valid & ~bypass),
            fifo.w_data.eq(pushed),
        ]
        return m


class DispatchUnitSignature(wiring.Signature):
    """A unit's ops to dispatch, seen from the sequencer: in the cycle ``valid`` is high, the
    unit's first ``OP`` word is at ``pc`` and it has ``n_ops`` ops; ``enable`` low (an error,
    no unit in flight) stops every issue."""

    def __init__(self):
        super().__init__({"valid": Out(1), "pc": Out(PC_W), "n_ops": Out(N_OPS_W), "enable": Out(1)})


def _prefix_counts(m: Module, bits, name: str):
    """Exclusive prefix counts of the one-bit values ``bits``: signal ``i`` (``name`` + i) holds how
    many of ``bits[:i]`` are set (a PE's rank among the ready PEs, a kept word's position among the
    kept ones); also returns the total."""
    n = len(bits)
    counts = []
    acc = Const(0, range(n + 1))
    for i, b in enumerate(bits):
        c = Signal(range(n + 1), name=f"{name}{i}")
        m.d.comb += c.eq(acc)
        counts.append(c)
        acc = acc + b
    return counts, acc


class OpDispatch(wiring.Component):
    """OP reading, op checks, PE choice and the per-PE operand fetch engines of a group.

    ``pe_cfg``, ``port1``, ``port2``, ``port3`` (one per PE) join the PEs' ports of the same
    names (``port1_take2`` too with LOOKAHEAD = 2); ``issued`` bit j: PE j accepted an op of the
    current unit in this cycle; ``all_issued``: every op of the unit has been issued or skipped
    (stays high until the next unit); ``remaining`` (SKIP_EMPTY = 0): ops not yet issued after
    this cycle.

    Ops go in order to the PEs that accept a cfg in this cycle, the i-th such PE (by index)
    taking the i-th op (section 12.2). SKIP_EMPTY = 1 (section 12.4): the op reader reads
    OP_SCAN OP words per cycle (``imem``), then their directory entries (``dir_read``: dir1 and
    dir2 of each), and in the next cycle examines them: an op whose sparse operand row is empty
    (``nnz = 0``) is dropped, the others join an issue queue of ISSUE_QUEUE ops, which the PEs
    take from in the same cycle; the reader waits while the queue has no room for a block."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        hp = hw_params(p)
        members = {
            "unit": In(DispatchUnitSignature()),
            "imem": In(imem_read_signature(p)).array(imem_ports(p)),
            "buf_read": In(buf_read_signature(p)).array(buf_ports(p)),
            "mask_read": In(mask_read_signature(p)).array(N_PE),
            "pe_cfg": Out(stream.Signature(pe_cfg_layout(hp))).array(N_PE),
            "port1": Out(stream.Signature(entry_pair_layout(hp) if pair_ports(p)[0] else entry_layout(hp))
                         ).array(N_PE),
            "port2": Out(stream.Signature(entry_pair_layout(hp) if pair_ports(p)[1] else entry_layout(hp))
                         ).array(N_PE),
            "port3": Out(stream.Signature(mask_layout(hp))).array(N_PE),
            "issued": Out(N_PE),
            "remaining": Out(N_OPS_W),
            "all_issued": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorShape),
        }
        if pair_ports(p)[0]:
            members["port1_take2"] = In(1).array(N_PE)
        if pair_ports(p)[1]:
            members["port2_take2"] = In(1).array(N_PE)
        if p.skip_empty:
            members["dir_read"] = In(dir_read_signature(p)).array(dir_ports(p))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        p = self.params
        m = Module()
        # ---- PEs that accept a cfg in this cycle: rank[j] of them below PE j. With PREFETCH the
        # PE's cfg.ready depends on cfg.valid (the queue), so the dispatcher offers a cfg only to
        # a PE that was ready in the previous cycle and got no cfg then: its queue is still free
        # (section 12.2: a PE takes its next cfg from max(a + 2, e) of its last op).
        ready = []
        for j in range(N_PE):
            if p.prefetch:
                r = Signal(name=f"ready{j}")
                m.d.sync += r.eq(self.pe_cfg[j].ready & ~self.issued[j])
            else:
                r = self.pe_cfg[j].ready
            ready.append(r)
        rank, total_ready = _prefix_counts(m, ready, "rank")
        n_ready = Signal(range(N_PE + 1))
        m.d.comb += n_ready.eq(total_ready)

        reader = self._reader_skip if p.skip_empty else self._reader_plain
        cands, n_cand, bad_op, bad_code = reader(m, n_ready)

        # ---- the i-th PE that accepts a cfg in this cycle (by index) takes candidate i
        cand_array = Array([c.as_value() for c in cands])
        fetch_errors = []
        for j in range(N_PE):
            op = Signal(instr_layout(Opcode.OP), name=f"pe{j}_op")
            take = Signal(name=f"take{j}")
            start = Signal(name=f"pe{j}_start")
            m.d.comb += [
                op.eq(cand_array[rank[j]]),
                take.eq(ready[j] & (rank[j] < n_cand) & self.unit.enable),
                start.eq(take & ~bad_op),
                self.pe_cfg[j].valid.eq(start),
                self.issued[j].eq(start),
            ]
            m.d.comb += copy_fields(self.pe_cfg[j].payload, op)
            fetch_errors += self._engines(m, j, start, op)

        # ---- errors: a bad op, else a fetch past the buffer
        ferr = Signal()
        m.d.comb += [ferr.eq(Cat(*fetch_errors).any()), self.error.eq(bad_op | ferr),
                     self.error_code.eq(Mux(bad_op, bad_code, ErrorCode.ADDRESS))]
        return m

    @staticmethod
    def _n_taken(m: Module, n_ready, n_cand, enable, name: str):
        n = Signal(range(N_PE + 1), name=name)
        m.d.comb += n.eq(Mux(enable, Mux(n_ready < n_cand, n_ready, n_cand), 0))
        return n

    def _reader_plain(self, m: Module, n_ready):
        """SKIP_EMPTY = 0: the next N_PE OP words of the unit are read every cycle (``imem``
        port i at pc + i); every op is issued."""
        p = self.params
        unit = self.unit
        remaining = Signal(N_OPS_W)
        pc = Signal(PC_W)
        ops = [Signal(instr_layout(Opcode.OP), name=f"op{i}") for i in range(IMEM_PORTS)]
        for i in range(IMEM_PORTS):
            m.d.comb += ops[i].eq(self.imem[i].data)
        n_avail = Signal(range(N_PE + 1))
        m.d.comb += n_avail.eq(Mux(remaining > N_PE, N_PE, remaining))
        n_taken = self._n_taken(m, n_ready, n_avail, self.unit.enable, "n_taken")
        # the checks of the ops taken in this cycle (candidate i goes to the i-th accepting PE)
        bad_op = Signal()
        bad_code = Signal(ErrorShape)
        for i in range(IMEM_PORTS):
            is_op, cfg_ok, addr_ok = op_is_valid(m, ops[i], p)
            with m.If((i < n_taken) & ~(is_op & cfg_ok & addr_ok)):
                m.d.comb += bad_op.eq(1)
                with m.If(~is_op):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OPCODE)
                with m.Elif(~cfg_ok):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OP)
                with m.Else():
                    m.d.comb += bad_code.eq(ErrorCode.ADDRESS)
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
        return ops, n_avail, bad_op, bad_code

    def _reader_skip(self, m: Module, n_ready):
        """SKIP_EMPTY = 1 (section 12.4): blocks of OP_SCAN OP words. Cycle c reads block b's
        words; cycle c + 1 reads their directory entries (``dir1``; ``dir2`` of OSRC); cycle
        c + 2 examines them: checks every word (section 11.3, and dir1/dir2 < DIR_DEPTH), drops
        the ops whose sparse operand row is empty and offers the others, after the issue queue's
        ops, to the PEs. The block moves on (and the next one is examined in the next cycle)
        when the queue has room for what the PEs do not take; otherwise it waits."""
        p = self.params
        S, D = p.op_scan, ISSUE_QUEUE
        unit = self.unit
        lay = instr_layout(Opcode.OP)
        left = Signal(N_OPS_W)            # OP words of the unit not yet read
        rd_pc = Signal(PC_W)              # address of the next block to read
        s1_valid = Signal()               # a block's words are on the imem ports
        s1_n = Signal(range(S + 1))       # its valid words
        s2_valid = Signal()               # a block's words are registered, its directory entries on the ports
        s2_n = Signal(range(S + 1))
        s2_ops = [Signal(lay, name=f"exam{w}") for w in range(S)]
        q_ops = [Signal(lay, name=f"queue{k}") for k in range(D)]
        q_n = Signal(range(D + 1))
        enable = unit.enable

        # ---- examine (stage 2): valid words, their checks and whether their row is empty
        bad_op = Signal()
        bad_code = Signal(ErrorShape)
        keep = []
        checks = []
        for w in range(S):
            op = s2_ops[w]
            is_op, cfg_ok, addr_ok = op_is_valid(m, op, p)
            osrc = op.mode == Mode.OSRC
            dir_ok = (op.dir1 < p.dir_depth) & (~osrc | (op.dir2 < p.dir_depth))
            valid = s2_valid & (w < s2_n)
            checks.append((valid, is_op, cfg_ok, addr_ok & dir_ok))
            empty = (self.dir_read[2 * w].data.nnz == 0) | (osrc & (self.dir_read[2 * w + 1].data.nnz == 0))
            k = Signal(name=f"keep{w}")
            m.d.comb += k.eq(valid & ~empty)
            keep.append(k)
        for valid, is_op, cfg_ok, addr_ok in reversed(checks):   # the first bad word in order wins
            with m.If(valid & ~(is_op & cfg_ok & addr_ok)):
                m.d.comb += bad_op.eq(1)
                with m.If(~is_op):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OPCODE)
                with m.Elif(~cfg_ok):
                    m.d.comb += bad_code.eq(ErrorCode.BAD_OP)
                with m.Else():
                    m.d.comb += bad_code.eq(ErrorCode.ADDRESS)
        # the kept words, compacted in order: kept[r] is the r-th kept word of the block
        m_kept = Signal(range(S + 1))
        m.d.comb += m_kept.eq(sum(keep))
        pos, _ = _prefix_counts(m, keep, "keep_pos")
        kept = []
        for r in range(S):
            c = Signal(lay, name=f"kept{r}")
            m.d.comb += c.eq(functools.reduce(operator.or_, [
                Mux(keep[w] & (pos[w] == r), s2_ops[w].as_value(), 0) for w in range(S)]))
            kept.append(c)
        # candidates: the queue, then the kept words of the block (when it moves on)
        total_b = Signal(range(D + S + 1))
        m.d.comb += total_b.eq(q_n + m_kept)
        n_take_b = self._n_taken(m, n_ready, total_b, enable, "n_take_block")
        accept = Signal()
        m.d.comb += accept.eq(s2_valid & ~bad_op & (total_b - n_take_b <= D))
        n_cand = Signal(range(D + S + 1))
        m.d.comb += n_cand.eq(Mux(accept, total_b, q_n))
        n_taken = self._n_taken(m, n_ready, n_cand, enable, "n_taken")
        kept_array = Array([k.as_value() for k in kept] + [Const(0, lay.size)] * (D + 1))
        cands = []
        for k in range(D + S):
            c = Signal(lay, name=f"cand{k}")
            rel = Signal(range(-D, D + S + 1), name=f"cand_rel{k}")
            m.d.comb += rel.eq(k - q_n)
            from_queue = q_ops[k].as_value() if k < D else Const(0, lay.size)
            m.d.comb += c.eq(Mux(rel < 0, from_queue, kept_array[rel.as_unsigned()[:ceil_log2(D + S + 1) + 1]]))
            cands.append(c)
        cand_array = Array([c.as_value() for c in cands] + [Const(0, lay.size)] * (N_PE + 1))
        for k in range(D):
            m.d.sync += q_ops[k].eq(cand_array[n_taken + k])
        m.d.sync += q_n.eq(n_cand - n_taken)

        # ---- read (stage 0) and directory read (stage 1)
        advance = Signal()
        m.d.comb += advance.eq(~s2_valid | accept)
        read = Signal()
        m.d.comb += read.eq(unit.valid | (advance & s1_valid & (left != 0)))
        for w in range(S):
            m.d.comb += [self.imem[w].addr.eq(Mux(unit.valid, unit.pc, rd_pc) + w), self.imem[w].en.eq(read)]
            word = self.imem[w].data
            op = lay(word[:lay.size])
            m.d.comb += [self.dir_read[2 * w].addr.eq(op.dir1), self.dir_read[2 * w + 1].addr.eq(op.dir2),
                         self.dir_read[2 * w].en.eq(advance), self.dir_read[2 * w + 1].en.eq(advance)]
        n_read = Signal(range(S + 1))
        n_from = Mux(unit.valid, unit.n_ops, left)
        m.d.comb += n_read.eq(Mux(n_from > S, S, n_from))
        with m.If(read):
            m.d.sync += [s1_valid.eq(n_read != 0), s1_n.eq(n_read), left.eq(n_from - n_read),
                         rd_pc.eq(Mux(unit.valid, unit.pc, rd_pc) + S)]
        with m.Elif(advance):
            m.d.sync += s1_valid.eq(0)
        with m.If(unit.valid):
            m.d.sync += [s2_valid.eq(0), q_n.eq(0)]
        with m.Elif(advance):
            m.d.sync += [s2_valid.eq(s1_valid), s2_n.eq(s1_n)]
            m.d.sync += [s2_ops[w].eq(self.imem[w].data[:lay.size]) for w in range(S)]
        m.d.comb += [
            self.all_issued.eq((left == 0) & ~s1_valid & (~s2_valid | accept) & (n_cand == n_taken)),
            self.remaining.eq(~self.all_issued),
        ]
        return cands[:N_PE], n_cand, bad_op, bad_code

    def _engines(self, m: Module, j: int, start, op) -> list:
        """PE j's operand engines, started by ``start`` (its cfg is accepted) with the op's
        addresses: Port-1 up to the entry with ``last`` (an entry pair with LOOKAHEAD = 2),
        Port-2 K weights (SRC, MSRC) or the dO row up to ``last`` (OSRC), Port-3 the mask word
        (MSRC). With PREFETCH = 1 a start waits in a FetchQueue until the port's previous stream
        has been taken. Returns the engines' error signals."""
        p = self.params
        pair1, pair2 = pair_ports(p)
        per_pe = 2 + pair1 + pair2
        if pair1:
            m.submodules[f"pe{j}_p1"] = f1 = PairFetch(p)
            connect(m, flipped(self.buf_read[per_pe * j]), f1.read0)
            connect(m, flipped(self.buf_read[per_pe * j + 2]), f1.read1)
            m.d.comb += f1.take2.eq(self.port1_take2[j])
        else:
            m.submodules[f"pe{j}_p1"] = f1 = FetchEngine(p)
            connect(m, flipped(self.buf_read[per_pe * j]), f1.read)
        if pair2:  # OSRC window: the dO row as entry pairs; the K weights one a handshake
            m.submodules[f"pe{j}_p2"] = f2 = PairFetch(p, counted=True)
            connect(m, flipped(self.buf_read[per_pe * j + 1]), f2.read0)
            connect(m, flipped(self.buf_read[per_pe * j + 3]), f2.read1)
            m.d.comb += f2.take2.eq(self.port2_take2[j])
        else:
            m.submodules[f"pe{j}_p2"] = f2 = FetchEngine(p)
            connect(m, flipped(self.buf_read[per_pe * j + 1]), f2.read)
        m.submodules[f"pe{j}_mask"] = fm = MaskFetch(p)
        connect(m, flipped(self.mask_read[j]), fm.read)
        connect(m, f1.port, flipped(self.port1[j]))
        connect(m, f2.port, flipped(self.port2[j]))
        connect(m, fm.port, flipped(self.port3[j]))
        starts = [(f1.start, dict(valid=start, addr=op.addr1, counted=0, count=op.k)),
                  (f2.start, dict(valid=start, addr=op.addr2, counted=op.mode != Mode.OSRC, count=op.k)),
                  (fm.start, dict(valid=start & (op.mode == Mode.MSRC), addr=op.mask_addr))]
        frees = (f1.free, f2.free, fm.free)
        for n, ((port, values), free) in enumerate(zip(starts, frees)):
            if p.prefetch:
                m.submodules[f"pe{j}_q{n + 1}"] = q = FetchQueue(port.signature.flip())
                m.d.comb += [getattr(q.push, k).eq(v) for k, v in values.items()]
                m.d.comb += q.free.eq(free)
                m.d.comb += [getattr(port, k).eq(getattr(q.start, k)) for k in values]
            else:
                m.d.comb += [getattr(port, k).eq(v) for k, v in values.items()]
        return [f1.error, f2.error]
