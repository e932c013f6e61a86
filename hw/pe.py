"""The PE: one 1-D row convolution (SRC, MSRC or OSRC) per operation.

Follows docs/architecture.md sections 3 to 6; ``golden.bitexact.rowops`` is the bit-accurate
specification and ``sparsetrain.arch.timing`` the cycle count. Structure:

* Reg-1 (``reg1``, K_MAX x DW): the K weights (SRC/MSRC) or the cached dO window (OSRC).
* Reg-2 (``reg2``, K_MAX x ACC_W): the output window of K partial sums (SRC/MSRC) or the K
  dW accumulators (OSRC).
* K_MAX multipliers, one per Reg-2 slot, fed through a per-slot weight/dO select, so every
  Port-1 entry is handled in the cycle it is accepted (one entry per cycle, no bubbles).
* A retire beat (window columns that an entry pushes out) leaves *combinationally* in the
  cycle its entry is accepted, so that the final beat can follow in the next cycle even
  when the last entry retires columns (section 6: SRC = 1 + K + N1 + 1 exactly).
  ``out.valid`` depends on ``port1.valid``/payload but never on ``out.ready``.

Second generation (section 6.1, elaboration parameters, defaults off): ``prefetch`` adds
a shadow stage (shadow Reg-1, mask, cfg) and a one-deep cfg queue in front of the active
registers above, so the next op's weights load on Port-2 while the current op computes
(``_prefetch_control``); ``lookahead = 2`` widens Port-1 to two entries and lets MSRC
consume a leading skip entry together with the next one; ``osrc_window = 2`` (section 6.1, E)
widens Port-1 and Port-2 to two entries and lets OSRC discard a leading skip merge action
together with the next one.

Run-time cfg values out of range (mode 3, k = 0 or > K_MAX, pad >= k, in_len/out_len = 0
or > W_MAX) refuse the operation: nothing is read from Port-1/2/3, one ``last`` beat with
``count = 0`` is emitted on the next cycle, and ``cfg_error`` stays high until the next
valid cfg is accepted.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.pe import HwParams
from ..arch.timing import Mode
from .blocks import DATAPATH_PARAMS, BlockSpec, ParamSpec
from .layouts import beat_layout, entry_layout, entry_pair_layout, mask_layout, pe_cfg_layout

# The contract's row-op modes (arch.timing.Mode, the cfg ``mode`` field; 3 is refused), kept under
# the plain names for the modules that import them (hw/group.py, the formal harness).
MODE_SRC, MODE_MSRC, MODE_OSRC = Mode.SRC, Mode.MSRC, Mode.OSRC

# States of the first-generation control FSM, in encoding order (the formal harness reads
# the FSM's state register, ``state_state``, by these indices).
FIRST_GEN_STATES = ("IDLE", "MASK", "WEIGHTS", "DATA", "OSRC", "FINAL")


class PE(wiring.Component):
    """Row-convolution PE; ``params`` are the datapath parameters (validated by HwParams).

    ``prefetch`` (section 6.1, A): a shadow Reg-1 and a one-deep cfg queue, so the next op's
    weights load during the current op. ``lookahead`` (section 6.1, B): 1 = one Port-1 entry
    per cycle; 2 = Port-1 carries two entries (``entry_pair_layout``) and MSRC consumes a
    leading skip entry together with the next one; ``port1_take2`` says that a handshake
    consumed both. ``osrc_window`` (section 6.1, E): 1 = one OSRC merge action per cycle; 2 =
    Port-1 and Port-2 carry two entries each and an OSRC cycle discards a leading skip action
    (no partner) together with the next one; ``port1_take2`` / ``port2_take2`` say that a
    handshake consumed both entries of that port. The defaults are the first generation exactly.
    """

    def __init__(self, params: HwParams, *, prefetch: bool = False, lookahead: int = 1, osrc_window: int = 1):
        if not isinstance(params, HwParams):
            raise TypeError(f"params = {params!r} is not a HwParams; allowed: a HwParams instance")
        if not isinstance(prefetch, bool):
            raise TypeError(f"prefetch = {prefetch!r} is not a bool; allowed: False, True")
        if not isinstance(lookahead, int) or isinstance(lookahead, bool):
            raise TypeError(f"lookahead = {lookahead!r} is not an int; allowed: 1, 2")
        if lookahead not in (1, 2):
            raise ValueError(f"lookahead = {lookahead} is out of range; allowed: 1, 2")
        if not isinstance(osrc_window, int) or isinstance(osrc_window, bool):
            raise TypeError(f"OSRC_WINDOW = {osrc_window!r} is not an int; allowed: 1 .. 2")
        if osrc_window not in (1, 2):
            raise ValueError(f"OSRC_WINDOW = {osrc_window} is out of range; allowed: 1 .. 2")
        self.params = params
        self.prefetch = prefetch
        self.lookahead = lookahead
        self.osrc_window = osrc_window
        pair1 = lookahead == 2 or osrc_window == 2
        members = {
            "cfg": In(stream.Signature(pe_cfg_layout(params))),
            "port1": In(stream.Signature(entry_pair_layout(params) if pair1 else entry_layout(params))),
            "port2": In(stream.Signature(entry_pair_layout(params) if osrc_window == 2 else entry_layout(params))),
            "port3": In(stream.Signature(mask_layout(params))),
            "out": Out(stream.Signature(beat_layout(params))),
            "cfg_error": Out(1),
        }
        if pair1:
            members["port1_take2"] = Out(1)
        if osrc_window == 2:
            members["port2_take2"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        p = self.params
        m = Module()
        km, kw, ow = p.k_max, p.k_w, p.off_w
        sw = ow + kw + 4  # signed width of every column computation (no overflow possible)
        lim = (1 << (p.acc_w - 1)) - 1

        def sat_add(acc, prod):
            s = Signal(signed(p.acc_w + 2))
            m.d.comb += s.eq(acc + prod)
            return Mux(s > lim, Const(lim, signed(p.acc_w)), Mux(s < -lim, Const(-lim, signed(p.acc_w)), s))

        # one flag per FSM state the datapath needs (driven inside the FSM below)
        in_idle, in_data, in_osrc, in_final = Signal(), Signal(), Signal(), Signal()
        mode = Signal(Mode)
        k = Signal(kw)
        s2 = Signal()
        pad = Signal(kw)
        out_len = Signal(ow)
        error = Signal()
        reg1_list = [Signal(signed(p.dw), name=f"reg1_{j}") for j in range(km)]
        reg2_list = [Signal(signed(p.acc_w), name=f"reg2_{j}") for j in range(km)]
        reg1, reg2 = Array(reg1_list), Array(reg2_list)
        base = Signal(ow + 1)       # window base (SRC/MSRC) or dO cache base (OSRC)
        wcnt = Signal(kw)           # weights loaded so far
        mask = Signal(p.w_max)
        p1done = Signal()
        p2done = Signal()
        m.d.comb += self.cfg_error.eq(error)

        e2 = self.port2.payload
        p2w = self.port2.payload  # the Port-2 entry of a weight load (SRC/MSRC)
        la2 = self.lookahead == 2
        ow2 = self.osrc_window == 2
        if ow2:
            # OSRC look-ahead (E): the merge action performed this cycle may be the second
            # entry of Port-1 (o_sel1) or Port-2 (o_sel2); weights are loaded from ``first``
            p2w = self.port2.payload.first
            o_sel1, o_sel2, o_p1_take2, o_p2_take2 = Signal(), Signal(), Signal(), Signal()
            e2 = Signal(entry_layout(p))
            m.d.comb += [e2.eq(Mux(o_sel2, self.port2.payload.second.as_value(), self.port2.payload.first.as_value())),
                         self.port2_take2.eq(o_p2_take2)]
        if la2:
            # MSRC look-ahead: of the first two pending entries, a leading skip entry (every
            # target column masked off or out of range) is consumed together with the second,
            # which is then the entry the datapath works on (docs/architecture.md 6.1)
            x0, x1 = self.port1.payload.first, self.port1.payload.second

            def skip_of(x):
                lo_x = Signal(signed(sw))
                m.d.comb += lo_x.eq(Mux(s2, x.offset << 1, x.offset) - pad)
                wanted = 0
                for j in range(km):
                    t = lo_x + j
                    wanted = wanted | ((j < k) & (t >= 0) & (t < out_len) & mask.bit_select(t[:ow], 1))
                sk = Signal()
                m.d.comb += sk.eq((mode == Mode.MSRC) & (x.offset != p.off_end) & ~wanted)
                return sk

            skip0, skip1 = skip_of(x0), skip_of(x1)
            take2 = Signal()
            m.d.comb += take2.eq(skip0 & self.port1.payload.has_second & ~x0.last)
            e1 = Signal(entry_layout(p))
            e_skip = Signal()  # the entry the datapath sees is itself a skip: no window step
            m.d.comb += [e1.eq(Mux(take2 | o_sel1 if ow2 else take2, x1.as_value(), x0.as_value())),
                         e_skip.eq(Mux(take2, skip1, skip0)),
                         self.port1_take2.eq((in_data & take2) | o_p1_take2 if ow2 else in_data & take2)]
        elif ow2:
            e1 = Signal(entry_layout(p))
            m.d.comb += [e1.eq(Mux(o_sel1, self.port1.payload.second.as_value(), self.port1.payload.first.as_value())),
                         self.port1_take2.eq(o_p1_take2)]
        else:
            e1 = self.port1.payload
        v = e1.value
        marker1 = e1.offset == p.off_end
        marker2 = e2.offset == p.off_end
        base_s = Signal(signed(sw))
        u = Signal(signed(sw))  # padded input column of the Port-1 entry
        m.d.comb += [base_s.eq(base), u.eq(e1.offset + pad)]

        # ---- SRC / MSRC window step for the Port-1 entry on offer -------------------------
        lo = Signal(signed(sw))
        with m.If(mode == Mode.MSRC):
            m.d.comb += lo.eq(Mux(s2, e1.offset << 1, e1.offset) - pad)
        with m.Else():  # ceil((u - k + 1) / S)
            m.d.comb += lo.eq(Mux(s2, (u - k + 2) >> 1, u - k + 1))
        new_base = Signal(signed(sw))
        m.d.comb += new_base.eq(Mux(lo > base_s, lo, base_s))
        hi = Signal(signed(sw))
        hi_a = Signal(signed(sw))
        m.d.comb += [hi_a.eq(Mux(new_base < base_s + k, new_base, base_s + k)),
                     hi.eq(Mux(hi_a < out_len, hi_a, out_len))]
        retire = Signal()
        retire_n = Signal(kw)
        retire_when = ~marker1 & (hi > base_s)
        if la2:
            retire_when = retire_when & ~e_skip
        m.d.comb += [retire.eq(retire_when), retire_n.eq(hi - base_s)]
        shift = Signal(range(km + 1))
        m.d.comb += shift.eq(Mux(new_base - base_s > km, km, new_base - base_s))
        e_src = Signal(signed(sw))  # Reg-1 index of the weight for slot 0 (SRC)
        m.d.comb += e_src.eq(u - Mux(s2, new_base << 1, new_base))
        window_next = []
        for j in range(km):
            x = Signal(signed(sw), name=f"x_{j}")
            idx = Signal(signed(sw), name=f"widx_{j}")
            use = Signal(name=f"use_{j}")
            m.d.comb += x.eq(new_base + j)
            with m.If(mode == Mode.MSRC):
                m.d.comb += [idx.eq(new_base - lo + j),
                             use.eq((idx < k) & (x < out_len) & mask.bit_select(x[:ow], 1))]
            with m.Else():
                m.d.comb += [idx.eq(e_src - Mux(s2, 2 * j, j)),
                             use.eq((idx >= 0) & (idx < k) & (x < out_len))]
            # operand gating: a masked-off or out-of-window lane does not multiply
            w = Signal(signed(p.dw), name=f"wsel_{j}")
            m.d.comb += w.eq(Mux(use & ~marker1, reg1[idx[:kw]], 0))
            prod = Signal(signed(2 * p.dw), name=f"prod_{j}")
            m.d.comb += prod.eq(v * w)
            shifted = Signal(signed(p.acc_w), name=f"shifted_{j}")
            # slot j can only receive slots j.. (a shift never moves data down-index)
            m.d.comb += shifted.eq(Array([*reg2_list[j:], Const(0, signed(p.acc_w))])[
                Mux(shift > km - j, km - j, shift) if j else shift])
            nxt = Signal(signed(p.acc_w), name=f"win_next_{j}")
            m.d.comb += nxt.eq(Mux(marker1, reg2[j], sat_add(shifted, prod)))
            window_next.append(nxt)

        # ---- OSRC: merge of the two sorted streams, one action per cycle ------------------
        if not ow2:
            take_do_rule = Signal()
            hu = Signal(signed(sw))
            m.d.comb += [hu.eq(u >> s2), take_do_rule.eq(marker1 | (~marker2 & (e2.offset <= hu)))]
            take_do = Signal()
            take_in = Signal()
            m.d.comb += [
                take_do.eq(in_osrc & ~p2done & self.port2.valid &
                           (p1done | (self.port1.valid & take_do_rule))),
                take_in.eq(in_osrc & ~p1done & self.port1.valid &
                           (p2done | (self.port2.valid & ~take_do_rule))),
            ]
        else:
            take_do, take_in = Signal(), Signal()   # port2.ready / port1.ready in the OSRC state
            do_perf, in_perf = Signal(), Signal()   # the performed action is a dO load / an input consume
            p1_last, p2_last = Signal(), Signal()   # the last entry a handshake takes ends its row
            last_x = Signal(ow)                     # column of the newest dO entry loaded into the cache
            have_x = Signal()                       # this op has loaded a dO entry
            self._osrc_window2(m, sw, pad, k, s2, in_osrc, p1done, p2done, last_x, have_x, dict(
                go_do=take_do, go_in=take_in, do_perf=do_perf, in_perf=in_perf, p1_last=p1_last, p2_last=p2_last,
                sel1=o_sel1, sel2=o_sel2, p1_take2=o_p1_take2, p2_take2=o_p2_take2))
            with m.If(in_final):
                m.d.sync += have_x.eq(0)
        # dO load: the cache window ends at the newest dO column
        x2 = Signal(signed(sw))
        m.d.comb += x2.eq(e2.offset)
        cache_base = Signal(signed(sw))
        m.d.comb += cache_base.eq(Mux(x2 >= base_s + k, x2 - k + 1, base_s))
        cache_shift = Signal(range(km + 1))
        m.d.comb += cache_shift.eq(Mux(cache_base - base_s > km, km, cache_base - base_s))
        cache_next = []
        for j in range(km):
            shifted = Signal(signed(p.dw), name=f"cache_shifted_{j}")
            m.d.comb += shifted.eq(Array([*reg1_list[j:], Const(0, signed(p.dw))])[
                Mux(cache_shift > km - j, km - j, cache_shift) if j else cache_shift])
            nxt = Signal(signed(p.dw), name=f"cache_next_{j}")
            m.d.comb += nxt.eq(Mux(x2 - cache_base == j, e2.value, shifted))
            cache_next.append(nxt)
        # input consume: lane j accumulates dW[j] += v * dO[(u - j) / S]
        acc_next = []
        for j in range(km):
            t = Signal(signed(sw), name=f"ot_{j}")
            slot = Signal(signed(sw), name=f"oslot_{j}")
            use = Signal(name=f"ouse_{j}")
            m.d.comb += [t.eq(u - j), slot.eq((t >> s2) - base_s),
                         use.eq(~marker1 & (j < k) & (t >= 0) & (~s2 | ~t[0]) & (slot >= 0) & (slot < k))]
            g = Signal(signed(p.dw), name=f"osel_{j}")
            m.d.comb += g.eq(Mux(use, reg1[slot[:kw]], 0))
            prod = Signal(signed(2 * p.dw), name=f"oprod_{j}")
            m.d.comb += prod.eq(v * g)
            acc_next.append(sat_add(reg2[j], prod))

        # ---- output beat -------------------------------------------------------------------
        count = Signal(kw)
        final_count = Signal(signed(sw))
        m.d.comb += final_count.eq(Mux(base_s + k < out_len, base_s + k, out_len) - base_s)
        with m.If(in_final):
            m.d.comb += [
                self.out.valid.eq(1),
                self.out.payload.last.eq(1),
                self.out.payload.base.eq(Mux(error | (mode == Mode.OSRC), 0, base)),
                count.eq(Mux(error, 0, Mux(mode == Mode.OSRC, k, Mux(final_count > 0, final_count, 0)))),
            ]
        with m.Elif(in_data):
            m.d.comb += [self.out.valid.eq(self.port1.valid & retire),
                         self.out.payload.base.eq(base), count.eq(retire_n)]
        m.d.comb += self.out.payload.count.eq(count)
        for j in range(km):
            m.d.comb += self.out.payload.lanes[j].eq(Mux(j < count, reg2[j], 0))

        # ---- control -----------------------------------------------------------------------
        c = self.cfg.payload

        def cfg_ok_of(x):
            # (k <= K_MAX is only checked when the field can hold more: no constant comparisons)
            k_fits = (x.k <= km) if km < (1 << kw) - 1 else 1
            return ((x.mode != 3) & (x.k >= 1) & k_fits & (x.pad < x.k) &
                    (x.in_len >= 1) & (x.in_len <= p.w_max) & (x.out_len >= 1) & (x.out_len <= p.w_max))

        cfg_ok = Signal()
        m.d.comb += cfg_ok.eq(cfg_ok_of(c))

        def data_state():
            m.d.comb += [in_data.eq(1), self.port1.ready.eq(~retire | self.out.ready)]
            with m.If(self.port1.valid & self.port1.ready):
                with m.If(~e_skip if la2 else 1):
                    m.d.sync += [reg2[j].eq(window_next[j]) for j in range(km)]
                    with m.If(~marker1):
                        m.d.sync += base.eq(new_base)
                with m.If(e1.last):
                    m.next = "FINAL"

        def osrc_state():
            m.d.comb += [in_osrc.eq(1), self.port1.ready.eq(take_in), self.port2.ready.eq(take_do)]
            if ow2:
                # a discarded skip action changes nothing; the performed one is e1 / e2
                with m.If(do_perf & ~marker2):
                    m.d.sync += [reg1[j].eq(cache_next[j]) for j in range(km)]
                    m.d.sync += [base.eq(cache_base), last_x.eq(e2.offset), have_x.eq(1)]
                with m.If(take_do):
                    m.d.sync += p2done.eq(p2_last)
                with m.If(in_perf):
                    m.d.sync += [reg2[j].eq(acc_next[j]) for j in range(km)]
                with m.If(take_in):
                    m.d.sync += p1done.eq(p1_last)
                with m.If(osrc_finish):
                    m.next = "FINAL"
                return
            with m.If(take_do):
                with m.If(~marker2):
                    m.d.sync += [reg1[j].eq(cache_next[j]) for j in range(km)]
                    m.d.sync += base.eq(cache_base)
                m.d.sync += p2done.eq(e2.last)
            with m.If(take_in):
                m.d.sync += [reg2[j].eq(acc_next[j]) for j in range(km)]
                m.d.sync += p1done.eq(e1.last)
            with m.If(osrc_finish):
                m.next = "FINAL"

        osrc_finish = Signal()  # the OSRC op's last input action is in this cycle
        if ow2:
            m.d.comb += osrc_finish.eq((p1done | (take_in & p1_last)) & (p2done | (take_do & p2_last)))
        else:
            m.d.comb += osrc_finish.eq((p1done | (take_in & e1.last)) & (p2done | (take_do & e2.last)))
        if self.prefetch:
            self._prefetch_control(m, c, cfg_ok_of, data_state, osrc_state, osrc_finish, dict(
                in_idle=in_idle, in_osrc=in_osrc, in_final=in_final, take_do=take_do, mode=mode, k=k, s2=s2,
                pad=pad, out_len=out_len, error=error, reg1=reg1_list, reg2=reg2_list, base=base, mask=mask,
                p1done=p1done, p2done=p2done, p2w=p2w))
            return m

        with m.FSM(name="state"):
            with m.State("IDLE"):
                m.d.comb += self.cfg.ready.eq(1)
                with m.If(self.cfg.valid):
                    m.d.sync += [mode.eq(c.mode), k.eq(c.k), s2.eq(c.stride2), pad.eq(c.pad),
                                 out_len.eq(c.out_len), error.eq(~cfg_ok), base.eq(0), wcnt.eq(0),
                                 p1done.eq(0), p2done.eq(0)]
                    m.d.sync += [r.eq(0) for r in reg1] + [r.eq(0) for r in reg2]
                    with m.If(~cfg_ok):
                        m.next = "FINAL"
                    with m.Else():
                        with m.Switch(c.mode):
                            with m.Case(Mode.MSRC):
                                m.next = "MASK"
                            with m.Case(Mode.OSRC):
                                m.next = "OSRC"
                            with m.Default():
                                m.next = "WEIGHTS"
            with m.State("MASK"):
                m.d.comb += self.port3.ready.eq(1)
                with m.If(self.port3.valid):
                    m.d.sync += mask.eq(self.port3.payload.bits)
                    m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                m.d.comb += self.port2.ready.eq(1)
                with m.If(self.port2.valid):
                    m.d.sync += [reg1[wcnt].eq(p2w.value), wcnt.eq(wcnt + 1)]
                    with m.If(wcnt == k - 1):
                        m.next = "DATA"
            with m.State("DATA"):
                data_state()
            with m.State("OSRC"):
                osrc_state()
            with m.State("FINAL"):
                m.d.comb += in_final.eq(1)
                with m.If(self.out.ready):
                    m.next = "IDLE"
        return m


    def _osrc_window2(self, m: Module, sw: int, pad, k, s2, in_osrc, p1done, p2done, last_x, have_x,
                      o: dict) -> None:
        """OSRC with window 2 (docs/architecture.md 6.1, E): the merge actions of section 6 in order;
        an action is a skip when it has no partner (an input entry at padded column u with no dO
        entry at x, 0 <= u - x*S <= K-1; a dO entry at x with no input entry at u in x*S ..
        x*S+K-1; an empty-row marker never is). Each cycle looks at the next two actions a0, a1:
        a0 a skip and a1 on offer: both are consumed and a1 is performed; otherwise a0 is. Both
        skip tests are decidable here: an input entry's partners are all loaded before it (the
        newest one loaded, ``last_x``, is the nearest), a dO entry's start at the head of Port-1."""
        p = self.params
        P1, P2 = self.port1.payload, self.port2.payload
        f1, n1, f2, n2 = P1.first, P1.second, P2.first, P2.second

        def marker(e):
            return e.offset == p.off_end

        def sig(expr, name):
            x = Signal(signed(sw), name=name)
            m.d.comb += x.eq(expr)
            return x

        uf1, un1 = sig(f1.offset + pad, "o_uf1"), sig(n1.offset + pad, "o_un1")
        xs_f2 = sig(Mux(s2, f2.offset << 1, f2.offset), "o_xs_f2")
        xs_last = sig(Mux(s2, last_x << 1, last_x), "o_xs_last")

        def do_first(e_in, u_in, e_do):  # section 6: the dO entry at x goes first when x <= floor(u/S)
            return marker(e_in) | (~marker(e_do) & (e_do.offset <= (u_in >> s2)))

        a0_do, go, skip0, a1_on, a1_do, take2 = (Signal(name=f"o_{n}") for n in
                                                 ("a0_do", "go", "skip0", "a1_on", "a1_do", "take2"))
        m.d.comb += [
            a0_do.eq(~p2done & (p1done | do_first(f1, uf1, f2))),
            go.eq(in_osrc & Mux(a0_do, self.port2.valid & (p1done | self.port1.valid),
                                self.port1.valid & (p2done | self.port2.valid))),
            skip0.eq(Mux(a0_do, ~marker(f2) & (p1done | marker(f1) | (uf1 - xs_f2 >= k)),
                         ~marker(f1) & (~have_x | (uf1 - xs_last >= k)))),
        ]
        with m.If(a0_do):
            with m.If(f2.last):
                m.d.comb += [a1_on.eq(~p1done), a1_do.eq(0)]
            with m.Elif(p1done):
                m.d.comb += [a1_on.eq(P2.has_second), a1_do.eq(1)]
            with m.Else():
                m.d.comb += [a1_on.eq(P2.has_second), a1_do.eq(do_first(f1, uf1, n2))]
        with m.Else():
            with m.If(f1.last):
                m.d.comb += [a1_on.eq(~p2done), a1_do.eq(1)]
            with m.Elif(p2done):
                m.d.comb += [a1_on.eq(P1.has_second), a1_do.eq(0)]
            with m.Else():
                m.d.comb += [a1_on.eq(P1.has_second), a1_do.eq(do_first(n1, un1, f2))]
        m.d.comb += [
            take2.eq(skip0 & a1_on),
            o["do_perf"].eq(go & Mux(take2, a1_do, a0_do)),
            o["in_perf"].eq(go & Mux(take2, ~a1_do, ~a0_do)),
            o["go_in"].eq(go & (~a0_do | (take2 & ~a1_do))),
            o["go_do"].eq(go & (a0_do | (take2 & a1_do))),
            o["p1_take2"].eq(go & take2 & ~a0_do & ~a1_do),
            o["p2_take2"].eq(go & take2 & a0_do & a1_do),
            o["sel1"].eq(go & take2 & ~a0_do & ~a1_do),
            o["sel2"].eq(go & take2 & a0_do & a1_do),
            o["p1_last"].eq(Mux(o["p1_take2"], n1.last, f1.last)),
            o["p2_last"].eq(Mux(o["p2_take2"], n2.last, f2.last)),
        ]

    def _prefetch_control(self, m: Module, c, cfg_ok_of, data_state, osrc_state, osrc_finish, r: dict) -> None:
        """Second-generation control (docs/architecture.md 6.1): stages A (active: computes,
        Reg-1/Reg-2), S (shadow: the next op's cfg, mask and weights, loading on Port-2/3)
        and Q (one queued cfg). An op moves Q -> S when S frees (weights only while no OSRC
        op computes on Port-2), and S -> A in the cycle after its last weight and after the
        active op's final beat; an op with nothing to load (OSRC, refused) moves from the cfg
        port straight to A when S and Q are empty and A is free."""
        p = self.params
        km, kw = p.k_max, p.k_w
        mode, k, error, mask = r["mode"], r["k"], r["error"], r["mask"]
        # ---- Q: one cfg
        q_valid = Signal()
        q_cfg = Signal(pe_cfg_layout(p))
        cand = Signal(pe_cfg_layout(p))  # the next op after S: Q's, else the cfg on offer
        m.d.comb += cand.eq(Mux(q_valid, q_cfg.as_value(), c.as_value()))
        cand_ok = Signal()
        cand_l0 = Signal()  # nothing to load (OSRC or refused)
        m.d.comb += [cand_ok.eq(cfg_ok_of(cand)), cand_l0.eq(~cand_ok | (cand.mode == Mode.OSRC))]
        # ---- S: shadow Reg-1, mask and cfg of the next op
        s_valid, s_s2, s_error = Signal(), Signal(), Signal()
        s_mode = Signal(Mode)
        s_k, s_pad = Signal(kw), Signal(kw)
        s_out_len = Signal(p.off_w)
        s_mask = Signal(p.w_max)
        s_wcnt = Signal(kw)  # weights loaded so far
        shadow = [Signal(signed(p.dw), name=f"shadow_{j}") for j in range(km)]
        s_l0 = s_error | (s_mode == Mode.OSRC)
        s_first = s_wcnt == 0
        s_loading = Signal()
        m.d.comb += s_loading.eq(s_valid & ~s_l0 & (s_wcnt != s_k))
        # the MSRC mask beat and weight 0 are taken together, in the op's first load cycle
        s_msrc_first = (s_mode == Mode.MSRC) & s_first
        s_p2_ready, load_hs = Signal(), Signal()
        m.d.comb += [s_p2_ready.eq(s_loading & (~s_msrc_first | self.port3.valid)),
                     load_hs.eq(s_p2_ready & self.port2.valid)]
        m.d.comb += [self.port2.ready.eq(Mux(r["in_osrc"], r["take_do"], s_p2_ready)),
                     self.port3.ready.eq(s_loading & s_msrc_first & self.port2.valid)]
        s_loaded_next = Signal()  # S's op can compute from the next cycle on
        m.d.comb += s_loaded_next.eq(s_valid & (s_l0 | (s_wcnt == s_k) | (load_hs & (s_wcnt == s_k - 1))))
        # ---- moves between the stages
        a_done = r["in_final"] & self.out.ready
        a_free = r["in_idle"] | a_done
        move_sa, direct, to_s = Signal(), Signal(), Signal()
        a_osrc_next = Signal()  # an OSRC op computes in A in the next cycle (Port-2 is its)
        m.d.comb += [
            move_sa.eq(a_free & s_loaded_next),
            direct.eq(~q_valid & self.cfg.valid & cand_l0 & ~s_valid & a_free),
            a_osrc_next.eq(Mux(move_sa, (s_mode == Mode.OSRC) & ~s_error, r["in_osrc"] & ~osrc_finish)),
            to_s.eq((q_valid | self.cfg.valid) & (~s_valid | move_sa) & ~direct & (cand_l0 | ~a_osrc_next)),
            self.cfg.ready.eq(~q_valid | to_s),
        ]
        cfg_hs = self.cfg.valid & self.cfg.ready
        with m.If(cfg_hs & (q_valid | ~(to_s | direct))):
            m.d.sync += [q_cfg.eq(c), q_valid.eq(1)]
        with m.Elif(q_valid & to_s):
            m.d.sync += q_valid.eq(0)
        with m.If(load_hs):
            m.d.sync += [Array(shadow)[s_wcnt].eq(r["p2w"].value), s_wcnt.eq(s_wcnt + 1)]
            with m.If(s_msrc_first):
                m.d.sync += s_mask.eq(self.port3.payload.bits)
        with m.If(to_s):
            m.d.sync += [s_valid.eq(1), s_mode.eq(cand.mode), s_k.eq(cand.k), s_s2.eq(cand.stride2),
                         s_pad.eq(cand.pad), s_out_len.eq(cand.out_len), s_error.eq(~cand_ok), s_wcnt.eq(0)]
        with m.Elif(move_sa):
            m.d.sync += s_valid.eq(0)
        # ---- A: load the active registers of the op that starts computing next cycle
        start = Signal()
        n_error, n_osrc = Signal(), Signal()
        m.d.comb += [start.eq(move_sa | direct),
                     n_error.eq(Mux(move_sa, s_error, ~cand_ok)),
                     n_osrc.eq(Mux(move_sa, s_mode == Mode.OSRC, cand.mode == Mode.OSRC))]
        with m.If(start):
            with m.If(move_sa):
                m.d.sync += [mode.eq(s_mode), k.eq(s_k), r["s2"].eq(s_s2), r["pad"].eq(s_pad),
                             r["out_len"].eq(s_out_len),
                             # the MSRC mask and the last weight may arrive in this very cycle
                             mask.eq(Mux(load_hs & s_msrc_first, self.port3.payload.bits, s_mask))]
                for j in range(km):
                    w = Mux(load_hs & (s_wcnt == j), r["p2w"].value, shadow[j])
                    m.d.sync += r["reg1"][j].eq(Mux(s_mode == Mode.OSRC, 0, w))
            with m.Else():
                m.d.sync += [mode.eq(cand.mode), k.eq(cand.k), r["s2"].eq(cand.stride2), r["pad"].eq(cand.pad),
                             r["out_len"].eq(cand.out_len)]
                m.d.sync += [x.eq(0) for x in r["reg1"]]
            m.d.sync += [error.eq(n_error), r["base"].eq(0), r["p1done"].eq(0), r["p2done"].eq(0)]
            m.d.sync += [x.eq(0) for x in r["reg2"]]

        def start_next():
            with m.If(n_error):
                m.next = "FINAL"
            with m.Elif(n_osrc):
                m.next = "OSRC"
            with m.Else():
                m.next = "DATA"

        with m.FSM(name="state"):
            with m.State("IDLE"):
                m.d.comb += r["in_idle"].eq(1)
                with m.If(start):
                    start_next()
            with m.State("DATA"):
                data_state()
            with m.State("OSRC"):
                osrc_state()
            with m.State("FINAL"):
                m.d.comb += r["in_final"].eq(1)
                with m.If(self.out.ready & start):
                    start_next()
                with m.Elif(self.out.ready):
                    m.next = "IDLE"


@dataclass(frozen=True)
class PEConfig:
    """The PE block's NAME=VALUE parameters (``BLOCK``): the datapath (``HwParams``, section 1)
    and the second-generation switches (section 6.1), validated on creation."""

    dw: int = 16
    k_max: int = 11
    w_max: int = 64
    acc_w: int | None = None   # None: min(64, 2*DW+8), filled in on creation
    prefetch: int = 0          # A: 0 off, 1 on
    lookahead: int = 1         # B: 1 off, 2 on
    osrc_window: int = 1       # E: 1 off, 2 on

    def __post_init__(self) -> None:
        for name in ("prefetch", "lookahead", "osrc_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name.upper()} = {value!r} is not an int; allowed: an integer")
        if self.prefetch not in (0, 1):
            raise ValueError(f"PREFETCH = {self.prefetch} is out of range; allowed: 0, 1")
        if self.lookahead not in (1, 2):
            raise ValueError(f"lookahead = {self.lookahead} is out of range; allowed: 1, 2")
        if self.osrc_window not in (1, 2):
            raise ValueError(f"OSRC_WINDOW = {self.osrc_window} is out of range; allowed: 1 .. 2")
        object.__setattr__(self, "acc_w", self.hw.acc_w)

    @property
    def hw(self) -> HwParams:
        return HwParams(dw=self.dw, k_max=self.k_max, w_max=self.w_max, acc_w=self.acc_w)

    def make(self) -> "PE":
        return PE(self.hw, prefetch=bool(self.prefetch), lookahead=self.lookahead, osrc_window=self.osrc_window)


BLOCK = BlockSpec(
    name="pe",
    help="row-convolution PE (SRC, MSRC, OSRC), docs/architecture.md sections 4 to 6",
    params={**DATAPATH_PARAMS,
            "PREFETCH": ParamSpec(0, "second generation A: shadow Reg-1 and cfg queue (0 off, 1 on)"),
            "LOOKAHEAD": ParamSpec(1, "second generation B: MSRC look-ahead over Port-1 entries (1 off, 2 on)"),
            "OSRC_WINDOW": ParamSpec(1, "second generation E: OSRC merge actions examined per cycle, "
                                        "Port-1/2 entry pairs (1 off, 2 on)")},
    params_class=PEConfig,
    make=PEConfig.make,
)
