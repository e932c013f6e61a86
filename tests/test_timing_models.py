"""The two row-op timing functions of the second generation agree.

sparsetrain.arch.timing.schedule (the PE's, which the PE testbench checks the RTL against cycle
for cycle) runs the docs/architecture.md section 6.1 recurrence over a whole back-to-back
sequence; sparsetrain.arch.microarch.op_times (the performance model's) runs the same
recurrence one op at a time, the caller picking each cfg cycle (here the earliest one,
``queue_free``: max(a + 1, e - 1) with prefetch, f + 1 without). They are kept apart because
the performance model places ops on several PEs and cycles of its own choosing, but for one PE
fed back to back they must give the same cycles, and the look-ahead counts (timing's
``lookahead_cycles``, microarch's ``window_cycles`` with window 2) must agree too.
Refused ops exist only in the PE's function (the performance model never issues one).
"""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.microarch import op_times, window_cycles
from sparsetrain.arch.timing import Mode, OpTiming, lookahead_cycles, op_timing, schedule

SEQUENCES = 3000


def _random_sequence(rng, lookahead: int) -> list[tuple[Mode, OpTiming]]:
    ops = []
    for _ in range(int(rng.integers(1, 13))):
        mode = Mode(int(rng.integers(0, 3)))
        k = int(rng.integers(1, 17))
        n1 = int(rng.integers(1, 25))
        if mode is Mode.OSRC:
            t = op_timing(mode, k, n1, int(rng.integers(1, 25)))
        elif mode is Mode.MSRC:
            skips = list(rng.random(n1) < rng.random())  # sequences from mostly useful to mostly skips
            t = op_timing(mode, k, n1, skips=skips, lookahead=lookahead)
        else:
            t = op_timing(mode, k, n1)
        ops.append((mode, t))
    return ops


@pytest.mark.parametrize("prefetch", [False, True], ids=["gen1", "prefetch"])
@pytest.mark.parametrize("lookahead", [1, 2])
def test_perf_op_times_agrees_with_pe_schedule(prefetch, lookahead, rng):
    compared = 0
    for _ in range(SEQUENCES):
        ops = _random_sequence(rng, lookahead)
        sched = schedule([t for _, t in ops], prefetch)
        prev = None
        for i, ((mode, t), c) in enumerate(zip(ops, sched)):
            a = 1 if prev is None else prev.queue_free
            prev = op_times(prev, a, mode, t.load, t.compute, prefetch)
            assert (prev.a, prev.e, prev.s, prev.f) == (c.cfg, c.load, c.start, c.final), (i, ops, prev, c)
            compared += 1
    print(f"{SEQUENCES} sequences, {compared} ops: op_times == schedule cycle for cycle")
    assert compared >= SEQUENCES


def test_lookahead_counts_agree(rng):
    for _ in range(5000):
        skips = [bool(x) for x in rng.random(int(rng.integers(1, 30))) < rng.random()]
        for window in (1, 2):
            assert lookahead_cycles(skips, window) == window_cycles(skips, window), (skips, window)


def test_osrc_skip_flags_agree_with_the_performance_model(rng):
    """E (section 6.1 / 12.6): the PE's merge-action skip flags (timing.osrc_skips, from the
    entries' columns, which the PE testbench checks the RTL against) equal the performance
    model's (perf.ops2, from the non-zero patterns), so the RTL's OSRC cycles with window 2
    are the ones the performance model counts."""
    from sparsetrain.arch.timing import osrc_skips
    from sparsetrain.golden.bitexact.rowops import conv_out_len
    from sparsetrain.perf.ops2 import _merge_skip_flags, tap_matrix
    skips_seen = 0
    for _ in range(3000):
        k = int(rng.integers(1, 12))
        stride = int(rng.integers(1, 3))
        pad = int(rng.integers(0, k))
        w_in = int(rng.integers(max(1, k - 2 * pad), 40))
        w_out = conv_out_len(w_in, k, stride, pad)
        i_row = rng.random(w_in) < rng.random()
        g_row = rng.random(w_out) < rng.random()
        mine = osrc_skips(np.flatnonzero(i_row).tolist(), np.flatnonzero(g_row).tolist(), k, stride, pad)
        theirs = _merge_skip_flags(i_row, g_row, tap_matrix(w_in, w_out, k, stride, pad), stride, pad)
        assert mine == theirs, (k, stride, pad, i_row, g_row)
        skips_seen += sum(mine)
    assert skips_seen > 0
