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

Run-time cfg values out of range (mode 3, k = 0 or > K_MAX, pad >= k, in_len/out_len = 0
or > W_MAX) refuse the operation: nothing is read from Port-1/2/3, one ``last`` beat with
``count = 0`` is emitted on the next cycle, and ``cfg_error`` stays high until the next
valid cfg is accepted.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.pe import HwParams
from .blocks import DATAPATH_PARAMS, BlockSpec
from .layouts import beat_layout, entry_layout, mask_layout, pe_cfg_layout

MODE_SRC, MODE_MSRC, MODE_OSRC = 0, 1, 2

# FSM states
IDLE, MASK, WEIGHTS, DATA, OSRC, FINAL = range(6)


class PE(wiring.Component):
    """Row-convolution PE; ``params`` are the elaboration parameters (validated by HwParams)."""

    def __init__(self, params: HwParams):
        if not isinstance(params, HwParams):
            raise ValueError(f"params = {params!r} is not a HwParams; allowed: a HwParams instance")
        self.params = params
        super().__init__({
            "cfg": In(stream.Signature(pe_cfg_layout(params))),
            "port1": In(stream.Signature(entry_layout(params))),
            "port2": In(stream.Signature(entry_layout(params))),
            "port3": In(stream.Signature(mask_layout(params))),
            "out": Out(stream.Signature(beat_layout(params))),
            "cfg_error": Out(1),
        })

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

        state = Signal(range(6))
        mode = Signal(2)
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

        e1, e2 = self.port1.payload, self.port2.payload
        v = e1.value
        marker1 = e1.offset == p.off_end
        marker2 = e2.offset == p.off_end
        base_s = Signal(signed(sw))
        u = Signal(signed(sw))  # padded input column of the Port-1 entry
        m.d.comb += [base_s.eq(base), u.eq(e1.offset + pad)]

        # ---- SRC / MSRC window step for the Port-1 entry on offer -------------------------
        lo = Signal(signed(sw))
        with m.If(mode == MODE_MSRC):
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
        m.d.comb += [retire.eq(~marker1 & (hi > base_s)), retire_n.eq(hi - base_s)]
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
            with m.If(mode == MODE_MSRC):
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
        take_do_rule = Signal()
        hu = Signal(signed(sw))
        m.d.comb += [hu.eq(u >> s2), take_do_rule.eq(marker1 | (~marker2 & (e2.offset <= hu)))]
        take_do = Signal()
        take_in = Signal()
        m.d.comb += [
            take_do.eq((state == OSRC) & ~p2done & self.port2.valid &
                       (p1done | (self.port1.valid & take_do_rule))),
            take_in.eq((state == OSRC) & ~p1done & self.port1.valid &
                       (p2done | (self.port2.valid & ~take_do_rule))),
        ]
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
        with m.If(state == FINAL):
            m.d.comb += [
                self.out.valid.eq(1),
                self.out.payload.last.eq(1),
                self.out.payload.base.eq(Mux(error | (mode == MODE_OSRC), 0, base)),
                count.eq(Mux(error, 0, Mux(mode == MODE_OSRC, k, Mux(final_count > 0, final_count, 0)))),
            ]
        with m.Elif(state == DATA):
            m.d.comb += [self.out.valid.eq(self.port1.valid & retire),
                         self.out.payload.base.eq(base), count.eq(retire_n)]
        m.d.comb += self.out.payload.count.eq(count)
        for j in range(km):
            m.d.comb += self.out.payload.lanes[j].eq(Mux(j < count, reg2[j], 0))

        # ---- control -----------------------------------------------------------------------
        c = self.cfg.payload
        cfg_ok = Signal()
        # (k <= K_MAX is only checked when the field can hold more: no constant comparisons)
        k_fits = (c.k <= km) if km < (1 << kw) - 1 else 1
        m.d.comb += cfg_ok.eq((c.mode != 3) & (c.k >= 1) & k_fits & (c.pad < c.k) &
                              (c.in_len >= 1) & (c.in_len <= p.w_max) &
                              (c.out_len >= 1) & (c.out_len <= p.w_max))
        with m.Switch(state):
            with m.Case(IDLE):
                m.d.comb += self.cfg.ready.eq(1)
                with m.If(self.cfg.valid):
                    m.d.sync += [mode.eq(c.mode), k.eq(c.k), s2.eq(c.stride2), pad.eq(c.pad),
                                 out_len.eq(c.out_len), error.eq(~cfg_ok), base.eq(0), wcnt.eq(0),
                                 p1done.eq(0), p2done.eq(0)]
                    m.d.sync += [r.eq(0) for r in reg1] + [r.eq(0) for r in reg2]
                    with m.If(~cfg_ok):
                        m.d.sync += state.eq(FINAL)
                    with m.Elif(c.mode == MODE_MSRC):
                        m.d.sync += state.eq(MASK)
                    with m.Elif(c.mode == MODE_OSRC):
                        m.d.sync += state.eq(OSRC)
                    with m.Else():
                        m.d.sync += state.eq(WEIGHTS)
            with m.Case(MASK):
                m.d.comb += self.port3.ready.eq(1)
                with m.If(self.port3.valid):
                    m.d.sync += [mask.eq(self.port3.payload.bits), state.eq(WEIGHTS)]
            with m.Case(WEIGHTS):
                m.d.comb += self.port2.ready.eq(1)
                with m.If(self.port2.valid):
                    m.d.sync += [reg1[wcnt].eq(e2.value), wcnt.eq(wcnt + 1)]
                    with m.If(wcnt == k - 1):
                        m.d.sync += state.eq(DATA)
            with m.Case(DATA):
                m.d.comb += self.port1.ready.eq(~retire | self.out.ready)
                with m.If(self.port1.valid & self.port1.ready):
                    m.d.sync += [reg2[j].eq(window_next[j]) for j in range(km)]
                    with m.If(~marker1):
                        m.d.sync += base.eq(new_base)
                    with m.If(e1.last):
                        m.d.sync += state.eq(FINAL)
            with m.Case(OSRC):
                m.d.comb += [self.port1.ready.eq(take_in), self.port2.ready.eq(take_do)]
                with m.If(take_do):
                    with m.If(~marker2):
                        m.d.sync += [reg1[j].eq(cache_next[j]) for j in range(km)]
                        m.d.sync += base.eq(cache_base)
                    m.d.sync += p2done.eq(e2.last)
                with m.If(take_in):
                    m.d.sync += [reg2[j].eq(acc_next[j]) for j in range(km)]
                    m.d.sync += p1done.eq(e1.last)
                with m.If((p1done | (take_in & e1.last)) & (p2done | (take_do & e2.last))):
                    m.d.sync += state.eq(FINAL)
            with m.Case(FINAL):
                with m.If(self.out.ready):
                    m.d.sync += state.eq(IDLE)
        return m


def _build(values: dict[str, int | None]) -> tuple[PE, dict[str, int]]:
    params = HwParams(dw=values["DW"], k_max=values["K_MAX"], w_max=values["W_MAX"], acc_w=values["ACC_W"])
    return PE(params), params.as_dict()


BLOCK = BlockSpec(
    name="pe",
    help="row-convolution PE (SRC, MSRC, OSRC), docs/architecture.md sections 4 to 6",
    params=dict(DATAPATH_PARAMS),
    build=_build,
)
