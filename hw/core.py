"""The accelerator core: G groups, buffer, mask and instruction memories, row directory,
controller and host interface (docs/architecture.md section 11).

The controller walks the instruction memory one word per cycle: a ``UNIT`` goes to the
lowest-index free group (which reads the unit's ``OP`` words itself), ``PPU`` commands go to
idle groups, ``SYNC`` / ``END`` wait for every group. Any invalid word or operand address
stops the run with ``done = error = 1`` and an error code; nothing waits forever.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import ADDR_W, COUNTER_W, DIR_W, INSTR_W, N_STEPS, CoreParams, ErrorCode, Opcode, layout
from ..arch.ppu import Op
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .group import ERR_W, IMEM_PORTS, N_BUF_PORTS, Group
from .ppu import ppu_status_layout

N_PE = 3
C_IDLE, C_RUN, C_DONE = range(3)


class Core(wiring.Component):
    def __init__(self, params: CoreParams):
        if not isinstance(params, CoreParams):
            raise ValueError(f"params = {params!r} is not a CoreParams; allowed: a CoreParams instance")
        self.params = p = params
        self.ppu_cfg = p.ppu_config()
        self.rdata_w = max(p.entry_w, DIR_W)
        super().__init__({
            "host_we": In(1),
            "host_wsel": In(2),
            "host_waddr": In(ADDR_W),
            "host_wdata": In(INSTR_W),
            "host_rsel": In(1),
            "host_raddr": In(ADDR_W),
            "host_rdata": Out(self.rdata_w),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(ERR_W),
            "cycles": Out(COUNTER_W),
            "total_cycles": Out(COUNTER_W),
            "step_nnz": Out(COUNTER_W * N_STEPS),
            "step_rows": Out(COUNTER_W * N_STEPS),
            "step_elems": Out(COUNTER_W * N_STEPS),
            "ppu_sel_group": In(8),
            "ppu_sel_slot": In(6),
            "ppu_sel_index": In(6),
            "ppu_status": Out(ppu_status_layout(self.ppu_cfg)),
        })

    def elaborate(self, platform) -> Module:
        p = self.params
        G = p.groups
        m = Module()
        groups = [Group(p) for _ in range(G)]
        for g, grp in enumerate(groups):
            m.submodules[f"group{g}"] = grp

        m.submodules.buf = buf = Memory(shape=p.entry_w, depth=p.buf_depth, init=[])
        m.submodules.maskmem = maskmem = Memory(shape=p.w_max, depth=p.mask_depth, init=[])
        m.submodules.imem = imem = Memory(shape=INSTR_W, depth=p.imem_depth, init=[])
        m.submodules.dirmem = dirmem = Memory(shape=DIR_W, depth=p.dir_depth, init=[])

        # ---- host ports
        hw_buf, hw_mask, hw_imem, hw_dir = (mem.write_port() for mem in (buf, maskmem, imem, dirmem))
        for sel, wp in enumerate((hw_buf, hw_mask, hw_imem, hw_dir)):
            m.d.comb += [wp.addr.eq(self.host_waddr), wp.data.eq(self.host_wdata),
                         wp.en.eq(self.host_we & (self.host_wsel == sel))]
        hr_buf, hr_dir = buf.read_port(), dirmem.read_port()
        rsel = Signal()
        m.d.sync += rsel.eq(self.host_rsel)
        m.d.comb += [hr_buf.addr.eq(self.host_raddr), hr_dir.addr.eq(self.host_raddr),
                     self.host_rdata.eq(Mux(rsel, hr_dir.data, hr_buf.data))]

        # ---- group memory ports
        for grp in groups:
            for i in range(N_BUF_PORTS):
                rp = buf.read_port()
                m.d.comb += [rp.addr.eq(grp.buf_raddr[i]), rp.en.eq(grp.buf_ren[i]), grp.buf_rdata[i].eq(rp.data)]
            for j in range(N_PE):
                rp = maskmem.read_port()
                m.d.comb += [rp.addr.eq(grp.mask_raddr[j]), rp.en.eq(grp.mask_ren[j]), grp.mask_rdata[j].eq(rp.data)]
            for i in range(IMEM_PORTS):
                rp = imem.read_port()
                m.d.comb += [rp.addr.eq(grp.imem_addr[i]), grp.imem_data[i].eq(rp.data)]
            wp = buf.write_port()
            m.d.comb += [wp.addr.eq(grp.wr_addr), wp.data.eq(grp.wr_data), wp.en.eq(grp.wr_en)]
            dp = dirmem.write_port()
            m.d.comb += [dp.addr.eq(grp.dir_addr), dp.data.eq(grp.dir_data), dp.en.eq(grp.dir_en)]
            m.d.comb += [grp.status_sel.slot.eq(self.ppu_sel_slot), grp.status_sel.index.eq(self.ppu_sel_index)]
        statuses = Array([grp.status.as_value() for grp in groups])
        m.d.comb += self.ppu_status.eq(statuses[self.ppu_sel_group])

        # ---- controller
        state = Signal(range(3))
        pc = Signal(ADDR_W + 1)
        pc_next = Signal(ADDR_W + 1)
        step = Signal(2)
        error = Signal()
        code = Signal(ERR_W)
        cp = imem.read_port()
        m.d.comb += cp.addr.eq(pc_next)
        word = cp.data
        opcode = word[:4]
        unit, ppu, sync = (layout(o)(word[:layout(o).size]) for o in (Opcode.UNIT, Opcode.PPU, Opcode.SYNC))
        m.d.comb += [self.busy.eq(state == C_RUN), self.done.eq(state == C_DONE),
                     self.error.eq(error), self.error_code.eq(code)]

        free = Cat(*[g.free for g in groups])
        idle = Cat(*[g.idle for g in groups])
        all_idle = idle.all()
        # lowest free group
        chosen = Signal(range(max(2, G)))
        for g in reversed(range(G)):
            with m.If(free[g]):
                m.d.comb += chosen.eq(g)

        lim = (1 << (p.acc_w - 1)) - 1
        unit_bad = Signal()
        unit_addr_bad = Signal()
        m.d.comb += [
            unit_bad.eq((unit.length > p.w_max) | (unit.shift >= p.acc_w) | (unit.slot >= p.n_slots) |
                        (unit.bias_en & ((unit.bias > lim) | (unit.bias < -lim)))),
            unit_addr_bad.eq((unit.dir >= p.dir_depth) |
                             (unit.out_addr + Mux(unit.length == 0, 1, unit.length) > p.buf_depth) |
                             (pc + 1 + unit.n_ops > p.imem_depth)),
        ]
        ppu_bad = Signal()
        m.d.comb += ppu_bad.eq((ppu.op == Op.START) | (ppu.op == Op.ACCUM) | (ppu.op == Op.FINISH) |
                               (ppu.slot >= p.n_slots) | (~ppu.all & (ppu.group >= G)))
        ppu_ready = Signal()
        m.d.comb += ppu_ready.eq(Mux(ppu.all, all_idle, Array([idle[g] for g in range(G)])[ppu.group]))

        advance = Signal()
        skip = Signal(17)
        fail = Signal()
        fail_code = Signal(ERR_W)
        go_done = Signal()
        with m.If(state == C_RUN):
            with m.If(pc >= p.imem_depth):
                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.ADDRESS)]
            with m.Else():
                with m.Switch(opcode):
                    with m.Case(Opcode.NOP):
                        m.d.comb += advance.eq(1)
                    with m.Case(Opcode.UNIT):
                        with m.If(unit_bad):
                            m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_UNIT)]
                        with m.Elif(unit_addr_bad):
                            m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.ADDRESS)]
                        with m.Elif(free.any()):
                            m.d.comb += [advance.eq(1), skip.eq(unit.n_ops)]
                            for g, grp in enumerate(groups):
                                m.d.comb += grp.unit_valid.eq(chosen == g)
                    with m.Case(Opcode.PPU):
                        with m.If(ppu_bad):
                            m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_UNIT)]
                        with m.Elif(ppu_ready):
                            m.d.comb += advance.eq(1)
                            for g, grp in enumerate(groups):
                                m.d.comb += grp.ppu_cmd_valid.eq(ppu.all | (ppu.group == g))
                    with m.Case(Opcode.SYNC):
                        with m.If(all_idle):
                            m.d.comb += advance.eq(1)
                            m.d.sync += step.eq(sync.step)
                    with m.Case(Opcode.END):
                        with m.If(all_idle):
                            m.d.comb += go_done.eq(1)
                    with m.Default():
                        m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_OPCODE)]
        for grp in groups:
            m.d.comb += [grp.unit.eq(unit), grp.unit_pc.eq(pc)]
            cmd = grp.ppu_cmd
            m.d.comb += [cmd.op.eq(ppu.op), cmd.slot.eq(ppu.slot), cmd.c_m.eq(ppu.c_m),
                         cmd.c_shift.eq(ppu.c_shift), cmd.value.eq(ppu.value)]
        m.d.comb += pc_next.eq(Mux(self.start, 0, Mux(advance, pc + 1 + skip, pc)))
        m.d.sync += pc.eq(pc_next)

        gerr = Cat(*[g.error for g in groups])
        gcode = Signal(ERR_W)
        for g in reversed(range(G)):
            with m.If(gerr[g]):
                m.d.comb += gcode.eq(groups[g].error_code)

        # ---- counters
        cycles = Signal(COUNTER_W)
        total = Signal(COUNTER_W)
        nnz = [Signal(COUNTER_W, name=f"nnz{s}") for s in range(N_STEPS)]
        rows = [Signal(COUNTER_W, name=f"rows{s}") for s in range(N_STEPS)]
        elems = [Signal(COUNTER_W, name=f"elems{s}") for s in range(N_STEPS)]
        m.d.comb += [self.cycles.eq(cycles), self.total_cycles.eq(total),
                     self.step_nnz.eq(Cat(*nnz)), self.step_rows.eq(Cat(*rows)), self.step_elems.eq(Cat(*elems))]
        nnz_inc = sum(g.nnz_inc for g in groups)
        rows_inc = sum(g.row_done for g in groups)
        elems_inc = sum(Mux(g.row_done, g.row_len, 0) for g in groups)
        any_busy = Cat(*[g.busy for g in groups]).any()
        with m.If(state == C_RUN):
            m.d.sync += total.eq(total + 1)
            with m.If(any_busy):
                m.d.sync += cycles.eq(cycles + 1)
        for s in range(N_STEPS):
            with m.If(step == s):
                m.d.sync += [nnz[s].eq(nnz[s] + nnz_inc), rows[s].eq(rows[s] + rows_inc),
                             elems[s].eq(elems[s] + elems_inc)]

        with m.If(self.start):
            m.d.sync += [state.eq(C_RUN), error.eq(0), code.eq(0), step.eq(0), cycles.eq(0), total.eq(0)]
            m.d.sync += [c.eq(0) for c in nnz + rows + elems]
        with m.Elif(state == C_RUN):
            with m.If(fail | gerr.any()):
                m.d.sync += [state.eq(C_DONE), error.eq(1), code.eq(Mux(fail, fail_code, gcode))]
            with m.Elif(go_done):
                m.d.sync += state.eq(C_DONE)
        return m


PARAMS = {
    **DATAPATH_PARAMS,
    "G": ParamSpec(2, "PE groups of 3 PEs + 1 PPU (1 .. 255; 56 in the paper)"),
    "BUF_DEPTH": ParamSpec(16384, "buffer words (16 .. 2**20)"),
    "MASK_DEPTH": ParamSpec(1024, "mask words (1 .. 65536)"),
    "IMEM_DEPTH": ParamSpec(8192, "instruction words (16 .. 2**20)"),
    "DIR_DEPTH": ParamSpec(4096, "row directory entries (1 .. 65536)"),
    "N_SLOTS": ParamSpec(4, "PPU threshold slots, one per layer (1 .. 64)"),
    "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
}


def params_from_values(values: dict[str, int | None]) -> CoreParams:
    return CoreParams(dw=values["DW"], k_max=values["K_MAX"], w_max=values["W_MAX"], acc_w=values["ACC_W"],
                      groups=values["G"], buf_depth=values["BUF_DEPTH"], mask_depth=values["MASK_DEPTH"],
                      imem_depth=values["IMEM_DEPTH"], dir_depth=values["DIR_DEPTH"],
                      n_slots=values["N_SLOTS"], n_f=values["N_F"])


def _build(values: dict[str, int | None]) -> tuple[Core, dict[str, int]]:
    p = params_from_values(values)
    used = {"DW": p.dw, "K_MAX": p.k_max, "W_MAX": p.w_max, "ACC_W": p.acc_w, "G": p.groups,
            "BUF_DEPTH": p.buf_depth, "MASK_DEPTH": p.mask_depth, "IMEM_DEPTH": p.imem_depth,
            "DIR_DEPTH": p.dir_depth, "N_SLOTS": p.n_slots, "N_F": p.n_f}
    return Core(p), used


BLOCK = BlockSpec(
    name="core",
    help="accelerator core: G PE groups, buffer, controller, host interface (docs/architecture.md s.11)",
    params=PARAMS,
    build=_build,
    # Each group once on its own; the top module's own logic is the controller (docs/area.md).
    synth_keep_hierarchy=True,
)
