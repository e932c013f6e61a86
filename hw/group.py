"""A PE group: 3 PEs, their operand fetch engines and 1 PPU (architecture s.10, s.11).

The group takes one unit at a time (``unit_valid`` with the ``UNIT`` word and its address),
reads the unit's ``OP`` words from the instruction memory itself (3 read ports, so up to 3
ops start in one cycle), gives each op to its first free PE (ties: lowest index), streams
the operands from the buffer (2 read ports per PE, 1 mask read port per PE; a fetch engine
starts reading in the cycle its PE accepts the cfg, so no operand ever stalls), runs the
PPU's START / ACCUM / FINISH and writes the result row and its directory entry.

The PPU's ACCUM ends when every PE of its ``pe_mask`` has sent a ``last`` beat; a PE runs
several ops of a unit, so the group forwards a PE's ``last`` only on the final beat of the
PE's final op of the unit (known in the cycle of that beat: the PEs that free in this cycle
take the remaining ops, lowest index first).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.isa import ADDR_W, DIR_W, INSTR_W, CoreParams, ErrorCode, Opcode, layout
from ..arch.pe import HwParams
from ..arch.ppu import N_PE, Op
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .layouts import entry_layout
from .pe import PE, MODE_MSRC, MODE_OSRC
from .ppu import PPU, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout

N_BUF_PORTS = 2 * N_PE
IMEM_PORTS = N_PE
ERR_W = 4

# group states
G_IDLE, G_START, G_ACCUM, G_FINISH, G_WRITE = range(5)


def hw_params(p: CoreParams) -> HwParams:
    return HwParams(dw=p.dw, k_max=p.k_max, w_max=p.w_max, acc_w=p.acc_w)


def op_is_valid(m: Module, op, p: CoreParams):
    """Section 11.3 checks of an OP word: (opcode ok, cfg ok, addresses ok) as signals."""
    is_op = Signal()
    cfg_ok = Signal()
    addr_ok = Signal()
    m.d.comb += [
        is_op.eq(op.opcode == Opcode.OP),
        cfg_ok.eq((op.mode != 3) & (op.k >= 1) & (op.k <= p.k_max) & (op.pad < op.k) &
                  (op.in_len >= 1) & (op.in_len <= p.w_max) & (op.out_len >= 1) & (op.out_len <= p.w_max)),
        addr_ok.eq((op.addr1 < p.buf_depth) & (op.addr2 < p.buf_depth) &
                   ((op.mode != MODE_MSRC) | (op.mask_addr < p.mask_depth))),
    ]
    return is_op, cfg_ok, addr_ok


class _Fetch:
    """Streams buffer words to a port: from ``start`` until ``last`` or exactly ``count`` words."""

    def __init__(self, m: Module, name: str, p: CoreParams, raddr, ren, rdata, port, start, start_addr,
                 count_mode, count):
        self.error = Signal(name=f"{name}_err")
        active = Signal(name=f"{name}_active")
        have = Signal(name=f"{name}_have")
        addr = Signal(ADDR_W + 1, name=f"{name}_addr")
        remaining = Signal(6, name=f"{name}_rem")
        cmode = Signal(name=f"{name}_cmode")
        last = rdata[p.dw + p.off_w]
        consume = Signal(name=f"{name}_consume")
        cont = Signal(name=f"{name}_cont")
        issue = Signal(name=f"{name}_issue")
        iaddr = Signal(ADDR_W + 1, name=f"{name}_iaddr")
        in_range = Signal(name=f"{name}_inrange")
        m.d.comb += [
            port.valid.eq(have),
            port.payload.eq(rdata),
            consume.eq(have & port.ready),
            cont.eq(active & (~have | consume) & Mux(cmode, remaining != 0, ~(have & last))),
            issue.eq(start | cont),
            iaddr.eq(Mux(start, start_addr, addr)),
            in_range.eq(iaddr < p.buf_depth),
            raddr.eq(iaddr),
            ren.eq(issue & in_range),
            self.error.eq(issue & ~in_range),
        ]
        with m.If(start):
            m.d.sync += [active.eq(1), cmode.eq(count_mode), remaining.eq(count - 1)]
        with m.Elif(issue):
            m.d.sync += remaining.eq(remaining - 1)
        with m.If(issue & in_range):
            m.d.sync += [have.eq(1), addr.eq(iaddr + 1)]
        with m.Elif(consume | (issue & ~in_range)):
            m.d.sync += have.eq(0)
        with m.If(issue & ~in_range):
            m.d.sync += active.eq(0)
        with m.Elif(~start & consume & Mux(cmode, remaining == 0, last)):
            m.d.sync += active.eq(0)  # row delivered: no read beyond it


class Group(wiring.Component):
    """3 PEs + PPU + fetch engines + unit sequencer; memories are outside (in the core)."""

    def __init__(self, params: CoreParams):
        if not isinstance(params, CoreParams):
            raise ValueError(f"params = {params!r} is not a CoreParams; allowed: a CoreParams instance")
        self.params = p = params
        hp = hw_params(p)
        self.ppu_cfg = p.ppu_config()
        super().__init__({
            "unit_valid": In(1),
            "unit": In(layout(Opcode.UNIT)),
            "unit_pc": In(ADDR_W + 1),
            "free": Out(1),
            "idle": Out(1),
            "busy": Out(1),
            "ppu_cmd_valid": In(1),
            "ppu_cmd": In(ppu_cmd_layout(self.ppu_cfg)),
            "imem_addr": Out(data.ArrayLayout(ADDR_W + 1, IMEM_PORTS)),
            "imem_data": In(data.ArrayLayout(INSTR_W, IMEM_PORTS)),
            "buf_raddr": Out(data.ArrayLayout(ADDR_W + 1, N_BUF_PORTS)),
            "buf_ren": Out(N_BUF_PORTS),
            "buf_rdata": In(data.ArrayLayout(p.entry_w, N_BUF_PORTS)),
            "mask_raddr": Out(data.ArrayLayout(16, N_PE)),
            "mask_ren": Out(N_PE),
            "mask_rdata": In(data.ArrayLayout(p.w_max, N_PE)),
            "wr_en": Out(1),
            "wr_addr": Out(ADDR_W),
            "wr_data": Out(entry_layout(hp)),
            "dir_en": Out(1),
            "dir_addr": Out(16),
            "dir_data": Out(DIR_W),
            "nnz_inc": Out(1),
            "row_done": Out(1),
            "row_len": Out(13),
            "error": Out(1),
            "error_code": Out(ERR_W),
            "status_sel": In(ppu_status_sel_layout(self.ppu_cfg)),
            "status": Out(ppu_status_layout(self.ppu_cfg)),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        hp = hw_params(p)
        m = Module()
        pes = [PE(hp) for _ in range(N_PE)]
        for j, pe in enumerate(pes):
            m.submodules[f"pe{j}"] = pe
        m.submodules.ppu = ppu = PPU(self.ppu_cfg)
        m.d.comb += [ppu.status_sel.eq(self.status_sel), self.status.eq(ppu.status)]

        # ---- unit registers
        state = Signal(range(5))
        u = Signal(layout(Opcode.UNIT))
        pc = Signal(ADDR_W + 1)
        remaining = Signal(16)
        out_idx = Signal(13)
        nnz = Signal(13)
        error = Signal()
        code = Signal(ERR_W)
        m.d.comb += [self.error.eq(error), self.error_code.eq(code), self.busy.eq(state != G_IDLE)]

        # ---- op dispatch: the i-th free PE (in index order) takes the op at pc + i
        ops = [Signal(layout(Opcode.OP), name=f"op{i}") for i in range(IMEM_PORTS)]
        for i in range(IMEM_PORTS):
            m.d.comb += ops[i].eq(self.imem_data[i])
        free_pe = Cat(*[pe.cfg.ready for pe in pes])
        n_avail = Signal(range(N_PE + 1))
        m.d.comb += n_avail.eq(Mux(remaining > N_PE, N_PE, remaining))
        rank = []  # rank[j]: free PEs below j
        take = []
        acc = Const(0, 2)
        for j in range(N_PE):
            r = Signal(range(N_PE + 1), name=f"rank{j}")
            m.d.comb += r.eq(acc)
            rank.append(r)
            t = Signal(name=f"take{j}")
            m.d.comb += t.eq(free_pe[j] & (r < n_avail) & ~error & (state != G_IDLE))
            take.append(t)
            acc = acc + free_pe[j]
        n_taken = Signal(range(N_PE + 1))
        m.d.comb += n_taken.eq(sum(take))
        bad_op = Signal()
        bad_code = Signal(ERR_W)
        checks = [op_is_valid(m, ops[i], p) for i in range(IMEM_PORTS)]
        op_array = Array([o.as_value() for o in ops])
        fetch_errors = []
        for j, pe in enumerate(pes):
            op = Signal(layout(Opcode.OP), name=f"pe{j}_op")
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
            m.d.comb += [
                start.eq(take[j] & ok & ~bad_op),
                pe.cfg.valid.eq(start),
                pe.cfg.payload.mode.eq(op.mode),
                pe.cfg.payload.k.eq(op.k),
                pe.cfg.payload.stride2.eq(op.stride2),
                pe.cfg.payload.pad.eq(op.pad),
                pe.cfg.payload.in_len.eq(op.in_len),
                pe.cfg.payload.out_len.eq(op.out_len),
            ]
            f1 = _Fetch(m, f"pe{j}_p1", p, self.buf_raddr[2 * j], self.buf_ren[2 * j], self.buf_rdata[2 * j],
                        pe.port1, start, op.addr1, Const(0), op.k)
            f2 = _Fetch(m, f"pe{j}_p2", p, self.buf_raddr[2 * j + 1], self.buf_ren[2 * j + 1],
                        self.buf_rdata[2 * j + 1], pe.port2, start, op.addr2, op.mode != MODE_OSRC, op.k)
            fetch_errors += [f1.error, f2.error]
            # mask engine: one word, read in the cfg cycle of an MSRC op
            mhave = Signal(name=f"pe{j}_mhave")
            mstart = start & (op.mode == MODE_MSRC)
            m.d.comb += [self.mask_raddr[j].eq(op.mask_addr), self.mask_ren[j].eq(mstart),
                         pe.port3.valid.eq(mhave), pe.port3.payload.bits.eq(self.mask_rdata[j])]
            with m.If(mstart):
                m.d.sync += mhave.eq(1)
            with m.Elif(pe.port3.ready):
                m.d.sync += mhave.eq(0)

        # ---- instruction reads: address for the next cycle
        pc_next = Signal(ADDR_W + 1)
        m.d.comb += pc_next.eq(Mux(self.unit_valid, self.unit_pc + 1, pc + n_taken))
        for i in range(IMEM_PORTS):
            m.d.comb += self.imem_addr[i].eq(pc_next + i)
        m.d.sync += pc.eq(pc_next)
        remaining_after = Signal(16)
        m.d.comb += remaining_after.eq(remaining - n_taken)
        m.d.sync += remaining.eq(remaining_after)

        # ---- PE beats to the PPU; `last` only on a PE's final op of the unit
        ppu_in = [ppu.pe0, ppu.pe1, ppu.pe2]
        lastbeat = [Signal(name=f"lastbeat{j}") for j in range(N_PE)]
        below = Const(0, 2)
        for j, pe in enumerate(pes):
            m.d.comb += [lastbeat[j].eq(pe.out.valid & ppu_in[j].ready & pe.out.payload.last)]
            final = Signal(name=f"final{j}")
            m.d.comb += final.eq(below >= remaining_after)
            below = below + lastbeat[j]
            m.d.comb += [
                ppu_in[j].valid.eq(pe.out.valid),
                ppu_in[j].payload.eq(pe.out.payload),
                ppu_in[j].payload.last.eq(pe.out.payload.last & final),
                pe.out.ready.eq(ppu_in[j].ready),
            ]

        # ---- PPU command sequencer and result write
        cmd = ppu.cmd.payload
        n_pe_used = Mux(u.n_ops >= N_PE, (1 << N_PE) - 1, Mux(u.n_ops == 2, 3, Mux(u.n_ops == 1, 1, 0)))
        out = ppu.out
        wr_last = Signal()
        m.d.comb += [
            self.wr_en.eq((state == G_WRITE) & out.valid),
            self.wr_addr.eq(u.out_addr + out_idx),
            self.wr_data.eq(out.payload),
            wr_last.eq((state == G_WRITE) & out.valid & out.payload.last),
            self.nnz_inc.eq(self.wr_en & (out.payload.offset != p.off_end)),
            self.dir_en.eq(wr_last),
            self.dir_addr.eq(u.dir),
            self.dir_data.eq(Cat(u.out_addr, (out_idx + 1)[:13], (nnz + self.nnz_inc)[:13], Const(1, 1))),
            self.row_done.eq(wr_last),
            self.row_len.eq(u.length),
            self.idle.eq((state == G_IDLE) & ppu.cmd.ready),
            self.free.eq(~error & (((state == G_IDLE) & ppu.cmd.ready) | wr_last)),
        ]
        with m.Switch(state):
            with m.Case(G_IDLE):
                m.d.comb += [ppu.cmd.valid.eq(self.ppu_cmd_valid), cmd.eq(self.ppu_cmd)]
            with m.Case(G_START):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(Op.START), cmd.bias.eq(u.bias)]
                with m.If(ppu.cmd.ready):
                    m.d.sync += state.eq(Mux(u.n_ops != 0, G_ACCUM, G_FINISH))
            with m.Case(G_ACCUM):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(Op.ACCUM), cmd.pe_mask.eq(n_pe_used)]
                with m.If(ppu.cmd.ready):
                    m.d.sync += state.eq(G_FINISH)
            with m.Case(G_FINISH):
                m.d.comb += [ppu.cmd.valid.eq(1), cmd.op.eq(Op.FINISH), cmd.slot.eq(u.slot),
                             cmd.length.eq(u.length), cmd.shift.eq(u.shift), cmd.relu.eq(u.relu),
                             cmd.gta.eq(u.gta), cmd.prune.eq(u.prune), cmd.g_first.eq(u.g_first)]
                with m.If(ppu.cmd.ready):
                    m.d.sync += [state.eq(G_WRITE), out_idx.eq(0), nnz.eq(0)]
            with m.Case(G_WRITE):
                m.d.comb += out.ready.eq(1)
                with m.If(out.valid):
                    m.d.sync += [out_idx.eq(out_idx + 1), nnz.eq(nnz + self.nnz_inc)]
                    with m.If(out.payload.last):
                        m.d.sync += state.eq(G_IDLE)
        with m.If(self.unit_valid):
            m.d.sync += [u.eq(self.unit), remaining.eq(self.unit.n_ops),
                         state.eq(Mux(self.unit.bias_en, G_START,
                                      Mux(self.unit.n_ops != 0, G_ACCUM, G_FINISH)))]

        # ---- errors: the first one wins
        ferr = Signal()
        m.d.comb += ferr.eq(Cat(*fetch_errors).any())
        with m.If(~error & (bad_op | ferr)):
            m.d.sync += [error.eq(1), code.eq(Mux(bad_op, bad_code, ErrorCode.ADDRESS))]
        return m


def _build(values: dict[str, int | None]) -> tuple[Group, dict[str, int]]:
    p = CoreParams(dw=values["DW"], k_max=values["K_MAX"], w_max=values["W_MAX"], acc_w=values["ACC_W"],
                   buf_depth=values["BUF_DEPTH"], mask_depth=values["MASK_DEPTH"], n_slots=values["N_SLOTS"],
                   n_f=values["N_F"])
    used = {"DW": p.dw, "K_MAX": p.k_max, "W_MAX": p.w_max, "ACC_W": p.acc_w, "BUF_DEPTH": p.buf_depth,
            "MASK_DEPTH": p.mask_depth, "N_SLOTS": p.n_slots, "N_F": p.n_f}
    return Group(p), used


BLOCK = BlockSpec(
    name="group",
    help="PE group: 3 PEs, fetch engines, PPU and unit sequencer (docs/architecture.md s.10, s.11)",
    params={
        **DATAPATH_PARAMS,
        "BUF_DEPTH": ParamSpec(16384, "buffer words the fetch engines may address (16 .. 2**20)"),
        "MASK_DEPTH": ParamSpec(1024, "mask words (1 .. 65536)"),
        "N_SLOTS": ParamSpec(4, "PPU threshold slots, one per layer (1 .. 64)"),
        "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
    },
    build=_build,
)
