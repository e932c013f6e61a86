"""The PPU of a PE group (docs/architecture.md sections 7 and 7.1).

Inputs: the `Beat` streams of the group's N_PE PEs (``pe0`` .. ``pe2``) and the command stream
``cmd`` (layout ``ppu_cmd_layout``). Output: the compressed row on ``out`` (`Entry`).
Readback: ``status_sel`` (slot, FIFO entry index) selects what ``status`` shows.
The per-slot threshold FIFOs are a component of their own, ``ThresholdFifos``.

One command runs at a time; ``cmd.ready`` is high only when the PPU is idle. With PINGPONG=1
(section 12.3) there are two row accumulators: the sideband ``pe_acc[j]`` names the accumulator
of the beat on ``pe<j>``, beats are taken in every cycle (``ready`` always high), START and
FINISH name their accumulator (``cmd.acc``), ACCUM is a no-op, and while a FINISH runs the PPU
also accepts a START of the other accumulator (``cmd.ready`` then depends on ``cmd.payload``).
The behaviour is
``golden.bitexact.ppu_model.PPUModel`` bit for bit, and the cycle counts are
``sparsetrain.arch.ppu.command_cycles``.
"""
from __future__ import annotations

import contextlib

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.fixedpoint import DatapathParams
from ..arch.pe import HwParams, bits_for
from ..arch.ppu import C_M_BITS, C_SHIFT_MAX, DEFAULT_SEED, N_PE, PPUConfig
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .enums import PpuOp
from .layouts import beat_layout, entry_layout


def hw_params(cfg: DatapathParams) -> HwParams:
    """The PE's parameters (DW, K_MAX, W_MAX, ACC_W) of a PPU's or a core's parameters."""
    return HwParams(dw=cfg.dw, k_max=cfg.k_max, w_max=cfg.w_max, acc_w=cfg.acc_w)


def slot_width(cfg: PPUConfig) -> int:
    return bits_for(cfg.n_slots - 1)


def ppu_cmd_layout(cfg: PPUConfig) -> data.StructLayout:
    """The command payload of section 7.1 (fields an op does not use are ignored)."""
    p = hw_params(cfg)
    # PINGPONG=1 adds `acc` (the accumulator START / FINISH name) after every field of today's
    # layout, so PINGPONG=0 keeps its ports bit for bit
    extra = {"acc": unsigned(1)} if cfg.pingpong else {}
    return data.StructLayout({
        "op": PpuOp,
        "slot": unsigned(slot_width(cfg)),
        "pe_mask": unsigned(N_PE),
        "length": unsigned(p.off_w),
        "shift": unsigned(bits_for(cfg.acc_w - 1)),
        "relu": unsigned(1),
        "acc_g": unsigned(1),
        "prune": unsigned(1),
        "g_first": unsigned(1),
        "c_m": unsigned(C_M_BITS),
        "c_shift": unsigned(bits_for(C_SHIFT_MAX)),
        "bias": signed(cfg.acc_w),
        "value": unsigned(32),
        **extra,
        "tau_ext": unsigned(1),   # END_BATCH: push value[:DW-1] (the core's tau_batch), section 7.1
    })


def ppu_status_sel_layout(cfg: PPUConfig) -> data.StructLayout:
    return data.StructLayout({"slot": unsigned(slot_width(cfg)), "index": unsigned(bits_for(cfg.n_f - 1))})


def ppu_status_layout(cfg: PPUConfig) -> data.StructLayout:
    """Readback fields; their meaning is golden.bitexact.ppu_model.PPUStatus."""
    return data.StructLayout({
        "busy": unsigned(1),
        "row_nnz": unsigned(bits_for(cfg.w_max)),
        "g_sum": signed(cfg.g_w),
        "relu_mask": unsigned(cfg.w_max),
        "rng_state": unsigned(32),
        "abs_sum": unsigned(cfg.sum_w),
        "tau_pred": unsigned(cfg.tau_w),
        "fifo_count": unsigned(bits_for(cfg.n_f)),
        "fifo_full": unsigned(1),
        "layer_nnz": unsigned(cfg.cnt_w),
        "layer_elems": unsigned(cfg.cnt_w),
        "fifo_entry": unsigned(cfg.tau_w),
    })


def _sat_signed(v, width: int):
    lim = (1 << (width - 1)) - 1
    return Mux(v > lim, lim, Mux(v < -lim, -lim, v))


def _sat_unsigned(v, width: int):
    hi = (1 << width) - 1
    return Mux(v > hi, hi, v)


def _rne_shift(v, s):
    """rne_shift(v, s) for a run-time shift s (signed or unsigned v)."""
    q = v >> s
    # full-width masks: a shift beyond len(v) must see rem = v and half > v (no round up)
    one = Const(1, len(v) + 1)
    rem = v.as_unsigned() & ((one << s) - 1)
    half = (one << s) >> 1
    up = (s != 0) & ((rem > half) | ((rem == half) & q[0]))
    return q + up


def _when(m: Module, cond, needed: bool):
    """``m.If(cond)`` when ``needed``, else no condition at all (PINGPONG=0 keeps today's RTL)."""
    return m.If(cond) if needed else contextlib.nullcontext()


def xorshift32_next(x):
    a = (x ^ (x << 13))[:32]
    b = (a ^ (a >> 17))[:32]
    return (b ^ (b << 5))[:32]


def check_config(cfg: object, name: str = "cfg") -> PPUConfig:
    """``cfg`` itself when it is a PPUConfig (whose values PPUConfig validated on creation)."""
    if not isinstance(cfg, PPUConfig):
        raise TypeError(f"{name} = {cfg!r} is not a PPUConfig; allowed: a PPUConfig instance")
    return cfg


class FifoPushSignature(wiring.Signature):
    """Push ``value`` into the FIFO of ``slot`` (the oldest entry leaves when it is full)."""

    def __init__(self, cfg: PPUConfig):
        check_config(cfg)
        super().__init__({"en": Out(1), "slot": Out(slot_width(cfg)), "value": Out(cfg.tau_w)})


class FifoClearSignature(wiring.Signature):
    """Empty the FIFO of ``slot``: count, write pointer, running sum and every entry to 0."""

    def __init__(self, cfg: PPUConfig):
        check_config(cfg)
        super().__init__({"en": Out(1), "slot": Out(slot_width(cfg))})


class TauReadSignature(wiring.Signature):
    """The pruning datapath's view of ``slot``: the predicted threshold and whether the FIFO is full."""

    def __init__(self, cfg: PPUConfig):
        check_config(cfg)
        super().__init__({"slot": Out(slot_width(cfg)), "tau": In(cfg.tau_w), "full": In(1)})


class FifoStatusSignature(wiring.Signature):
    """Readback of ``slot``: ``entry`` is its ``index``-th entry, oldest first (section 7.1)."""

    def __init__(self, cfg: PPUConfig):
        check_config(cfg)
        super().__init__({
            "slot": Out(slot_width(cfg)), "index": Out(bits_for(cfg.n_f - 1)),
            "tau": In(cfg.tau_w), "count": In(bits_for(cfg.n_f)), "full": In(1), "entry": In(cfg.tau_w),
        })


class ThresholdFifos(wiring.Component):
    """The threshold FIFOs of the PPU's N_SLOTS slots (one per layer), N_F entries each.

    Each slot keeps the last N_F thresholds tau_batch and their running sum; the predicted
    threshold is rne_shift(sum, log2 N_F), the mean of the entries (section 7). A slot's
    entries live at ``fifo<slot>_<i>``; ``clear`` wins over ``push`` in the same cycle."""

    def __init__(self, cfg: PPUConfig):
        self.cfg = check_config(cfg)
        super().__init__({
            "push": In(FifoPushSignature(cfg)),
            "clear": In(FifoClearSignature(cfg)),
            "tau_read": In(TauReadSignature(cfg)),
            "status": In(FifoStatusSignature(cfg)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        c = self.cfg
        nf, ns, tau_w = c.n_f, c.n_slots, c.tau_w
        ptr_w = max(1, c.log2_n_f)
        fifo_cnt = Array(Signal(bits_for(nf), name=f"fifo_cnt{s}") for s in range(ns))
        fifo_wp = Array(Signal(ptr_w, name=f"fifo_wp{s}") for s in range(ns))
        fifo_sum = Array(Signal(tau_w + c.log2_n_f, name=f"fifo_sum{s}") for s in range(ns))
        fifo_mem = Array(Signal(tau_w, name=f"fifo{s}_{i}") for s in range(ns) for i in range(nf))

        def pred(total):
            """rne_shift(sum, log2 N_F): the predicted threshold."""
            if c.log2_n_f == 0:
                return total
            L = c.log2_n_f
            q, rem = total[L:], total[:L]
            half = 1 << (L - 1)
            return (q + ((rem > half) | ((rem == half) & q[0])))[:tau_w]

        def flat(slot, ptr):
            return slot * nf + (ptr & (nf - 1))

        push = self.push
        with m.If(push.en):
            wp, cnt = fifo_wp[push.slot], fifo_cnt[push.slot]
            full = cnt == nf
            oldest = Mux(full, fifo_mem[flat(push.slot, wp)], 0)
            m.d.sync += [
                fifo_mem[flat(push.slot, wp)].eq(push.value),
                fifo_wp[push.slot].eq((wp + 1) & (nf - 1)),
                fifo_sum[push.slot].eq(fifo_sum[push.slot] + push.value - oldest),
                fifo_cnt[push.slot].eq(Mux(full, nf, cnt + 1)),
            ]
        with m.If(self.clear.en):
            s = self.clear.slot
            m.d.sync += [fifo_cnt[s].eq(0), fifo_wp[s].eq(0), fifo_sum[s].eq(0)]
            # one decoded slot, not an Array write per entry: flat(s, i) as a
            # dynamic index made every FIFO register a case over all indices,
            # most of whose arms no slot can reach (dead code in coverage)
            for sl in range(ns):
                with m.If(s == sl):
                    m.d.sync += [fifo_mem[sl * nf + i].eq(0) for i in range(nf)]

        rd = self.tau_read
        m.d.comb += [rd.tau.eq(pred(fifo_sum[rd.slot])), rd.full.eq(fifo_cnt[rd.slot] == nf)]
        st = self.status
        s = st.slot
        pos = (fifo_wp[s] - fifo_cnt[s] + st.index) & (nf - 1)
        m.d.comb += [
            st.tau.eq(pred(fifo_sum[s])),
            st.count.eq(fifo_cnt[s]),
            st.full.eq(fifo_cnt[s] == nf),
            st.entry.eq(fifo_mem[flat(s, pos)]),
        ]
        return m


class PPU(wiring.Component):
    """Row accumulator, requantise/ReLU/prune/compress, g and |g| sums, threshold FIFOs.

    ``cfg``: a PPUConfig (None: the defaults); anything else is a TypeError, and PPUConfig
    itself refuses out-of-range values with a ValueError naming the parameter and its range."""

    def __init__(self, cfg: PPUConfig | None = None):
        self.cfg = PPUConfig() if cfg is None else check_config(cfg)
        self.p = hw_params(self.cfg)
        members = {f"pe{j}": In(stream.Signature(beat_layout(self.p))) for j in range(N_PE)}
        if self.cfg.pingpong:
            members["pe_acc"] = In(N_PE)  # bit j: the accumulator of the beat on pe<j> (with its valid)
        members.update({
            "cmd": In(stream.Signature(ppu_cmd_layout(self.cfg))),
            "out": Out(stream.Signature(entry_layout(self.p))),
            "status_sel": In(ppu_status_sel_layout(self.cfg)),
            "status": Out(ppu_status_layout(self.cfg)),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c, p = self.cfg, self.p
        ns, tau_w = c.n_slots, c.tau_w
        cnt_max = (1 << c.cnt_w) - 1

        acc = [Signal(signed(c.acc_w), name=f"acc{x}") for x in range(c.w_max)]
        # accs[a]: accumulator a (PINGPONG=1 adds a second one); fa: the one FINISH reads
        accs = [acc] + [[Signal(signed(c.acc_w), name=f"acc{a}_{x}") for x in range(c.w_max)]
                        for a in range(1, c.n_acc)]
        fa = Signal(range(c.n_acc), name="fin_acc")
        rng = Signal(32, init=c.seed)
        g_sum = Signal(signed(c.g_w))
        row_nnz = Signal(bits_for(c.w_max))
        relu_mask = Signal(c.w_max)

        # per-slot state (the slots' threshold FIFOs are their own component)
        abs_sum = Array(Signal(c.sum_w, name=f"abs_sum{s}") for s in range(ns))
        layer_nnz = Array(Signal(c.cnt_w, name=f"layer_nnz{s}") for s in range(ns))
        layer_elems = Array(Signal(c.cnt_w, name=f"layer_elems{s}") for s in range(ns))
        m.submodules.fifos = fifos = ThresholdFifos(c)

        # latched command fields
        r_slot = Signal(slot_width(c))
        r_len = Signal(p.off_w)
        r_shift = Signal(bits_for(c.acc_w - 1))
        r_relu, r_acc_g, r_prune = Signal(), Signal(), Signal()
        r_cm = Signal(C_M_BITS)
        r_cshift = Signal(bits_for(C_SHIFT_MAX))
        r_tau_ext = Signal()
        r_tau = Signal(tau_w)
        pending = Signal(N_PE)
        x = Signal(p.off_w)

        # output register and the held (most recent, not yet sent) non-zero
        out_valid = Signal()
        out_value = Signal(signed(c.dw))
        out_offset = Signal(p.off_w)
        out_last = Signal()
        held_valid = Signal()
        held_value = Signal(signed(c.dw))
        held_offset = Signal(p.off_w)
        out_free = ~out_valid | self.out.ready
        m.d.comb += [
            self.out.valid.eq(out_valid),
            self.out.payload.value.eq(out_value),
            self.out.payload.offset.eq(out_offset),
            self.out.payload.last.eq(out_last),
        ]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += out_valid.eq(0)

        # FIFO push, shared by END_BATCH and PUSH_TAU
        push = fifos.push

        # ---------------------------------------------------------------- FINISH datapath
        v = acc[0] if c.n_acc == 1 else Mux(fa, accs[1][0], accs[0][0])
        r = Signal(signed(c.acc_w + 1))
        m.d.comb += r.eq(_rne_shift(v, r_shift))
        q_sat = Signal(signed(c.dw))
        m.d.comb += q_sat.eq(_sat_signed(r, c.dw))
        q = Signal(signed(c.dw))
        m.d.comb += q.eq(Mux(r_relu & (q_sat < 0), 0, q_sat))
        absq = Signal(tau_w)
        m.d.comb += absq.eq(Mux(q < 0, -q, q))
        tau = Signal(tau_w)
        m.d.comb += [fifos.tau_read.slot.eq(r_slot), tau.eq(fifos.tau_read.tau)]
        prune_on = r_prune & fifos.tau_read.full
        need_r = Signal()
        m.d.comb += need_r.eq(prune_on & (absq != 0) & (absq < tau))
        rng_next = Signal(32)
        m.d.comb += rng_next.eq(xorshift32_next(rng))
        rand = rng_next[32 - c.r_w:]
        keep_tau = (absq << c.r_w) > (tau * rand)
        pruned = Signal(signed(c.dw))
        m.d.comb += pruned.eq(Mux(need_r, Mux(keep_tau, Mux(q < 0, -tau, tau), 0), q))
        nz = pruned != 0

        # ---------------------------------------------------------------- beats
        pes = [getattr(self, f"pe{j}") for j in range(N_PE)]

        def align_beats(take):
            """Each taken beat's lanes at its columns (W_MAX lanes): a barrel shifter in whole lanes."""
            width = c.w_max * c.acc_w
            aligned = []
            for j, pe in enumerate(pes):
                b = pe.payload
                vec = Cat(*[Mux(take[j] & (k < b.count), b.lanes[k], 0).as_unsigned()
                            for k in range(c.k_max)])
                for i in range(p.off_w):
                    step = (1 << i) * c.acc_w
                    shifted = Cat(Const(0, step), vec)[:width] if step < width else Const(0, width)
                    # a named signal per stage: Amaranth re-emits unnamed expressions per use
                    stage = Signal(width, name=f"align{j}_{i}")
                    m.d.comb += stage.eq(Mux(b.base[i], shifted, vec))
                    vec = stage
                aligned.append(vec)
            return aligned

        cmd = self.cmd.payload
        if c.pingpong:
            # every beat is taken in the cycle it is offered and added into the accumulator its
            # sideband names; a START (in any state that accepts it) preloads its accumulator with
            # the bias in the same update, so a beat of that cycle adds to the bias. The FINISH
            # below overrides the lanes of the accumulator it reads (no beat may go there).
            take = [Signal(name=f"take{j}") for j in range(N_PE)]
            for j, pe in enumerate(pes):
                m.d.comb += [pe.ready.eq(1), take[j].eq(pe.valid)]
            aligned = align_beats(take)
            start_hit = Signal()
            m.d.comb += start_hit.eq(self.cmd.valid & self.cmd.ready & (cmd.op == PpuOp.START))
            for a, ac in enumerate(accs):
                preload = Signal(name=f"preload{a}")
                m.d.comb += preload.eq(start_hit & (cmd.acc == a))
                for col in range(c.w_max):
                    lo, hi = col * c.acc_w, (col + 1) * c.acc_w
                    base = Mux(preload, cmd.bias, ac[col])
                    total = base + sum(Mux(self.pe_acc[j] == a, al[lo:hi].as_signed(), 0)
                                       for j, al in enumerate(aligned))
                    m.d.sync += ac[col].eq(_sat_signed(total, c.acc_w))

        # ---------------------------------------------------------------- control
        with m.FSM(name="ppu_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    with m.Switch(cmd.op):
                        with m.Case(PpuOp.START):
                            if not c.pingpong:  # PINGPONG=1: the lane update below (any state)
                                m.d.sync += [a.eq(cmd.bias) for a in acc]
                        with m.Case(PpuOp.ACCUM):
                            if not c.pingpong:  # PINGPONG=1: beats are taken at any time, a no-op
                                m.d.sync += pending.eq(cmd.pe_mask)
                                with m.If(cmd.pe_mask != 0):
                                    m.next = "ACCUM"
                        with m.Case(PpuOp.FINISH):
                            if c.pingpong:
                                m.d.sync += fa.eq(cmd.acc)
                            m.d.sync += [
                                r_slot.eq(cmd.slot), r_len.eq(cmd.length), r_shift.eq(cmd.shift),
                                r_relu.eq(cmd.relu), r_acc_g.eq(cmd.acc_g), r_prune.eq(cmd.prune),
                                x.eq(0), row_nnz.eq(0), relu_mask.eq(0),
                            ]
                            with m.If(cmd.g_first):
                                m.d.sync += g_sum.eq(0)
                            with m.If(cmd.length == 0):
                                m.next = "FLUSH"
                            with m.Else():
                                m.next = "SCAN"
                        with m.Case(PpuOp.END_BATCH):
                            m.d.sync += [r_slot.eq(cmd.slot), r_cm.eq(cmd.c_m), r_cshift.eq(cmd.c_shift),
                                         r_tau_ext.eq(cmd.tau_ext), r_tau.eq(cmd.value[:tau_w])]
                            m.next = "END_BATCH"
                        with m.Case(PpuOp.PUSH_TAU):
                            m.d.comb += [push.en.eq(1), push.slot.eq(cmd.slot), push.value.eq(cmd.value[:tau_w])]
                        with m.Case(PpuOp.CLEAR_SLOT):
                            s = cmd.slot
                            m.d.sync += [abs_sum[s].eq(0), layer_nnz[s].eq(0), layer_elems[s].eq(0)]
                            m.d.comb += [fifos.clear.en.eq(1), fifos.clear.slot.eq(s)]
                        with m.Case(PpuOp.CLEAR_COUNTS):
                            m.d.sync += [layer_nnz[cmd.slot].eq(0), layer_elems[cmd.slot].eq(0)]
                        with m.Case(PpuOp.SEED):
                            m.d.sync += rng.eq(Mux(cmd.value == 0, c.seed, cmd.value))

            if not c.pingpong:  # PINGPONG=1 takes beats at any time (above)
                with m.State("ACCUM"):
                    take = [Signal(name=f"take{j}") for j in range(N_PE)]
                    done = Signal(N_PE)
                    for j, pe in enumerate(pes):
                        m.d.comb += [pe.ready.eq(pending[j]), take[j].eq(pe.valid & pending[j]),
                                     done[j].eq(take[j] & pe.payload.last)]
                    aligned = align_beats(take)
                    for col in range(c.w_max):
                        lo, hi = col * c.acc_w, (col + 1) * c.acc_w
                        total = acc[col] + sum(a[lo:hi].as_signed() for a in aligned)
                        m.d.sync += acc[col].eq(_sat_signed(total, c.acc_w))
                    m.d.sync += pending.eq(pending & ~done)
                    with m.If((pending & ~done) == 0):
                        m.next = "IDLE"

            with m.State("SCAN"):
                with m.If(~nz | ~held_valid | out_free):
                    with m.If(x + 1 >= r_len):
                        m.next = "FLUSH"
                    for a, ac in enumerate(accs):  # shift the finishing accumulator by one column
                        with _when(m, fa == a, c.n_acc > 1):
                            m.d.sync += [ac[i].eq(ac[i + 1]) for i in range(c.w_max - 1)]
                            m.d.sync += ac[-1].eq(0)
                    m.d.sync += [x.eq(x + 1), relu_mask.bit_select(x, 1).eq(q > 0)]
                    with m.If(need_r):
                        m.d.sync += rng.eq(rng_next)
                    with m.If(r_acc_g):
                        m.d.sync += [g_sum.eq(_sat_signed(g_sum + q, c.g_w)),
                                     abs_sum[r_slot].eq(_sat_unsigned(abs_sum[r_slot] + absq, c.sum_w))]
                    elems = layer_elems[r_slot]
                    m.d.sync += elems.eq(Mux(elems == cnt_max, cnt_max, elems + 1))
                    with m.If(nz):
                        nnz = layer_nnz[r_slot]
                        m.d.sync += [row_nnz.eq(row_nnz + 1), nnz.eq(Mux(nnz == cnt_max, cnt_max, nnz + 1)),
                                     held_valid.eq(1), held_value.eq(pruned), held_offset.eq(x)]
                        with m.If(held_valid):
                            m.d.sync += [out_valid.eq(1), out_value.eq(held_value),
                                         out_offset.eq(held_offset), out_last.eq(0)]

            with m.State("FLUSH"):
                with m.If(out_free):
                    m.d.sync += [out_valid.eq(1), out_last.eq(1), held_valid.eq(0),
                                 out_value.eq(Mux(held_valid, held_value, 0)),
                                 out_offset.eq(Mux(held_valid, held_offset, p.off_end))]
                    for a, ac in enumerate(accs):
                        with _when(m, fa == a, c.n_acc > 1):
                            m.d.sync += [lane.eq(0) for lane in ac]
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                with m.If(self.out.ready):
                    m.next = "IDLE"

            with m.State("END_BATCH"):
                prod = Signal(C_M_BITS + c.sum_w)
                rounded = Signal(C_M_BITS + c.sum_w + 1)
                m.d.comb += [prod.eq(r_cm * abs_sum[r_slot]), rounded.eq(_rne_shift(prod, r_cshift))]
                tb = _sat_unsigned(rounded, tau_w)
                m.d.comb += [push.en.eq(1), push.slot.eq(r_slot), push.value.eq(Mux(r_tau_ext, r_tau, tb))]
                m.d.sync += abs_sum[r_slot].eq(0)
                m.next = "IDLE"

        if c.pingpong:
            # while a FINISH runs, a START of the other accumulator is accepted as well
            with m.If(fsm.ongoing("SCAN") | fsm.ongoing("FLUSH") | fsm.ongoing("DRAIN")):
                m.d.comb += self.cmd.ready.eq((cmd.op == PpuOp.START) & (cmd.acc != fa))

        # ---------------------------------------------------------------- readback
        sel, st = self.status_sel, self.status
        s = sel.slot
        m.d.comb += [fifos.status.slot.eq(s), fifos.status.index.eq(sel.index)]
        m.d.comb += [
            st.busy.eq(~fsm.ongoing("IDLE")),
            st.row_nnz.eq(row_nnz),
            st.g_sum.eq(g_sum),
            st.relu_mask.eq(relu_mask),
            st.rng_state.eq(rng),
            st.abs_sum.eq(abs_sum[s]),
            st.tau_pred.eq(fifos.status.tau),
            st.fifo_count.eq(fifos.status.count),
            st.fifo_full.eq(fifos.status.full),
            st.layer_nnz.eq(layer_nnz[s]),
            st.layer_elems.eq(layer_elems[s]),
            st.fifo_entry.eq(fifos.status.entry),
        ]
        return m


BLOCK = BlockSpec(
    name="ppu",
    help="post-processing unit of a PE group (accumulate, requantise, ReLU, prune, compress, "
         "threshold FIFOs), docs/architecture.md sections 7 and 7.1",
    params={
        **DATAPATH_PARAMS,
        "K_MAX": ParamSpec(DATAPATH_PARAMS["K_MAX"].default, "lanes of a PE beat (1 .. 16)"),
        "W_MAX": ParamSpec(DATAPATH_PARAMS["W_MAX"].default, "row accumulator lanes, longest row (2 .. 4096, >= K_MAX)"),
        "N_F": ParamSpec(4, "threshold FIFO depth (power of two, 1 .. 64)"),
        "N_SLOTS": ParamSpec(4, "layers whose pruning state the PPU keeps (1 .. 64)"),
        "R_W": ParamSpec(16, "bits of the pruning random number (8 .. 24)"),
        "SEED": ParamSpec(DEFAULT_SEED, "xorshift32 reset seed (1 .. 2**32-1)"),
        "SUM_W": ParamSpec(None, "sum|g| accumulator width (DW-1 .. 64; default min(64, DW+24))"),
        "G_W": ParamSpec(None, "bias-gradient accumulator width (DW .. 64; default min(64, DW+24))"),
        "CNT_W": ParamSpec(32, "non-zero / element counter width (8 .. 64)"),
        "PINGPONG": ParamSpec(0, "two row accumulators, a FINISH overlaps the next row's beats (0 .. 1, "
                                 "docs/architecture.md 12.3)"),
    },
    params_class=PPUConfig,
    make=PPU,
)
