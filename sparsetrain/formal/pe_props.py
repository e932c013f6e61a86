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

from amaranth.hdl import Assert, Assume, Cover, Mux, Signal

from ..golden.timing import Mode, pe_cycles
from ..hw.layouts import HwParams
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
