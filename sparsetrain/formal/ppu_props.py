"""Formal harness of the PPU (hw/ppu.py) against docs/architecture.md sections 7 and 7.1.

Environment (assumptions): the command and PE beat streams obey the stream rule; a
command's ``slot`` is below ``N_SLOTS``, a ``START`` bias lies in +-(2**(ACC_W-1)-1) and a
``FINISH`` length is at most ``W_MAX`` (the core refuses anything else, section 11.3).
Everything else is free, including every ``ready`` of ``out`` and ``status_sel``.

Property groups: ``stream`` (``out`` obeys the stream rule), ``acc`` (every ACCUM cycle
sets each column to the saturated exact sum of its old value and the cycle's contributions,
computed here from the beats' ``base``/``count``/``lanes`` independently of the RTL's
shifter; START loads the bias; FINISH leaves the accumulator zero), ``sat`` (every lane
stays in +-(2**(ACC_W-1)-1); beats are taken only during ACCUM; sum|g| and the counters
never wrap: they only fall when cleared),
``fifo`` (``tau_pred`` is ``rne_shift(sum of the FIFO's entries, log2 N_F)``, the running
sum equals the sum of the entries, ``fifo_full``/``fifo_count`` are "N_F pushes since the
slot was cleared"), ``rng`` (the xorshift state is never 0 and every change is the
reference step, taken only for a value that needs R, or a SEED load), ``prune`` (a
pruned value is 0, +-tau or the requantised value; 0 stays 0; values that need no R pass
unchanged), ``row`` (the compressed row has non-zero values at increasing offsets below
``length``, or is the empty-row marker alone),
``cover`` (each command accepted and finished, each pruning outcome, a full FIFO, a
saturated lane).
"""
from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cover, Mux, Signal, signed

from ..arch.ppu import N_PE, Op, PPUConfig
from ..hw.ppu import PPU
from .props import Harness, check_groups, probe

GROUPS = ("stream", "acc", "sat", "fifo", "rng", "prune", "row", "cover")

# Small configuration: 4 columns, 2 lanes per beat, 2 slots of a 2-deep FIFO, the narrowest
# legal sums and counters (so their saturation is reachable), 8-bit random numbers.
PPU_SMALL = PPUConfig(dw=4, k_max=2, w_max=4, acc_w=9, n_f=2, n_slots=2, r_w=8, sum_w=5, g_w=5, cnt_w=8)


def xorshift32_ref(x):
    """Marsaglia's xorshift32 (13, 17, 5) written from section 7 (the harness's reference step)."""
    x1 = (x ^ (x << 13))[:32]
    x2 = (x1 ^ (x1 >> 17))[:32]
    return (x2 ^ (x2 << 5))[:32]


def rne_shift_ref(v, s: int):
    """Round-half-to-even ``v / 2**s`` for an unsigned ``v`` and a constant ``s``."""
    if s == 0:
        return v
    q, rem, half = v >> s, v[:s], 1 << (s - 1)
    return q + ((rem > half) | ((rem == half) & q[0]))


def fsm_states(state: Signal) -> dict[str, int]:
    """Name -> encoding of an Amaranth FSM state signal (from its decoder, "NAME/value")."""
    names = {}
    for v in range(1 << len(state)):
        try:
            text = state.decoder(v) if state.decoder else ""
        except KeyError:  # values past the last state
            continue
        if "/" in text:
            names[text.rsplit("/", 1)[0]] = v
    return names


def longest_command(c: PPUConfig) -> int:
    """Occupancy of the longest command without stalls (FINISH of W_MAX columns, section 7.1)."""
    return c.w_max + 3


def ppu_harness(c: PPUConfig = PPU_SMALL, groups: tuple[str, ...] = GROUPS, ppu_cls=PPU) -> Harness:
    check_groups(groups, GROUPS)
    h = Harness()
    m = h.m
    dut = ppu_cls(c)
    sig = h.add_dut("ppu", dut)
    pes = [getattr(dut, f"pe{j}") for j in range(N_PE)]
    cmd, out, st = dut.cmd, dut.out, dut.status
    for j, pe in enumerate(pes):
        h.stream_rule(pe, f"pe{j}", kind=Assume)
    h.stream_rule(cmd, "cmd", kind=Assume)
    lim = (1 << (c.acc_w - 1)) - 1
    cp = cmd.payload
    with m.If(cmd.valid):
        m.d.comb += Assume(cp.slot < c.n_slots)
        with m.If(cp.op == Op.START):
            m.d.comb += Assume((cp.bias >= -lim) & (cp.bias <= lim))
        with m.If(cp.op == Op.FINISH):
            m.d.comb += Assume(cp.length <= c.w_max)

    cmd_hs = cmd.valid & cmd.ready
    out_hs = out.valid & out.ready
    acc = [probe(sig, f"acc{x}") for x in range(c.w_max)]
    ns, nf = c.n_slots, c.n_f

    # ---- which command is running (black box: from the command stream and cmd.ready)
    running = Signal(3)
    active = Signal()
    with m.If(cmd_hs):
        m.d.sync += [running.eq(cp.op), active.eq(1)]
    with m.Elif(cmd.ready):
        m.d.sync += active.eq(0)
    busy_op = Signal()   # the accepted command is still running in this cycle
    m.d.comb += busy_op.eq(active & ~cmd.ready)
    past_busy = h.past(busy_op, "busy_op")
    past_running = h.past(running, "running")
    past_cmd_hs = h.past(cmd_hs, "cmd_hs")
    past_cmd = h.past(cp, "cmd")
    past_cmd_v = cp.shape()(past_cmd)

    # Inductive invariants: the harness's view of the running command against the PPU's FSM
    # (needed by k-induction; true properties in their own right).
    fsm = probe(sig, "ppu_fsm_state")
    fs = fsm_states(fsm)
    r_slot = probe(sig, "r_slot")
    in_state = {name: fsm == v for name, v in fs.items()}
    m.d.comb += [
        Assert(fsm < len(fs)),
        Assert(busy_op == (fsm != fs["IDLE"])),
        Assert(~busy_op | (running == Op.ACCUM) | (running == Op.FINISH) | (running == Op.END_BATCH)),
        Assert(~busy_op | ((running == Op.ACCUM) == in_state["ACCUM"])),
        Assert(~busy_op | ((running == Op.END_BATCH) == in_state["END_BATCH"])),
        Assert(r_slot < c.n_slots),
    ]

    if "stream" in groups:
        h.stream_rule(out, "out", kind=Assert)

    in_accum = busy_op & (running == Op.ACCUM)
    if "acc" in groups:
        # contributions of this cycle's accepted beats, column by column (section 7.1)
        contrib = []
        for x in range(c.w_max):
            terms = []
            for pe in pes:
                b = pe.payload
                for i in range(c.k_max):
                    hit = pe.valid & pe.ready & (b.base + i == x) & (i < b.count)
                    terms.append(Mux(hit, b.lanes[i], 0))
            s = Signal(signed(c.acc_w + 3), name=f"h_contrib{x}")
            m.d.comb += s.eq(sum(terms))
            contrib.append(s)
        past_accum = h.past(in_accum, "accum")
        for x in range(c.w_max):
            pa = h.past(acc[x], f"acc{x}").as_signed()
            pc = h.past(contrib[x], f"contrib{x}").as_signed()
            tot = Signal(signed(c.acc_w + 4), name=f"h_total{x}")
            m.d.comb += tot.eq(pa + pc)
            with m.If(h.past_valid & past_accum):
                m.d.comb += Assert(acc[x] == Mux(tot > lim, lim, Mux(tot < -lim, -lim, tot)))
            with m.If(h.past_valid & past_cmd_hs & (past_cmd_v.op == Op.START)):
                m.d.comb += Assert(acc[x] == past_cmd_v.bias)
            with m.If(h.past_valid & past_busy & (past_running == Op.FINISH) & cmd.ready):
                m.d.comb += Assert(acc[x] == 0)
            with m.If(in_state["DRAIN"]):
                m.d.comb += Assert(acc[x] == 0)

    if "acc" in groups or "sat" in groups:
        for x in range(c.w_max):
            m.d.comb += Assert((acc[x] >= -lim) & (acc[x] <= lim))

    if "sat" in groups:
        # beats are taken only during ACCUM
        for pe in pes:
            with m.If(pe.ready):
                m.d.comb += Assert(in_accum)
        # sum|g| and the counters never wrap: they only fall when the slot is cleared
        for s in range(ns):
            cleared = past_cmd_hs & (past_cmd_v.slot == s) & (
                (past_cmd_v.op == Op.CLEAR_SLOT) | (past_cmd_v.op == Op.CLEAR_COUNTS))
            eb = h.past(busy_op & (running == Op.END_BATCH) & (probe(sig, "r_slot") == s), f"eb{s}")
            for name in (f"abs_sum{s}", f"layer_nnz{s}", f"layer_elems{s}"):
                v = probe(sig, name)
                pv = h.past(v, name)
                exempt = cleared | (eb if name.startswith("abs_sum") else 0)
                with m.If(h.past_valid & ~exempt):
                    m.d.comb += Assert(v >= pv)

    if "fifo" in groups:
        pushes = [Signal(range(nf + 1), name=f"h_pushes{s}") for s in range(ns)]
        for s in range(ns):
            entries = [probe(sig, f"fifo{s}_{i}") for i in range(nf)]
            total = Signal(c.tau_w + c.log2_n_f + 1, name=f"h_fifo_total{s}")
            m.d.comb += total.eq(sum(entries))
            m.d.comb += Assert(probe(sig, f"fifo_sum{s}") == total)
            # invariants: the count is the pushes seen (one behind while END_BATCH pushes), and a
            # FIFO that is not full holds its entries at 0 .. count-1, zeros above
            cnt, wp = probe(sig, f"fifo_cnt{s}"), probe(sig, f"fifo_wp{s}")
            eb_here = in_state["END_BATCH"] & (r_slot == s)
            m.d.comb += Assert((cnt <= nf) & ((cnt == pushes[s]) |
                               (eb_here & ((cnt + 1 == pushes[s]) | ((cnt == nf) & (pushes[s] == nf))))))
            with m.If(cnt < nf):
                m.d.comb += Assert(wp == cnt)
                for i in range(nf):
                    with m.If(cnt <= i):
                        m.d.comb += Assert(entries[i] == 0)
            with m.If(dut.status_sel.slot == s):
                m.d.comb += Assert(st.tau_pred == rne_shift_ref(total, c.log2_n_f)[:c.tau_w])
                with m.If(cmd.ready):
                    m.d.comb += [Assert(st.fifo_full == (pushes[s] == nf)),
                                 Assert(st.fifo_count == pushes[s])]
            with m.If(cmd_hs & (cp.slot == s)):
                with m.If(cp.op == Op.CLEAR_SLOT):
                    m.d.sync += pushes[s].eq(0)
                with m.If(((cp.op == Op.PUSH_TAU) | (cp.op == Op.END_BATCH)) & (pushes[s] != nf)):
                    m.d.sync += pushes[s].eq(pushes[s] + 1)

    need_r = probe(sig, "need_r")
    if "rng" in groups:
        rng = st.rng_state
        prng = h.past(rng, "rng")
        past_need = h.past(need_r & busy_op & (running == Op.FINISH), "need_r")
        m.d.comb += Assert(rng != 0)
        seeded = past_cmd_hs & (past_cmd_v.op == Op.SEED)
        with m.If(h.past_valid & seeded):
            m.d.comb += Assert(rng == Mux(past_cmd_v.value == 0, c.seed, past_cmd_v.value))
        with m.If(h.past_valid & ~seeded & (rng != prng)):
            m.d.comb += Assert(past_need & (rng == xorshift32_ref(prng)))

    q, tau, pruned = probe(sig, "q"), probe(sig, "tau"), probe(sig, "pruned")
    if "prune" in groups:
        m.d.comb += Assert((pruned == 0) | (pruned == q) | (pruned == tau) | (pruned == -tau))
        with m.If(q == 0):
            m.d.comb += Assert(pruned == 0)
        with m.If(~need_r):
            m.d.comb += Assert(pruned == q)
        with m.If(need_r):
            m.d.comb += Assert((pruned == 0) | (pruned == Mux(q < 0, -tau, tau)))

    if "row" in groups:
        # the compressed row (section 3): non-zero values at increasing offsets below length
        r_len = probe(sig, "r_len")
        prev_off, any_out = Signal(len(out.payload.offset)), Signal()
        with m.If(out_hs):
            m.d.sync += [prev_off.eq(out.payload.offset), any_out.eq(~out.payload.last)]
        with m.If(out.valid):
            e = out.payload
            marker = e.offset == (1 << len(e.offset)) - 1
            m.d.comb += Assert(Mux(marker, e.last & (e.value == 0) & ~any_out,
                                   (e.value != 0) & (e.offset < r_len) & (~any_out | (e.offset > prev_off))))

    if "cover" in groups:
        finished = h.past_valid & past_busy & cmd.ready
        for op in Op:
            if op in (Op.ACCUM, Op.FINISH, Op.END_BATCH):
                extra = (past_running == op) & finished
            else:
                extra = cmd_hs & (cp.op == op)
            m.d.comb += Cover(extra)
        prune_on = need_r & busy_op & (running == Op.FINISH)
        m.d.comb += [
            Cover(prune_on & (pruned == 0)),
            Cover(prune_on & (pruned != 0)),
            Cover(st.fifo_full),
            Cover(acc[0] == lim),
            Cover(out_hs & ~out.payload.last & h.past(out_hs, "out_hs")),
        ]
    return h
