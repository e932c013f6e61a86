"""Formal harness of the PE (hw/pe.py) against docs/architecture.md sections 3, 4 and 6.

Environment (assumptions): every input stream obeys the stream rule, and the rows on
Port-1 (and on Port-2 in OSRC) are rows of section 3 (offsets strictly increasing and below
the row length, or the single empty-row marker). Everything else is free: cfg values (in or
out of range), data, weights, masks, and the ``ready`` of ``out`` on every cycle.

Property groups (``groups``):

* ``stream``: ``out`` obeys the stream rule (valid held, payload stable until ready).
* ``contract``: one op at a time (``cfg.ready`` exactly while idle); ports read only in their
  phase and never past a row's ``last`` entry; at most one progress handshake per cycle;
  at the final beat the progress cycles equal section 6's table for the K, N1, N2 seen;
  no stall cycle while every port keeps up; the final beat is offered in the cycle after
  the last input entry; a retire beat leaves only with its Port-1 entry and is never
  dropped (no beat lost or duplicated); beats cover disjoint, increasing columns inside
  ``out_len``, with ``count <= K``.
* ``lanes``: lanes at and above ``count`` are 0 and no lane leaves +-(2**(ACC_W-1)-1)
  (saturation, never a wrap).
* ``refusal``: an out-of-range cfg reads no port, offers ``base = 0, count = 0, last`` in
  the next cycle, and ``cfg_error`` equals "the last accepted cfg was out of range".
* ``cover``: each mode completes an op with work in it, a refused op, a back-pressured
  retire beat, back-to-back ops.
"""
from __future__ import annotations

from amaranth.hdl import Array, Assert, Assume, Cat, Cover, Mux, Signal

from ..arch.pe import HwParams
from ..arch.timing import Mode, pe_cycles
from ..hw.pe import FIRST_GEN_STATES, MODE_MSRC, MODE_OSRC, MODE_SRC, PE
from .props import Harness, check_groups, popcount, probe

GROUPS = ("stream", "contract", "lanes", "refusal", "cover")

# The small configuration of the PE proofs (every field still exercised: 3 lanes, 2-bit k,
# 4-bit offsets with the marker, ACC_W at its minimum 2*DW+1 so saturation is reachable).
PE_SMALL = HwParams(dw=4, k_max=3, w_max=8, acc_w=9)


def fsm_encoding(state) -> dict[str, int]:
    """State name -> code of an Amaranth FSM state register (from its decoder, "NAME/code")."""
    code = {}
    for v in range(1 << len(state)):
        try:
            name = state.decoder(v)
        except KeyError:  # past the last state
            break
        code[name.split("/")[0]] = v
    return code


def longest_op(p: HwParams) -> int:
    """Cycles of the longest stall-free op of ``p`` (section 6; rows hold at most W_MAX entries)."""
    return max(pe_cycles(Mode.SRC, p.k_max, p.w_max), pe_cycles(Mode.MSRC, p.k_max, p.w_max),
               pe_cycles(Mode.OSRC, p.k_max, p.w_max, p.w_max))


def pe_harness(p: HwParams = PE_SMALL, groups: tuple[str, ...] = GROUPS, pe_cls=PE) -> Harness:
    check_groups(groups, GROUPS)
    h = Harness()
    m = h.m
    dut = pe_cls(p)
    sig = h.add_dut("pe", dut)
    cfg, p1, p2, p3, out = dut.cfg, dut.port1, dut.port2, dut.port3, dut.out
    for name in ("cfg", "port1", "port2", "port3"):
        h.stream_rule(getattr(dut, name), name, kind=Assume)

    cfg_hs, p1_hs, p2_hs, p3_hs = (s.valid & s.ready for s in (cfg, p1, p2, p3))
    out_hs = out.valid & out.ready
    final_hs = out_hs & out.payload.last
    progress = p1_hs | p2_hs | p3_hs | final_hs
    c = cfg.payload
    cfg_bad = ((c.mode == 3) | (c.k == 0) | (c.k > p.k_max) | (c.pad >= c.k) | (c.in_len == 0) |
               (c.in_len > p.w_max) | (c.out_len == 0) | (c.out_len > p.w_max))

    # ---- the harness's record of the op in flight
    busy, bad, err_model = Signal(), Signal(), Signal()
    mode = Signal(2)
    k = Signal(len(c.k))
    in_len, out_len = Signal(p.off_w), Signal(p.off_w)
    cnt_w = p.off_w + 2
    n1, n2, n3, prog, beats = (Signal(cnt_w, name=f"h_{n}") for n in ("n1", "n2", "n3", "prog", "beats"))
    p1_last, p2_last = Signal(), Signal()
    p1_prev, p2_prev = Signal(p.off_w), Signal(p.off_w)
    next_col = Signal(p.off_w + 2)
    with m.If(cfg_hs):
        m.d.sync += [busy.eq(1), bad.eq(cfg_bad), err_model.eq(cfg_bad), mode.eq(c.mode), k.eq(c.k),
                     in_len.eq(c.in_len), out_len.eq(c.out_len), n1.eq(0), n2.eq(0), n3.eq(0),
                     prog.eq(1), beats.eq(0), p1_last.eq(0), p2_last.eq(0), next_col.eq(0)]
    with m.Else():
        with m.If(p1_hs):
            m.d.sync += [n1.eq(n1 + 1), p1_prev.eq(p1.payload.offset), p1_last.eq(p1.payload.last)]
        with m.If(p2_hs):
            m.d.sync += [n2.eq(n2 + 1), p2_prev.eq(p2.payload.offset), p2_last.eq(p2.payload.last)]
        with m.If(p3_hs):
            m.d.sync += n3.eq(n3 + 1)
        with m.If(progress):
            m.d.sync += prog.eq(prog + 1)
        with m.If(out_hs):
            m.d.sync += beats.eq(beats + 1)
            with m.If(out.payload.count != 0):
                m.d.sync += next_col.eq(out.payload.base + out.payload.count)
        with m.If(final_hs):
            m.d.sync += busy.eq(0)

    # ---- environment: rows of section 3 on Port-1 (length in_len) and, in OSRC, Port-2 (out_len)
    def row_rule(port, n, prev, row_len, used):
        e = port.payload
        marker = e.offset == p.off_end
        with m.If(busy & used & port.valid):
            m.d.comb += Assume((marker & e.last & (e.value == 0) & (n == 0)) |
                               (~marker & (e.offset < row_len) & ((n == 0) | (e.offset > prev))))
    row_rule(p1, n1, p1_prev, in_len, ~p1_last)
    row_rule(p2, n2, p2_prev, out_len, (mode == MODE_OSRC) & ~p2_last)

    osrc = mode == MODE_OSRC
    p1_done_now = p1_last | (p1_hs & p1.payload.last)
    p2_done_now = p2_last | (p2_hs & p2.payload.last)
    inputs_done_now = Signal()
    m.d.comb += inputs_done_now.eq(busy & ~bad & Mux(osrc, p1_done_now & p2_done_now & ~(p1_last & p2_last),
                                                      p1_hs & p1.payload.last))
    past_inputs_done = h.past(inputs_done_now, "inputs_done")
    past_bad_cfg = h.past(cfg_hs & cfg_bad, "bad_cfg")
    lim = (1 << (p.acc_w - 1)) - 1
    b = out.payload

    if "stream" in groups:
        h.stream_rule(out, "out", kind=Assert)

    if "contract" in groups:
        m.d.comb += [
            Assert(cfg.ready == ~busy),
            Assert(~out.valid | busy),
            Assert(~p3.ready | (busy & ~bad & (mode == MODE_MSRC) & (n3 == 0))),
            Assert(~p2.ready | (busy & ~bad & Mux(osrc, ~p2_last,
                                                  (n2 < k) & ((mode == MODE_SRC) | (n3 == 1))))),
            Assert(~p1.ready | (busy & ~bad & ~p1_last & (osrc | (n2 == k)))),
            Assert(popcount([cfg_hs, p1_hs, p2_hs, p3_hs, final_hs]) <= 1),
        ]
        table = Mux(bad, 2, Mux(osrc, pe_cycles(Mode.OSRC, 0, 1, 1) - 2 + n1 + n2,
                                Mux(mode == MODE_MSRC, pe_cycles(Mode.MSRC, 0, 1) - 1 + k + n1,
                                    pe_cycles(Mode.SRC, 0, 1) - 1 + k + n1)))
        with m.If(final_hs):
            m.d.comb += Assert(prog + 1 == table)
            with m.If(~bad):
                m.d.comb += Assert(p1_last & Mux(osrc, p2_last, (n2 == k) & (n3 == (mode == MODE_MSRC))))
        # no stall cycle while every port keeps up
        with m.If(busy & p1.valid & p2.valid & p3.valid & out.ready):
            m.d.comb += Assert(progress)
        # the final beat follows the last input entry at once, and never comes before it
        with m.If(h.past_valid & past_inputs_done):
            m.d.comb += Assert(out.valid & b.last)
        with m.If(out.valid & b.last & ~bad):
            m.d.comb += Assert(p1_last & (~osrc | p2_last))
        # retire beats: only with their Port-1 entry; an entry that carries a beat waits for it
        with m.If(out.valid & ~b.last):
            m.d.comb += Assert(p1.valid & busy & ~bad & ~osrc)
        with m.If(out_hs & ~b.last):
            m.d.comb += Assert(p1_hs)
        with m.If(p1_hs & out.valid):
            m.d.comb += Assert(out.ready)
        # beat geometry
        with m.If(out.valid):
            m.d.comb += Assert(b.count <= k)
            with m.If(~bad & ~osrc & (b.count != 0)):
                m.d.comb += Assert((b.base >= next_col) & (b.base + b.count <= out_len))
            with m.If(~bad & osrc):
                m.d.comb += Assert(b.last & (b.base == 0) & (b.count == k))

    if "contract" in groups or "refusal" in groups:
        # Inductive invariants: the harness's record of the op against the PE's own registers
        # (hw/pe.py's FSM register ``state_state``; its encoding is read from the FSM's
        # decoder, so the properties name the states). They make k-induction close, so the
        # contract is proved for every reachable state, not only to a depth.
        st = probe(sig, "state_state")
        code = fsm_encoding(st)
        assert set(code) == set(FIRST_GEN_STATES), code
        i_mode, i_k, i_err, i_olen = (probe(sig, n) for n in ("mode", "k", "error", "out_len"))
        wcnt, p1done, p2done, base = (probe(sig, n) for n in ("wcnt", "p1done", "p2done", "base"))
        msrc = mode == MODE_MSRC
        m.d.comb += [Assert(popcount([st == v for v in code.values()]) == 1),
                     Assert(busy == (st != code["IDLE"]))]
        with m.If(busy):
            m.d.comb += Assert((i_mode == mode) & (i_k == k) & (i_err == bad) & (i_olen == out_len) &
                               (n3 <= msrc))
            with m.If(bad):
                m.d.comb += Assert((st == code["FINAL"]) & (prog == 1) & (n1 == 0) & (n2 == 0) & (n3 == 0))
            with m.Else():
                m.d.comb += [Assert(prog == 1 + n1 + n2 + n3), Assert(mode != 3),
                             Assert((k >= 1) & (k <= p.k_max) & (out_len >= 1) & (out_len <= p.w_max) &
                                    (in_len >= 1) & (in_len <= p.w_max))]
                with m.If(n1 == 0):
                    m.d.comb += Assert(~p1_last)
                with m.If(osrc & (n2 == 0)):
                    m.d.comb += Assert(~p2_last)
                with m.If(n1 != 0):
                    m.d.comb += Assert(((p1_prev < in_len) & (n1 <= p1_prev + 1)) |
                                       ((p1_prev == p.off_end) & (n1 == 1) & p1_last))
                with m.If(osrc & (n2 != 0)):
                    m.d.comb += Assert(((p2_prev < out_len) & (n2 <= p2_prev + 1)) |
                                       ((p2_prev == p.off_end) & (n2 == 1) & p2_last))
                with m.If(~osrc):
                    m.d.comb += [Assert(n2 <= k), Assert(next_col <= base)]
                with m.Switch(st):
                    with m.Case(code["MASK"]):
                        m.d.comb += Assert(msrc & (n3 == 0) & (n2 == 0) & (n1 == 0) & (wcnt == 0))
                    with m.Case(code["WEIGHTS"]):
                        m.d.comb += Assert(~osrc & (n3 == msrc) & (wcnt == n2) & (n2 < k) & (n1 == 0))
                    with m.Case(code["DATA"]):
                        m.d.comb += Assert(~osrc & (n3 == msrc) & (n2 == k) & ~p1_last)
                    with m.Case(code["OSRC"]):
                        m.d.comb += Assert(osrc & (p1done == p1_last) & (p2done == p2_last) &
                                           ~(p1_last & p2_last))
                    with m.Case(code["FINAL"]):
                        m.d.comb += Assert(p1_last & Mux(osrc, p2_last, (n3 == msrc) & (n2 == k)))

    if "lanes" in groups:
        for j in range(p.k_max):  # inductive invariant: Reg-2 itself never leaves the range
            r2 = probe(sig, f"reg2_{j}")
            m.d.comb += Assert((r2 >= -lim) & (r2 <= lim))
        with m.If(out.valid):
            for j in range(p.k_max):
                m.d.comb += Assert((b.lanes[j] >= -lim) & (b.lanes[j] <= lim))
                with m.If(b.count <= j):
                    m.d.comb += Assert(b.lanes[j] == 0)

    if "refusal" in groups:
        with m.If(busy & bad):
            m.d.comb += Assert(~p1.ready & ~p2.ready & ~p3.ready)
        with m.If(h.past_valid & past_bad_cfg):
            m.d.comb += Assert(out.valid & b.last & (b.count == 0) & (b.base == 0))
        m.d.comb += Assert(dut.cfg_error == err_model)

    if "cover" in groups:
        past_final = h.past(final_hs, "final")
        done_ok = final_hs & ~bad
        m.d.comb += [
            Cover(done_ok & (mode == MODE_SRC) & (beats >= 1) & (n1 >= 2)),
            Cover(done_ok & (mode == MODE_MSRC) & (beats >= 1) & (n1 >= 2)),
            Cover(done_ok & osrc & (n1 >= 2) & (n2 >= 2)),
            Cover(final_hs & bad),
            Cover(out.valid & ~out.ready & ~b.last),
            Cover(h.past_valid & past_final & cfg_hs),
        ]
    return h


# ---- second generation: prefetch (docs/architecture.md 6.1) ---------------------------------

PREFETCH_GROUPS = ("stream", "queue", "ports", "beats", "cover")


def pe_prefetch_harness(p: HwParams = PE_SMALL, groups: tuple[str, ...] = PREFETCH_GROUPS,
                        pe_cls=PE) -> Harness:
    """Harness of the PE with ``prefetch=True`` (lookahead 1): up to three ops in flight.

    The harness keeps its own record of the ops in flight (a ring of three: mode, K, refused,
    out_len, the weights still due, the mask taken) and of the oldest one's rows. Groups:

    * ``stream``: ``out`` obeys the stream rule.
    * ``queue``: never more than three ops in flight (A, S, Q); no beat without an op in
      flight and exactly one final beat per op (a final beat never comes for an op that was
      not configured: no duplicated op); no stall cycle while every port keeps up.
    * ``ports`` and ``beats`` (the contract, in two checks to keep each small): Port-1 only for the oldest op (the active one), never past its row's
      ``last``, only once its K weights (and MSRC mask) are in; Port-2 carries the oldest
      OSRC op's dO row, or weights for the first op that still needs weights, never while an
      OSRC op has not finished its inputs (section 6.1's p2 rule); Port-3 exactly once per
      MSRC op, together with its first weight; an op's final beat only after all its inputs,
      in the cycle after the last; retire beats only with their Port-1 entry and never dropped;
      beats of an op cover disjoint increasing columns inside ``out_len`` with count <= K;
      refused ops read nothing and end with base = 0, count = 0; ``cfg_error`` at an op's
      final beat says whether that op was refused.
    * ``cover``: three ops in flight; an SRC op computing while the next op's weight loads;
      final beats of two ops in consecutive cycles; an OSRC op finishing with three in flight.
    """
    check_groups(groups, PREFETCH_GROUPS)
    h = Harness()
    m = h.m
    dut = pe_cls(p, prefetch=True)
    h.add_dut("pe", dut)
    cfg, p1, p2, p3, out = dut.cfg, dut.port1, dut.port2, dut.port3, dut.out
    for name in ("cfg", "port1", "port2", "port3"):
        h.stream_rule(getattr(dut, name), name, kind=Assume)
    cfg_hs, p1_hs, p2_hs, p3_hs = (s.valid & s.ready for s in (cfg, p1, p2, p3))
    out_hs = out.valid & out.ready
    final_hs = out_hs & out.payload.last
    c = cfg.payload
    cfg_bad = ((c.mode == 3) | (c.k == 0) | (c.k > p.k_max) | (c.pad >= c.k) | (c.in_len == 0) |
               (c.in_len > p.w_max) | (c.out_len == 0) | (c.out_len > p.w_max))
    kw = len(c.k)

    # ---- the ring of ops in flight: slot (head + j) % 3 holds the j-th oldest
    n_in = Signal(range(5), name="h_n_in")
    head = Signal(range(3), name="h_head")
    r_mode = [Signal(2, name=f"h_mode{i}") for i in range(3)]
    r_k = [Signal(kw, name=f"h_k{i}") for i in range(3)]
    r_bad = [Signal(name=f"h_bad{i}") for i in range(3)]
    r_len = [Signal(p.off_w, name=f"h_outlen{i}") for i in range(3)]
    r_inlen = [Signal(p.off_w, name=f"h_inlen{i}") for i in range(3)]
    r_need = [Signal(kw, name=f"h_need{i}") for i in range(3)]   # weights still due
    r_mask = [Signal(name=f"h_mask{i}") for i in range(3)]       # MSRC: mask still due

    def slot(j):  # ring index of the j-th oldest op in flight
        return Array([(j + i) % 3 for i in range(3)])[head] if j else head

    def at(arr, j):
        return Array(arr)[slot(j)]

    h_mode, h_k, h_bad, h_len, h_inlen = (at(a, 0) for a in (r_mode, r_k, r_bad, r_len, r_inlen))
    h_osrc = (h_mode == MODE_OSRC) & ~h_bad
    # the oldest op's rows
    n1, n2 = Signal(p.off_w + 2, name="h_n1"), Signal(p.off_w + 2, name="h_n2")
    p1_last, p2_last = Signal(name="h_p1_last"), Signal(name="h_p2_last")
    p1_prev, p2_prev = Signal(p.off_w, name="h_p1_prev"), Signal(p.off_w, name="h_p2_prev")
    next_col = Signal(p.off_w + 2, name="h_next_col")
    # Port-2: a dO entry of the oldest op (OSRC, row not finished), else a weight
    p2_do = h_osrc & (n_in > 0) & ~p2_last
    p2_w = p2_hs & ~p2_do
    # the op a weight goes to: the oldest with weights still due
    due = [Signal(name=f"h_due{j}") for j in range(3)]
    for j in range(3):
        m.d.comb += due[j].eq((n_in > j) & (at(r_need, j) != 0) & ~Cat(*due[:j]).any()
                              if j else (n_in > 0) & (at(r_need, 0) != 0))
    any_due = Cat(*due).any()

    n_after_pop = Signal(range(5))
    m.d.comb += n_after_pop.eq(n_in - final_hs)
    new_head = Signal(range(3))
    m.d.comb += new_head.eq(Mux(final_hs, Mux(head == 2, 0, head + 1), head))
    with m.If(final_hs):
        m.d.sync += [head.eq(new_head), n1.eq(0), n2.eq(0), p1_last.eq(0), p2_last.eq(0), next_col.eq(0)]
    m.d.sync += n_in.eq(n_in + cfg_hs - final_hs)
    with m.If(cfg_hs):
        widx = Signal(range(3))
        tot = Signal(range(8))
        m.d.comb += [tot.eq(new_head + n_after_pop), widx.eq(Mux(tot >= 3, tot - 3, tot))]
        with m.Switch(widx):
            for i in range(3):
                with m.Case(i):
                    need_k = Mux(cfg_bad | (c.mode == MODE_OSRC), 0, c.k)
                    m.d.sync += [r_mode[i].eq(c.mode), r_k[i].eq(c.k), r_bad[i].eq(cfg_bad), r_len[i].eq(c.out_len),
                                 r_inlen[i].eq(c.in_len), r_need[i].eq(need_k),
                                 r_mask[i].eq(~cfg_bad & (c.mode == MODE_MSRC))]
    # weights and masks: decrement the target's count (a weight for a slot never targets the
    # op configured in the same cycle: the PE loads an op at the earliest the cycle after)
    for j in range(3):
        with m.If(p2_w & due[j]):
            with m.Switch(slot(j)):
                for i in range(3):
                    with m.Case(i):
                        m.d.sync += r_need[i].eq(r_need[i] - 1)
                        with m.If(p3_hs):
                            m.d.sync += r_mask[i].eq(0)
    with m.If(~final_hs):
        with m.If(p1_hs):
            m.d.sync += [n1.eq(n1 + 1), p1_prev.eq(p1.payload.offset), p1_last.eq(p1.payload.last)]
        with m.If(p2_hs & p2_do):
            m.d.sync += [n2.eq(n2 + 1), p2_prev.eq(p2.payload.offset), p2_last.eq(p2.payload.last)]
        with m.If(out_hs & (out.payload.count != 0)):
            m.d.sync += next_col.eq(out.payload.base + out.payload.count)

    # ---- environment: rows of section 3 for the oldest op
    def row_rule(port, n, prev, row_len, used):
        e = port.payload
        marker = e.offset == p.off_end
        with m.If(used & port.valid):
            m.d.comb += Assume((marker & e.last & (e.value == 0) & (n == 0)) |
                               (~marker & (e.offset < row_len) & ((n == 0) | (e.offset > prev))))
    row_rule(p1, n1, p1_prev, h_inlen, (n_in > 0) & ~h_bad & ~p1_last)
    row_rule(p2, n2, p2_prev, h_len, p2_do)

    b = out.payload
    if "stream" in groups:
        h.stream_rule(out, "out", kind=Assert)

    if "queue" in groups:
        m.d.comb += [
            Assert(n_in <= 3),
            Assert(~(cfg_hs & (n_in == 3) & ~final_hs)),   # a fourth op is never taken
            Assert(~out.valid | (n_in > 0)),                 # no beat without an op in flight
        ]
        with m.If((n_in > 0) & cfg.valid & p1.valid & p2.valid & p3.valid & out.ready):
            m.d.comb += Assert(cfg_hs | p1_hs | p2_hs | p3_hs | final_hs)  # no stall

    h_loaded = (at(r_need, 0) == 0) & ~at(r_mask, 0)
    inputs_done_now = Signal()
    m.d.comb += inputs_done_now.eq((n_in > 0) & ~h_bad & ~final_hs & Mux(
        h_osrc, (p1_last | (p1_hs & p1.payload.last)) & (p2_last | (p2_hs & p2_do & p2.payload.last)) &
        ~(p1_last & p2_last), p1_hs & p1.payload.last))
    past_done = h.past(inputs_done_now, "inputs_done")
    if "ports" in groups:
        m.d.comb += [
            Assert(~p1_hs | ((n_in > 0) & ~h_bad & ~p1_last & (h_osrc | h_loaded))),
            Assert(~p2_w | any_due),                             # a weight only for an op that needs one
            Assert(~p2_w | ~(h_osrc & (n_in > 0) & ~(p1_last & p2_last))),  # not while OSRC computes
            Assert(~p3_hs | p2_w),                               # the mask with a weight ...
        ]
        for j in range(3):  # ... the first weight of an MSRC op, and only once
            with m.If(p3_hs & due[j]):
                m.d.comb += Assert(at(r_mask, j) & (at(r_need, j) == at(r_k, j)))
            with m.If(p2_w & due[j] & at(r_mask, j)):
                m.d.comb += Assert(p3_hs)
    if "beats" in groups:
        with m.If(final_hs & ~h_bad):
            m.d.comb += Assert(p1_last & Mux(h_osrc, p2_last, h_loaded))
        with m.If(final_hs & h_bad):
            m.d.comb += Assert((n1 == 0) & (n2 == 0) & (b.count == 0) & (b.base == 0))
        with m.If(final_hs):
            m.d.comb += Assert(dut.cfg_error == h_bad)
        with m.If(h.past_valid & past_done):
            m.d.comb += Assert(out.valid & b.last)
        with m.If(out.valid & b.last & ~h_bad):
            m.d.comb += Assert(p1_last & (~h_osrc | p2_last))
        with m.If(out.valid & ~b.last):
            m.d.comb += Assert(p1.valid & ~h_bad & ~h_osrc & (n_in > 0))
        with m.If(out_hs & ~b.last):
            m.d.comb += Assert(p1_hs)
        with m.If(p1_hs & out.valid):
            m.d.comb += Assert(out.ready)
        with m.If(out.valid):
            m.d.comb += Assert(b.count <= h_k)
            with m.If(~h_bad & ~h_osrc & (b.count != 0)):
                m.d.comb += Assert((b.base >= next_col) & (b.base + b.count <= h_len))
            with m.If(h_osrc):
                m.d.comb += Assert(b.last & (b.base == 0) & (b.count == h_k))

    if "cover" in groups:
        past_final = h.past(final_hs, "final")
        m.d.comb += [
            Cover(n_in == 3),
            Cover(p1_hs & p2_w & (h_mode == MODE_SRC)),
            Cover(h.past_valid & past_final & final_hs),
            Cover(final_hs & (h_mode == MODE_OSRC) & ~h_bad & (n_in == 3)),
        ]
    return h
