"""The accelerator core: G groups, buffer, mask and instruction memories, row directory,
controller and host interface (docs/architecture.md section 11).

The controller walks the instruction memory one word per cycle: a ``UNIT`` goes to the
lowest-index free group (which reads the unit's ``OP`` words itself), ``PPU`` commands go to
idle groups, ``SYNC`` / ``END`` wait for every group. A ``UNITS(count)`` header starts a unit
block (section 12.9): the controller then reads ``UNIT_RATE`` (U) block words per cycle (U read
ports) and hands out up to U units per cycle, the j-th to the j-th lowest free group, each with
the address of its first ``OP`` word (the block's op pointer plus the ``n_ops`` of the units
before it), and continues after the block's last ``OP``. Any invalid word or operand address
stops the run with ``done = error = 1`` and an error code; nothing waits forever.
``END_BATCH`` with ``all = 1`` is the controller's own reduction: every group's ``sum|g|`` of the
slot summed, ``tau_batch`` computed once and pushed into every PPU's FIFO (section 11.3). Each
group has a bias-gradient bank; the host reads the sum over the banks (section 11.6).

The groups' memory ports are ``amaranth.lib.memory`` port signatures, joined to the memories
with ``wiring.connect``; the core's own ports are ``HostSignature`` (section 11.5).
"""
from __future__ import annotations

import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ..arch.fixedpoint import PARAM_RANGES
from ..arch.isa import ADDR_W, COUNTER_W, DIR_W, INSTR_W, N_STEPS, OPCODE_W, CoreParams, ErrorCode, Opcode
from ..arch.pe import bits_for
from ..arch.ppu import N_PE
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .enums import ErrorShape, OpcodeShape, PpuOp, field_width
from .dispatch import buf_ports, dir_ports, imem_ports
from .group import GEN2_PARAMS, PC_W, Group, check_core_params, copy_fields
from .layouts import instr_layout
from .ppu import _rne_shift, _sat_signed, _sat_unsigned, ppu_status_layout

# host write select (host_wsel): which memory a host write goes to
HOST_WSEL = ("buffer", "mask", "instruction", "directory")
# host read select (host_rsel): what host_rdata shows one cycle after host_raddr (section 11.5)
HOST_RSEL = ("buffer", "directory", "bias_gradient")


def host_rdata_width(p: CoreParams) -> int:
    """A buffer word, a directory word or a bias-gradient sum (G_W bits, two's complement)."""
    return max(p.entry_w, DIR_W, p.ppu_config().g_w)


class HostSignature(wiring.Signature):
    """The core's ports, seen from the core (docs/architecture.md section 11.5): the host's
    memory write and read port, run control and status, the counters and the PPU status
    readback. Flat members, so the Verilog ports keep the documented names (``host_we``, ...);
    a host model takes ``HostSignature(p).flip()``."""

    def __init__(self, p: CoreParams):
        check_core_params(p)
        cfg = p.ppu_config()
        super().__init__({
            "host_we": In(1),
            "host_wsel": In(bits_for(len(HOST_WSEL) - 1)),
            "host_waddr": In(ADDR_W),
            "host_wdata": In(INSTR_W),
            "host_rsel": In(bits_for(len(HOST_RSEL) - 1)),
            "host_raddr": In(ADDR_W),
            "host_rdata": Out(host_rdata_width(p)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorShape),
            "cycles": Out(COUNTER_W),
            "total_cycles": Out(COUNTER_W),
            "step_nnz": Out(COUNTER_W * N_STEPS),
            "step_rows": Out(COUNTER_W * N_STEPS),
            "step_elems": Out(COUNTER_W * N_STEPS),
            "ppu_sel_group": In(field_width(Opcode.PPU, "group")),
            "ppu_sel_slot": In(field_width(Opcode.PPU, "slot")),
            "ppu_sel_index": In(bits_for(PARAM_RANGES["N_F"][1] - 1)),
            "ppu_status": Out(ppu_status_layout(cfg)),
        })


class Core(wiring.Component):
    """G groups, the memories and the controller; ``params``: a CoreParams (a TypeError
    otherwise; CoreParams refuses out-of-range values with a ValueError naming the parameter
    and its range)."""

    def __init__(self, params: CoreParams):
        self.params = p = check_core_params(params)
        self.ppu_cfg = p.ppu_config()
        self.rdata_w = host_rdata_width(p)
        super().__init__(HostSignature(p))

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
        rsel = Signal(len(self.host_rsel))
        m.d.sync += rsel.eq(self.host_rsel)
        m.d.comb += [hr_buf.addr.eq(self.host_raddr), hr_dir.addr.eq(self.host_raddr)]
        db_sum = self._bias_gradient_banks(m, groups)
        with m.Switch(rsel):
            with m.Case(0):
                m.d.comb += self.host_rdata.eq(hr_buf.data)
            with m.Case(1):
                m.d.comb += self.host_rdata.eq(hr_dir.data)
            with m.Default():
                m.d.comb += self.host_rdata.eq(db_sum.as_unsigned())

        eb_reduce = Signal()   # the controller reads every group's sum|g| of the word's slot (11.3)
        U = p.unit_rate
        # U instruction read ports: port j reads pc_next + j (j > 0 only matter in a unit block, 12.9)
        cps = [imem.read_port() for _ in range(U)]
        cp = cps[0]
        word = cp.data
        ppu = instr_layout(Opcode.PPU)(word[:instr_layout(Opcode.PPU).size])

        # ---- group memory ports (in this order: a memory's write ports are prioritised by it)
        for grp in groups:
            for i in range(buf_ports(p)):
                connect(m, grp.buf_read[i], buf.read_port())
            for j in range(N_PE):
                connect(m, grp.mask_read[j], maskmem.read_port())
            for i in range(imem_ports(p)):
                connect(m, grp.imem[i], imem.read_port())
            for i in range(dir_ports(p)):
                connect(m, grp.dir_read[i], dirmem.read_port())
            connect(m, grp.buf_write, buf.write_port())
            connect(m, grp.dir_write, dirmem.write_port())
            m.d.comb += [grp.ppu_status.sel.slot.eq(Mux(eb_reduce, ppu.slot, self.ppu_sel_slot)),
                         grp.ppu_status.sel.index.eq(self.ppu_sel_index)]
        statuses = Array([grp.ppu_status.status.as_value() for grp in groups])
        m.d.comb += self.ppu_status.eq(statuses[self.ppu_sel_group])

        # ---- controller
        pc = Signal(PC_W)
        pc_next = Signal(PC_W)
        step = Signal(range(N_STEPS))
        error = Signal()
        code = Signal(ErrorShape)
        for j, port in enumerate(cps):
            m.d.comb += port.addr.eq(pc_next + j)
        opcode = OpcodeShape(word[:OPCODE_W])
        unit, sync, units_hdr = (instr_layout(o)(word[:instr_layout(o).size])
                                 for o in (Opcode.UNIT, Opcode.SYNC, Opcode.UNITS))
        running = Signal()   # the controller's FSM is in RUN
        m.d.comb += [self.busy.eq(running), self.error.eq(error), self.error_code.eq(code)]

        free = Cat(*[g.unit.free for g in groups])
        idle = Cat(*[g.ppu_cmd.idle for g in groups])
        all_idle = idle.all()

        # ---- unit hand-out (sections 11.3, 12.9): window word j (port j, address pc + j) goes to
        # the j-th lowest free group (pick[j], one-hot); its OPs start at o[j] = the first unit's op
        # address + the n_ops of the words before it. A bare UNIT is window word 0 with o[0] = pc + 1;
        # in a block, o[0] is the block's op pointer.
        blk = Signal()                       # in a unit block
        remaining = Signal(field_width(Opcode.UNITS, "count"))   # block units not yet handed out
        op_ptr = Signal(PC_W)                # the op address of the block's next unit
        o_w = PC_W + 3                       # o[j] <= op_ptr + 7 * (2**16 - 1): never wraps
        words = [instr_layout(Opcode.UNIT)(port.data[:instr_layout(Opcode.UNIT).size]) for port in cps]
        o = [Signal(o_w, name=f"unit_o{j}") for j in range(U + 1)]
        m.d.comb += o[0].eq(Mux(blk, op_ptr, pc + 1))
        for j in range(U):
            m.d.comb += o[j + 1].eq(o[j] + words[j].n_ops)
        picks, mask = [], free
        for j in range(U):
            pick = Signal(G, name=f"unit_pick{j}")
            m.d.comb += pick.eq(mask & (~mask + 1)[:G])   # lowest set bit
            picks.append(pick)
            mask = mask & ~pick
        chosen = picks[0]                     # the lowest free group (one-hot)

        lim = (1 << (p.acc_w - 1)) - 1

        def unit_checks(w, oj):
            """(bad unit: code 4, bad address: code 2) of a UNIT word whose OPs start at ``oj``."""
            return ((w.length > p.w_max) | (w.shift >= p.acc_w) | (w.slot >= p.n_slots) |
                    (w.bias_en & ((w.bias > lim) | (w.bias < -lim))) | (w.db_en & (w.db >= p.db_depth)),
                    (w.dir >= p.dir_depth) | (w.out_addr + Mux(w.length == 0, 1, w.length) > p.buf_depth) |
                    (oj + w.n_ops > p.imem_depth))

        unit_bad = Signal()
        unit_addr_bad = Signal()
        bad0, addr_bad0 = unit_checks(unit, o[0])
        m.d.comb += [unit_bad.eq(bad0), unit_addr_bad.eq(addr_bad0)]

        # block mode: word j is handed out when every word before it is, it is a block word
        # (j < remaining), it passes its checks and a j-th free group exists; the first word of the
        # window that fails its checks raises its error once every word before it is handed out.
        give = [Signal(name=f"unit_give{j}") for j in range(U)]
        blk_fail = Signal()
        blk_code = Signal(ErrorShape)
        blk_last = Signal()                  # the block's last unit is handed out in this cycle
        n_given = Signal(range(U + 1))
        o_next = Signal(o_w)                 # the op pointer after this cycle's units
        before = Const(1)
        codes, fails = [], []
        for j in range(U):
            w = words[j]
            bad_j, addr_bad_j = unit_checks(w, o[j])
            in_blk = remaining > j
            code_j = Signal(ErrorShape, name=f"unit_code{j}")
            with m.If(pc + j >= p.imem_depth):
                m.d.comb += code_j.eq(ErrorCode.ADDRESS)
            with m.Elif(w.as_value()[:OPCODE_W] != Opcode.UNIT):
                m.d.comb += code_j.eq(ErrorCode.BAD_OPCODE)
            with m.Elif(bad_j):
                m.d.comb += code_j.eq(ErrorCode.BAD_UNIT)
            with m.Elif(addr_bad_j):
                m.d.comb += code_j.eq(ErrorCode.ADDRESS)
            fail_j = before & in_blk & (code_j != 0)
            m.d.comb += give[j].eq(before & in_blk & (code_j == 0) & picks[j].any())
            fails.append(fail_j)
            codes.append(Mux(fail_j, code_j, 0))
            before = give[j]
        # at most one word of the window fails (the words after a failing one are not reached)
        m.d.comb += [blk_fail.eq(Cat(*fails).any()), blk_code.eq(reduce(operator.or_, codes))]
        m.d.comb += o_next.eq(o[0])
        for j in range(U):
            with m.If(give[j]):
                m.d.comb += [n_given.eq(j + 1), o_next.eq(o[j + 1]), blk_last.eq(remaining == j + 1)]
        ppu_bad = Signal()
        # START / ACCUM / FINISH are the groups' own commands, never a PPU word's
        m.d.comb += ppu_bad.eq(ppu.op.matches(PpuOp.START, PpuOp.ACCUM, PpuOp.FINISH) |
                               (ppu.slot >= p.n_slots) | (~ppu.all & (ppu.group >= G)))
        ppu_ready = Signal()
        m.d.comb += ppu_ready.eq(Mux(ppu.all, all_idle, Array([idle[g] for g in range(G)])[ppu.group]))

        advance = Signal()
        skip = Signal(field_width(Opcode.UNIT, "n_ops") + 1)
        fail = Signal()
        fail_code = Signal(ErrorShape)
        go_done = Signal()
        gerr = Cat(*[g.error for g in groups])
        gcode = Signal(ErrorShape)
        for g in reversed(range(G)):
            with m.If(gerr[g]):
                m.d.comb += gcode.eq(groups[g].error_code)

        # END_BATCH with all = 1 (section 11.3): in a first cycle (every group idle) the sum of every
        # group's sum|g| of the slot, saturated to SUM_W, is registered; in the next one tau_batch
        # of that sum goes to every PPU as END_BATCH with tau_ext (push it, clear sum|g|).
        cfg = self.ppu_cfg
        eb_all = Signal()
        eb_phase = Signal()     # the sum is registered; this cycle sends the command
        eb_total = Signal(cfg.sum_w)
        m.d.comb += eb_all.eq(ppu.all & (ppu.op == PpuOp.END_BATCH))
        total_now = sum(grp.ppu_status.status.abs_sum for grp in groups)
        eb_tau = Signal(cfg.tau_w)
        eb_prod = Signal(len(ppu.c_m) + cfg.sum_w)
        m.d.comb += [eb_prod.eq(ppu.c_m * eb_total),
                     eb_tau.eq(_sat_unsigned(_rne_shift(eb_prod, ppu.c_shift), cfg.tau_w))]
        with m.If(eb_reduce):
            m.d.sync += [eb_total.eq(_sat_unsigned(total_now, cfg.sum_w)), eb_phase.eq(1)]

        with m.FSM(name="core_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(blk):
                    # a unit block (12.9): up to U units this cycle, then on at the block's op pointer
                    m.d.comb += [fail.eq(blk_fail), fail_code.eq(blk_code)]
                    for g, grp in enumerate(groups):
                        m.d.comb += grp.unit.valid.eq(Cat(*[give[j] & picks[j][g] for j in range(U)]).any())
                    m.d.sync += [remaining.eq(remaining - n_given), op_ptr.eq(o_next)]
                    with m.If(blk_last):
                        m.d.sync += blk.eq(0)
                with m.Elif(pc >= p.imem_depth):
                    m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.ADDRESS)]
                with m.Else():
                    with m.Switch(opcode):
                        with m.Case(OpcodeShape.NOP):
                            m.d.comb += advance.eq(1)
                        with m.Case(OpcodeShape.UNIT):
                            with m.If(unit_bad):
                                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_UNIT)]
                            with m.Elif(unit_addr_bad):
                                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.ADDRESS)]
                            with m.Elif(free.any()):
                                m.d.comb += [advance.eq(1), skip.eq(unit.n_ops)]
                                for g, grp in enumerate(groups):
                                    m.d.comb += grp.unit.valid.eq(chosen[g])
                        with m.Case(OpcodeShape.UNITS):
                            # the header takes one cycle (like NOP); the block's words follow
                            with m.If(units_hdr.count == 0):
                                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_UNIT)]
                            with m.Else():
                                m.d.comb += advance.eq(1)
                                m.d.sync += [blk.eq(1), remaining.eq(units_hdr.count),
                                             op_ptr.eq(pc + 1 + units_hdr.count)]
                        with m.Case(OpcodeShape.PPU):
                            with m.If(ppu_bad):
                                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_UNIT)]
                            with m.Elif(eb_all & ~eb_phase):
                                m.d.comb += eb_reduce.eq(all_idle)
                            with m.Elif(ppu_ready):
                                m.d.sync += eb_phase.eq(0)
                                m.d.comb += advance.eq(1)
                                for g, grp in enumerate(groups):
                                    m.d.comb += grp.ppu_cmd.valid.eq(ppu.all | (ppu.group == g))
                        with m.Case(OpcodeShape.SYNC):
                            with m.If(all_idle):
                                m.d.comb += advance.eq(1)
                                m.d.sync += step.eq(sync.step)
                        with m.Case(OpcodeShape.END):
                            with m.If(all_idle):
                                m.d.comb += go_done.eq(1)
                        with m.Default():
                            m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.BAD_OPCODE)]
                # the run ends at the first error (the controller's or a group's) or at END
                with m.If(self.start):
                    m.next = "RUN"
                with m.Elif(fail | gerr.any()):
                    m.d.sync += [error.eq(1), code.eq(Mux(fail, fail_code, gcode)), blk.eq(0)]
                    m.next = "DONE"
                with m.Elif(go_done):
                    m.next = "DONE"
            with m.State("DONE"):
                with m.If(self.start):
                    m.next = "RUN"
        m.d.comb += [running.eq(fsm.ongoing("RUN")), self.done.eq(fsm.ongoing("DONE"))]

        # the PPU word's fields that a PPU command has (op, slot, c_m, c_shift, value)
        ppu_fields = tuple(n for n, _ in groups[0].ppu_cmd.cmd.shape() if n in ppu.shape().members)
        for g, grp in enumerate(groups):
            # the j-th lowest free group gets window word j and its op address (12.9)
            word_g, addr_g = unit.as_value(), o[0]
            for j in range(1, U):
                word_g = Mux(picks[j][g], words[j].as_value(), word_g)
                addr_g = Mux(picks[j][g], o[j], addr_g)
            m.d.comb += [grp.unit.word.eq(word_g), grp.unit.op_addr.eq(addr_g)]
            m.d.comb += copy_fields(grp.ppu_cmd.cmd, ppu, ppu_fields)
            with m.If(eb_phase):
                m.d.comb += [grp.ppu_cmd.cmd.value.eq(eb_tau), grp.ppu_cmd.cmd.tau_ext.eq(1)]
        m.d.comb += pc_next.eq(Mux(self.start, 0, Mux(blk, Mux(blk_last, o_next, pc + n_given),
                                                      Mux(advance, pc + 1 + skip, pc))))
        m.d.sync += pc.eq(pc_next)

        # ---- counters
        cycles = Signal(COUNTER_W)
        total = Signal(COUNTER_W)
        nnz = [Signal(COUNTER_W, name=f"nnz{s}") for s in range(N_STEPS)]
        rows = [Signal(COUNTER_W, name=f"rows{s}") for s in range(N_STEPS)]
        elems = [Signal(COUNTER_W, name=f"elems{s}") for s in range(N_STEPS)]
        m.d.comb += [self.cycles.eq(cycles), self.total_cycles.eq(total),
                     self.step_nnz.eq(Cat(*nnz)), self.step_rows.eq(Cat(*rows)), self.step_elems.eq(Cat(*elems))]
        nnz_inc = sum(g.rows.nnz_inc for g in groups)
        rows_inc = sum(g.rows.row_done for g in groups)
        elems_inc = sum(Mux(g.rows.row_done, g.rows.row_len, 0) for g in groups)
        any_busy = Cat(*[g.busy for g in groups]).any()
        with m.If(running):
            m.d.sync += total.eq(total + 1)
            with m.If(any_busy):
                m.d.sync += cycles.eq(cycles + 1)
        for s in range(N_STEPS):
            with m.If(step == s):
                m.d.sync += [nnz[s].eq(nnz[s] + nnz_inc), rows[s].eq(rows[s] + rows_inc),
                             elems[s].eq(elems[s] + elems_inc)]

        # start: a new run from instruction 0 with cleared status and counters (the FSM goes to RUN)
        with m.If(self.start):
            m.d.sync += [error.eq(0), code.eq(0), step.eq(0), cycles.eq(0), total.eq(0), eb_phase.eq(0), blk.eq(0)]
            m.d.sync += [c.eq(0) for c in nnz + rows + elems]
        return m

    def _bias_gradient_banks(self, m: Module, groups: list[Group]):
        """One bias-gradient bank per group (section 11.6): DB_DEPTH signed G_W-bit entries, read,
        added to (saturating) and written back when the group's unit with ``db_en`` writes its
        last result entry; every entry reads 0 after ``start`` (a valid bit per entry). Returns the
        host's read value: the saturated sum over the groups' banks of entry ``host_raddr`` (one
        cycle after the address, like the other host reads)."""
        p = self.params
        g_w = self.ppu_cfg.g_w
        parts = []
        for g, grp in enumerate(groups):
            bank = Memory(shape=signed(g_w), depth=p.db_depth, init=[])
            m.submodules[f"db_bank{g}"] = bank
            wp = bank.write_port()
            rp = bank.read_port(transparent_for=(wp,))
            hp = bank.read_port()
            valid = Signal(p.db_depth, name=f"db_valid{g}")
            db = grp.db
            old = Signal(signed(g_w), name=f"db_old{g}")
            m.d.comb += [rp.addr.eq(db.idx), old.eq(Mux(valid.bit_select(db.idx, 1), rp.data, 0)),
                         wp.addr.eq(db.idx), wp.en.eq(db.en), wp.data.eq(_sat_signed(old + db.value, g_w))]
            with m.If(self.start):
                m.d.sync += valid.eq(0)
            with m.Elif(db.en):
                m.d.sync += valid.bit_select(db.idx, 1).eq(1)
            hv = Signal(name=f"db_hvalid{g}")
            m.d.comb += hp.addr.eq(self.host_raddr)
            m.d.sync += hv.eq((self.host_raddr < p.db_depth) & valid.bit_select(self.host_raddr, 1))
            parts.append(Mux(hv, hp.data, 0))
        total = Signal(signed(g_w))
        m.d.comb += total.eq(_sat_signed(sum(parts), g_w))
        return total


PARAMS = {
    **DATAPATH_PARAMS,
    "G": ParamSpec(2, "PE groups of N_PE (3) PEs + 1 PPU (1 .. 255; 56 in the paper)", attr="groups"),
    "BUF_DEPTH": ParamSpec(16384, "buffer words (16 .. 2**20)"),
    "MASK_DEPTH": ParamSpec(1024, "mask words (1 .. 65536)"),
    "IMEM_DEPTH": ParamSpec(8192, "instruction words (16 .. 2**20)"),
    "DIR_DEPTH": ParamSpec(4096, "row directory entries (1 .. 65536)"),
    "N_SLOTS": ParamSpec(4, "PPU threshold slots, one per layer (1 .. 64)"),
    "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
    **GEN2_PARAMS,
    "UNIT_RATE": ParamSpec(1, "F: UNITs of a unit block the controller hands out per cycle (1 .. 8; 12.9)"),
    "DB_DEPTH": ParamSpec(64, "bias-gradient bank entries per group (1 .. 256)"),
}


BLOCK = BlockSpec(
    name="core",
    help="accelerator core: G PE groups, buffer, controller, host interface (docs/architecture.md s.11)",
    params=PARAMS,
    params_class=CoreParams,
    make=Core,
    # Each group once on its own; the top module's own logic is the controller (docs/area.md).
    synth_keep_hierarchy=True,
)


def params_from_values(values: dict[str, int | None]) -> CoreParams:
    """The CoreParams of NAME=VALUE parameters (``BLOCK``'s mapping; a missing NAME: its default)."""
    return BLOCK.params_from(values)
