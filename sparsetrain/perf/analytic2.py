"""Closed form of the second-generation schedule (section 12) over per-layer densities.

Rows are i.i.d.: a row of length W and density d has Binomial(W, d) non-zeros. From that the
form takes exact expectations of the per-op quantities of ``microarch`` (issue probability
under D, compute length C with B / E look-ahead over i.i.d. skip flags, the prefetch period
E[max(L, C + 1)] of ``op_times`` in steady state) and puts them through the unit and group
rules of section 12 (ceil(X/3) ops on the busiest PE, X ~ Binomial(ops, p_issue); with C the
group's per-unit time is bounded by its PE work, the PPU finish and the two accumulators).
Agreement with the event-level schedule is tested (tests/test_perf_gen2.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..arch.microarch import MicroArch, expected_window_cycles
from ..arch.timing import Mode


@lru_cache(maxsize=4096)
def binom_pmf(n: int, p: float) -> np.ndarray:
    """pmf of Binomial(n, p) on 0 .. n."""
    k = np.arange(n + 1)
    if p <= 0.0:
        return (k == 0).astype(float)
    if p >= 1.0:
        return (k == n).astype(float)
    lg = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(n + 1)])
    pmf = np.exp(lg + k * math.log(p) + (n - k) * math.log1p(-p))
    return pmf / pmf.sum()


@dataclass(frozen=True)
class RowLaw:
    """Distribution of an op's Port-1 (and, OSRC, Port-2) row."""

    w1: int
    d1: float
    w2: int = 0
    d2: float = 0.0


@dataclass
class OpLaw:
    """Expected per-op quantities of one step under one MicroArch (issued ops only)."""

    p_issue: float   # probability an op is issued (1 without D)
    load: int        # L
    mean_c: float    # E[C]
    period: float    # steady per-op PE time on one PE
    lead: float      # span of a lone op minus its C (cfg to first compute, + final beat)
    mode: Mode = Mode.SRC
    entries: np.ndarray | None = None   # pmf of an issued op's entries (Port-1, or Port-1 + Port-2 for OSRC)
    q_skip: float = 0.0                 # probability an entry / merge action is a skip item (B / E)
    window: int = 1                     # B / E look-ahead window of this mode
    op_scan: int = 0                    # OP words the op reader examines per cycle (0 = unlimited)


def _entries_pmf(w: int, d: float, skip_empty: bool) -> np.ndarray:
    """pmf of the entries an op streams (empty row = one marker), conditioned on issue under D."""
    pmf = binom_pmf(w, d).copy()
    if skip_empty:
        if pmf[1:].sum() <= 0:
            return np.array([0.0, 1.0])  # never issued; any law will do (p_issue = 0)
        pmf[0] = 0.0
        return pmf / pmf.sum()
    pmf[1] += pmf[0]
    pmf[0] = 0.0
    return pmf


def op_law(mode: Mode, k: int, stride: int, rows: RowLaw, mask: float, micro: MicroArch) -> OpLaw:
    """Exact expectations of section 12's per-op rules for i.i.d. rows (skip flags i.i.d. too)."""
    pe1 = binom_pmf(rows.w1, rows.d1)
    if mode is Mode.OSRC:
        pe2 = binom_pmf(rows.w2, rows.d2)
        p_issue = (1 - pe1[0]) * (1 - pe2[0]) if micro.skip_empty else 1.0
        pmf = np.convolve(_entries_pmf(rows.w1, rows.d1, micro.skip_empty),
                          _entries_pmf(rows.w2, rows.d2, micro.skip_empty))
        load = 0
        if micro.osrc_window > 1:
            # an input entry has about ceil(K/S) dO partners, a dO entry K input partners
            q_i, q_o = (1 - rows.d2) ** math.ceil(k / stride), (1 - rows.d1) ** k
            n1, n2 = rows.w1 * rows.d1, rows.w2 * rows.d2
            q = (n1 * q_i + n2 * q_o) / (n1 + n2) if n1 + n2 > 0 else 0.0
            cyc = expected_window_cycles(len(pmf) - 1, q, micro.osrc_window)
        else:
            cyc = np.arange(len(pmf), dtype=float)
    else:
        p_issue = (1 - pe1[0]) if micro.skip_empty else 1.0
        pmf = _entries_pmf(rows.w1, rows.d1, micro.skip_empty)
        load = k
        if mode is Mode.MSRC and micro.lookahead > 1:
            cyc = expected_window_cycles(len(pmf) - 1, (1 - mask) ** k, micro.lookahead)
            cyc[1] = 1.0
        else:
            cyc = np.arange(len(pmf), dtype=float)
    q_skip, window = 0.0, 1
    if mode is Mode.OSRC and micro.osrc_window > 1:
        q_skip, window = q, micro.osrc_window
    elif mode is Mode.MSRC and micro.lookahead > 1:
        q_skip, window = (1 - mask) ** k, micro.lookahead
    mean_c = float(pmf @ cyc)
    # 12.4: with D's finite op reader the first OP word is examined in t0 + 2, not t0 + 1 (without
    # D, the dense baseline too, the plain reader hands out ops from t0 + 1)
    scan = micro.op_scan if micro.skip_empty else 0
    reader = 1.0 if scan else 0.0
    if micro.prefetch:
        period = float(pmf @ np.maximum(load, cyc + 1)) if load > 0 else mean_c + 1.0
        lead = 2.0 + load + reader
    else:
        lead = 2.0 + load + (1.0 if mode is Mode.MSRC else 0.0)
        period = lead + mean_c
        lead += reader
    return OpLaw(float(p_issue), load, mean_c, period, lead, mode, pmf, q_skip, window, scan)


SIM_UNITS = 96      # units one group runs in the C estimate (the first quarter is warm-up)
SIM_SEED = 12       # fixed: the closed form is deterministic


def unit_moments(n_ops: np.ndarray, law: OpLaw, finish: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit class: E[latency from take to finish end], E[issued ops], E[PE work per unit].

    X ~ Binomial(n, p_issue) ops are issued; the busiest PE runs m = ceil(X/3) of them:
    latency = lead + (m - 1) * period + E[C] + finish (finish only when X = 0)."""
    lats, issued, works = [], [], []
    for n in np.asarray(n_ops, dtype=np.float64):
        ni = int(round(n))
        pmf = binom_pmf(ni, law.p_issue)
        x = np.arange(ni + 1)
        m = np.ceil(x / 3.0)
        span = np.where(x > 0, law.lead + (m - 1) * law.period + law.mean_c, 0.0)
        read = 1 + math.ceil(ni / law.op_scan) if law.op_scan else 0.0    # 12.4: the op reader's time
        lats.append(float(pmf @ np.maximum(span, read)) + finish)
        issued.append(ni * law.p_issue)
        works.append(max(ni * law.p_issue * law.period / 3.0, read))
    return np.array(lats), np.array(issued), np.array(works)


def _simulate(law: OpLaw, finish: float, micro: MicroArch, draw_x, n_units: int) -> float:
    """Mean spacing of unit ends of one group running n_units units ((n ops, X issued) from
    draw_x(rng), op lengths from the law) through the event-level rules (schedule2.run_unit, op_times)."""
    from ..arch.microarch import window_cycles
    from .ops2 import UnitOps
    from .schedule2 import _Group, run_unit
    rng = np.random.default_rng(SIM_SEED)
    entries = law.entries if law.entries is not None else np.array([0.0, 1.0])
    p = entries / entries.sum()
    g, ends = _Group(micro.pingpong), []
    for _ in range(n_units):
        n, x = (int(v) for v in draw_x(rng))
        ns = rng.choice(len(p), size=x, p=p)
        if law.window > 1 and law.q_skip > 0:   # (no draws when nothing skips: the same stream as window 1)
            comp = np.array([window_cycles((rng.random(nn) < law.q_skip).tolist(), law.window) for nn in ns],
                            dtype=np.int64)
        else:
            comp = ns.astype(np.int64)
        issued = np.zeros(max(n, x), bool)
        issued[rng.choice(len(issued), size=x, replace=False)] = True
        full = np.zeros(len(issued), np.int64)
        full[issued] = comp
        ops = UnitOps(issued, np.full(len(issued), law.load, np.int64), full, np.zeros(len(issued), np.int64),
                      law.mode)
        ends.append(run_unit(g, ops, int(round(finish)), micro)[0])
    warm = n_units // 4
    return (ends[-1] - ends[warm]) / (n_units - 1 - warm)


def _clear_case(work: float, lat: float, finish: float, period: float) -> float | None:
    """Per-unit time with C when one bound clearly dominates: the PE work when it exceeds half the
    latency by a period (the two accumulators never hold the PEs up), or the finish likewise."""
    if work >= lat / 2.0 + period:
        return work
    if finish >= work and finish >= lat / 2.0 + period:
        return finish
    return None


def pingpong_unit_time(counts: np.ndarray, n_ops: np.ndarray, finish: float, law: OpLaw,
                       micro: MicroArch, runs: bool) -> float:
    """Mean time per unit of a group with C in steady state.

    Clear cases in closed form (``_clear_case``). Otherwise (few ops per unit, where the ops of two
    units and the two accumulators interact) one group runs units drawn from the same laws through
    the event-level rules and the mean spacing is taken. ``runs``: consecutive units share their
    issue count (GTW: the units (f, c, kr) of one filter read the same dO rows, so D skips the same
    ops for all of them); then the time is the average over X of the steady time of a run of X."""
    lat, issued, work = unit_moments(n_ops, law, finish)
    w = counts / counts.sum()
    e_work, e_lat = float(w @ work), float(w @ lat)
    clear = _clear_case(e_work, e_lat, finish, law.period)
    if clear is not None:
        return max(clear, finish)
    n_vals = np.rint(np.asarray(n_ops, dtype=np.float64)).astype(int)
    if not runs:
        def draw(rng):
            n = n_vals[rng.choice(len(n_vals), p=w)]
            return n, rng.binomial(n, law.p_issue)
        return max(_simulate(law, finish, micro, draw, SIM_UNITS), finish)
    total = 0.0
    for cls, wc in zip(n_vals, w):
        pmf = binom_pmf(int(cls), law.p_issue)
        for x in np.flatnonzero(pmf > 1e-4):
            m = math.ceil(x / 3.0)
            read = 1 + math.ceil(cls / law.op_scan) if law.op_scan else 0.0
            lat_x = max(law.lead + (m - 1) * law.period + law.mean_c if x > 0 else 0.0, read) + finish
            t = _clear_case(max(x * law.period / 3.0, read), lat_x, finish, law.period)
            if t is None:
                t = _simulate(law, finish, micro, lambda rng, n=cls, x=x: (n, x), SIM_UNITS // 2)
            total += wc * pmf[x] * max(t, finish)
    return total / max(1e-12, sum(wc * binom_pmf(int(c), law.p_issue)[binom_pmf(int(c), law.p_issue) > 1e-4].sum()
                                   for c, wc in zip(n_vals, w)))


def makespan(counts: np.ndarray, n_ops: np.ndarray, finish: float, law: OpLaw, groups: int,
             micro: MicroArch, runs: bool = False) -> tuple[float, float]:
    """(step cycles, issued ops) of units of a few classes (count, ops per unit) over the groups."""
    counts = np.asarray(counts, dtype=np.float64)
    lat, issued, _ = unit_moments(n_ops, law, finish)
    n_units = counts.sum()
    if n_units <= 0:
        return 0.0, 0.0
    total_issued = float(counts @ issued)
    lat_mean = float(counts @ lat) / n_units
    waves = math.ceil(n_units / groups)
    # a group's time per unit in steady state: its latency without C, the C estimate with it
    t_mean = pingpong_unit_time(counts, n_ops, finish, law, micro, runs) if micro.pingpong else lat_mean
    u = micro.unit_rate
    if not u:
        return max(float(lat.max()), (waves - 1) * t_mean + lat_mean), total_issued
    # F (12.9): the controller hands out at most U units a cycle. The first wave goes out at that
    # rate (the last of its min(units, G) units in cycle (min(units, G) - 1) / U); after it the
    # groups and the controller form a closed loop: a group waits for the controller (1 / U a
    # unit), then runs its unit (t_mean until it can take the next). Its throughput x (units a
    # cycle) is min(U, G / t_mean) when nothing varies and lower near the crossing, where a free
    # group waits behind others; mean value analysis of the loop gives it (``_loop_throughput``),
    # and each further wave of G units takes G / x.
    first = min(n_units, groups)
    stagger = (first - 1) / u
    x = _loop_throughput(groups, 1.0 / u, max(0.0, t_mean - 1.0 / u))
    spread = (waves - 1) * groups / x + stagger + lat_mean   # (waves - 1) * t_mean when the rate does not bind
    rate_bound = math.ceil(n_units / u) - 1 + lat_mean
    return max(float(lat.max()), spread, rate_bound), total_issued


def _loop_throughput(groups: int, service: float, think: float) -> float:
    """Units a cycle of ``groups`` groups sharing one controller (``service`` cycles a unit), each
    busy ``think`` cycles between units: exact mean value analysis of the closed loop."""
    q = 0.0
    x = 1.0 / (service + think)
    for n in range(1, groups + 1):
        r = service * (1.0 + q)
        x = n / (r + think)
        q = x * r
    return x
