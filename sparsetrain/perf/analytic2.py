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

from ..golden.timing import Mode
from .microarch import MicroArch, expected_window_cycles


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
    mean_c = float(pmf @ cyc)
    if micro.prefetch:
        period = float(pmf @ np.maximum(load, cyc + 1)) if load > 0 else mean_c + 1.0
        lead = 2.0 + load
    else:
        lead = 2.0 + load + (1.0 if mode is Mode.MSRC else 0.0)
        period = lead + mean_c
    return OpLaw(float(p_issue), load, mean_c, period, lead)


def unit_moments(n_ops: np.ndarray, law: OpLaw, finish: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit class: E[latency], E[issued ops], E[group time per unit with C].

    X ~ Binomial(n, p_issue) ops are issued; the busiest PE runs m = ceil(X/3) of them:
    latency = lead + (m - 1) * period + E[C] + finish (finish only when X = 0). With C the
    group spends per unit the largest of its PE work X * period / 3, the finish (one finish
    pipeline) and half the latency (unit u + 2 needs unit u's accumulator), in expectation over X."""
    lats, issued, per_unit = [], [], []
    for n in np.asarray(n_ops, dtype=np.float64):
        ni = int(round(n))
        pmf = binom_pmf(ni, law.p_issue)
        x = np.arange(ni + 1)
        m = np.ceil(x / 3.0)
        lat = np.where(x > 0, law.lead + (m - 1) * law.period + law.mean_c, 0.0) + finish
        lats.append(float(pmf @ lat))
        issued.append(ni * law.p_issue)
        work = x * law.period / 3.0
        # unit u + 2 needs unit u's accumulator; unit u's ops queue behind the previous unit's work
        per_unit.append(float(pmf @ np.maximum(np.maximum(work, finish), (lat + (x > 0) * float(pmf @ np.minimum(work, law.period))) / 2.0)))
    return np.array(lats), np.array(issued), np.array(per_unit)


def makespan(counts: np.ndarray, n_ops: np.ndarray, finish: float, law: OpLaw, groups: int,
             pingpong: bool) -> tuple[float, float]:
    """(step cycles, issued ops) of units of a few classes (count, ops per unit) over the groups."""
    counts = np.asarray(counts, dtype=np.float64)
    lat, issued, per_unit = unit_moments(n_ops, law, finish)
    n_units = counts.sum()
    if n_units <= 0:
        return 0.0, 0.0
    total_issued = float(counts @ issued)
    if not pingpong:
        return max(float(lat.max()), math.ceil(n_units / groups) * float(counts @ lat) / n_units), total_issued
    waves = math.ceil(n_units / groups)
    t_mean = float(counts @ per_unit) / n_units
    lat_mean = float(counts @ lat) / n_units
    return max(float(lat.max()), (waves - 1) * t_mean + lat_mean), total_issued
