"""PE RTL against golden.bitexact.rowops (bit for bit) and sparsetrain.arch.timing (cycle for cycle).

Every simulation goes through sim_tb.pe_driver.run_pe_ops; the cocotb testbench itself
fails on any beat or cycle mismatch, and the tests below check the returned results against
the golden model a second time, from the Python side.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow
from sparsetrain.arch.pe import HwParams
from sparsetrain.arch.timing import Mode, OpTiming, op_timing, schedule
from sparsetrain.hw.blocks import BLOCKS, elaborate
from sparsetrain.hw.layouts import beat_layout, entry_layout, pe_cfg_layout
from sparsetrain.hw.pe import PE
from sparsetrain.sim_tb.faults import PE_FAULTS
from sparsetrain.sim_tb.pe_driver import PeConfig, PeOp, run_pe_ops, write_stimulus
from sparsetrain.sim_tb.pe_stimulus import directed_ops, random_ops
from sparsetrain.sim_tb.streams import always, pack, random_handshakes, unpack

ALL = (Mode.SRC, Mode.MSRC, Mode.OSRC)
# Small accumulator (ACC_W = 2*DW+1) so that saturation is reachable with short rows.
SMALL = HwParams(dw=8, k_max=5, w_max=16, acc_w=17)
DEFAULT = HwParams()
# The PE configurations (docs/architecture.md 6.1): first generation, A, B, A + B, E, A + B + E.
# Each is compiled once per test run (the runner caches builds by name).
GEN1 = PeConfig()
CONFIGS = [GEN1, PeConfig(prefetch=True), PeConfig(lookahead=2), PeConfig(prefetch=True, lookahead=2),
           PeConfig(osrc_window=2), PeConfig(prefetch=True, lookahead=2, osrc_window=2)]
CONFIG_IDS = ["gen1", "prefetch", "lookahead", "prefetch+lookahead", "osrc-window", "prefetch+lookahead+osrc-window"]
OSRC_WINDOW_CONFIGS = [c for c in CONFIGS if c.osrc_window == 2]
OSRC_WINDOW_IDS = [i for c, i in zip(CONFIGS, CONFIG_IDS) if c.osrc_window == 2]


def assert_matches_golden(ops, results, exact_cycles: bool, config: PeConfig = GEN1,
                          overlapped: bool | None = None) -> None:
    """Beats bit for bit against golden.bitexact.rowops; cycles against arch.timing: each op's
    ``cycles - stalls`` (unless ops overlapped, where that is not defined) and, with
    ``exact_cycles``, the cfg and final-beat cycle of every op against the schedule.
    overlapped (default: the config prefetches): ops were in flight together."""
    if overlapped is None:
        overlapped = config.prefetch
    assert len(results) == len(ops)
    for i, (op, r) in enumerate(zip(ops, results)):
        g = r.expected
        alone = schedule([op.timing(config.lookahead, config.osrc_window)], config.prefetch)[0].cycles
        if op.raw_cfg is not None:
            assert r.cfg_error and [(b.base, b.count, b.last) for b in r.beats] == [(0, 0, True)], i
            assert alone == 2
        else:
            assert not r.cfg_error, i
            assert r.beats == g.beats, (i, op.mode, r.beats, g.beats)
            np.testing.assert_array_equal(r.dense, g.dense)
            if not config.prefetch and config.lookahead == 1 and config.osrc_window == 1:  # the golden model's own count agrees
                assert alone == g.cycles, (i, alone, g.cycles)
        if not overlapped:
            assert r.cycles - r.stalls == alone, (i, r.cycles, r.stalls, alone)
    if exact_cycles:
        sched = schedule([op.timing(config.lookahead, config.osrc_window) for op in ops], config.prefetch)
        t0 = results[0].cfg_cycle - 1
        for i, (c, r) in enumerate(zip(sched, results)):
            assert r.stalls == 0, (i, r.stalls)
            assert (r.cfg_cycle - t0, r.final_cycle - t0) == (c.cfg, c.final), (i, r.cfg_cycle - t0,
                                                                                 r.final_cycle - t0, c)


# ---- pure Python: packing, parameters ----------------------------------------------------

def test_pack_matches_amaranth_layout_constants(rng):
    for _ in range(50):
        e = {"value": int(rng.integers(-128, 128)), "offset": int(rng.integers(0, 32)), "last": int(rng.integers(0, 2))}
        lay = entry_layout(SMALL)
        assert pack(lay, e) == lay.const(e).as_value().value
        assert unpack(lay, pack(lay, e)) == e
        lanes = [int(x) for x in rng.integers(-(1 << 16) + 1, 1 << 16, size=SMALL.k_max)]
        b = {"base": int(rng.integers(0, 32)), "count": int(rng.integers(0, 6)), "lanes": lanes, "last": 1}
        blay = beat_layout(SMALL)
        assert pack(blay, b) == blay.const(b).as_value().value
        assert unpack(blay, pack(blay, b)) == b


def test_backpressure_generators_are_seeded_and_keep_their_probability(seed):
    import random

    gen = random_handshakes(random.Random(seed), 0.3)
    draws = [next(gen) for _ in range(20_000)]
    again = random_handshakes(random.Random(seed), 0.3)
    assert draws == [next(again) for _ in range(20_000)]  # the same seed, the same back-pressure
    assert 0.28 < sum(draws) / len(draws) < 0.32
    assert all(next(random_handshakes(random.Random(seed), 1.0)) for _ in range(100))
    assert all(next(always()) for _ in range(100))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=f"probability = {bad} is out of range"):
            random_handshakes(random.Random(seed), bad)


def test_pack_rejects_out_of_range_values():
    with pytest.raises(ValueError, match="value = 128 is out of range"):
        pack(entry_layout(SMALL), {"value": 128, "offset": 0, "last": 0})
    with pytest.raises(ValueError, match="unknown"):
        pack(pe_cfg_layout(SMALL), {"mode": 0, "bogus": 1})


@pytest.mark.parametrize("kwargs, name", [({"dw": 3}, "DW"), ({"k_max": 17}, "K_MAX"), ({"w_max": 1}, "W_MAX"),
                                          ({"dw": 8, "acc_w": 16}, "ACC_W")])
def test_invalid_elaboration_parameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} = .* is out of range"):
        PE(HwParams(**kwargs))


def test_pe_constructor_rejects_wrong_types_and_values():
    with pytest.raises(TypeError, match="params = .* is not a HwParams"):
        PE({"DW": 8})
    with pytest.raises(TypeError, match="prefetch = 1 is not a bool"):
        PE(SMALL, prefetch=1)
    with pytest.raises(TypeError, match="lookahead = True is not an int"):
        PE(SMALL, lookahead=True)
    with pytest.raises(ValueError, match="lookahead = 0 is out of range; allowed: 1, 2"):
        PE(SMALL, lookahead=0)
    with pytest.raises(TypeError, match="OSRC_WINDOW = True is not an int; allowed: 1 .. 2"):
        PE(SMALL, osrc_window=True)
    for bad in (0, 3):
        with pytest.raises(ValueError, match=f"OSRC_WINDOW = {bad} is out of range; allowed: 1 .. 2"):
            PE(SMALL, osrc_window=bad)


def test_osrc_window_1_emits_the_same_verilog():
    """OSRC_WINDOW = 1 is the PE without E, signal for signal (section 6.1), in every combination
    with A and B; with 2 the ports differ (entry pairs on Port-1 and Port-2, port*_take2)."""
    from amaranth.back import verilog
    for kw in ({}, {"prefetch": True}, {"lookahead": 2}, {"prefetch": True, "lookahead": 2}):
        plain = verilog.convert(PE(SMALL, **kw), name="pe", emit_src=False)
        assert verilog.convert(PE(SMALL, osrc_window=1, **kw), name="pe", emit_src=False) == plain, kw
        assert "port2_take2" not in plain
        wide = verilog.convert(PE(SMALL, osrc_window=2, **kw), name="pe", emit_src=False)
        assert wide != plain and "port2_take2" in wide and "port1_take2" in wide
    pe, used, _ = elaborate("pe", ["DW=8", "K_MAX=5", "W_MAX=16", "ACC_W=17", "OSRC_WINDOW=1"])
    assert used["OSRC_WINDOW"] == 1
    assert verilog.convert(pe, name="pe", emit_src=False) == verilog.convert(PE(SMALL), name="pe", emit_src=False)


def test_schedule_recurrence_hand_worked():
    """arch.timing.schedule against the section 6.1 recurrence worked by hand."""
    src = op_timing(Mode.SRC, 3, 5)            # L = 3, C = 5
    osrc = op_timing(Mode.OSRC, 3, 4, 3)       # L = 0, C = 7, Port-2 busy while computing
    msrc = op_timing(Mode.MSRC, 2, 1)          # L = 2, C = 1
    got = [(c.cfg, c.load, c.start, c.final) for c in schedule([src, osrc, msrc, src], prefetch=True)]
    # op0: a=1, e=2, s=e+L=5, f=s+C=10
    # op1 (OSRC): a=2, e=max(3, s0=5)=5, s=max(5, f0+1=11)=11, f=18
    # op2 (MSRC): a=max(3, e1-1=4)=4, e=max(5, s1=11, p2=s1+C1=18)=18, s=max(20, 19)=20, f=21
    # op3: a=max(5, e2-1=17)=17, e=max(18, s2=20)=20, s=max(23, 22)=23, f=28
    assert got == [(1, 2, 5, 10), (2, 5, 11, 18), (4, 18, 20, 21), (17, 20, 23, 28)]
    # first generation: one op at a time, MSRC with its mask cycle
    assert [c.cycles for c in schedule([src, osrc, msrc], prefetch=False)] == [10, 9, 6]
    assert [c.cycles for c in schedule([src, osrc, msrc], prefetch=True)[:1]] == [10]
    # OSRC window (E): merge actions with their skip flags, worked by hand. K = 2, S = 1, P = 0;
    # input columns 0, 5, 9; dO columns 2, 3, 7, 8. Order: in0 dO2 dO3 in5 dO7 dO8 in9 (dO first
    # on a tie); in0 has no dO at 0-1..0, dO2 no input at 2..3, dO3 none at 3..4, in5 no dO at 4..5,
    # dO7 none at 7..8; dO8 has in9, in9 has dO8. Window 2: (s s) (s s) (s u) (u) = 4 cycles.
    from sparsetrain.arch.timing import osrc_skips
    flags = osrc_skips([0, 5, 9], [2, 3, 7, 8], 2, 1, 0)
    assert flags == [True, True, True, True, True, False, False]
    assert op_timing(Mode.OSRC, 2, 3, 4, skips=flags, osrc_window=2) == OpTiming(0, 4, osrc=True)
    assert op_timing(Mode.OSRC, 2, 3, 4, skips=flags, osrc_window=1) == OpTiming(0, 7, osrc=True)
    # K < S: K = 1, S = 2: an odd input column never meets a dO column (u = 2x only)
    assert osrc_skips([1, 2, 3], [1, 3], 1, 2, 0) == [True, False, False, True, True]
    # empty rows: the marker comes after the other row's actions and is never a skip
    assert osrc_skips([], [0, 4], 3, 1, 0) == [True, True, False]
    assert osrc_skips([3], [], 3, 1, 0) == [True, False]
    assert osrc_skips([], [], 3, 1, 0) == [False, False]
    with pytest.raises(ValueError, match="skips = .* is out of range; allowed: one flag per merge action"):
        op_timing(Mode.OSRC, 2, 3, 4, skips=flags[:-1], osrc_window=2)
    with pytest.raises(ValueError, match="OSRC_WINDOW = 3 is out of range; allowed: 1 .. 2"):
        op_timing(Mode.OSRC, 2, 3, 4, skips=flags, osrc_window=3)
    # look-ahead: skip runs consumed two at a time
    from sparsetrain.arch.timing import lookahead_cycles
    assert lookahead_cycles([True, True, True, False, True], 2) == 3   # (s s) (s u) (s)
    assert lookahead_cycles([False, True, False], 2) == 2               # (u) (s u)
    assert lookahead_cycles([True, True, True], 1) == 3


def test_block_registry_builds_pe_and_rejects_unknown_params():
    assert "pe" in BLOCKS
    pe, used, spec = elaborate("pe", ["DW=8", "K_MAX=0x4", "W_MAX=16"])
    assert isinstance(pe, PE) and used == {"DW": 8, "K_MAX": 4, "W_MAX": 16, "ACC_W": 24, "PREFETCH": 0, "LOOKAHEAD": 1,
                                           "OSRC_WINDOW": 1}
    assert not pe.prefetch and pe.lookahead == 1
    with pytest.raises(ValueError, match="'KMAX' is unknown .* allowed: DW, K_MAX, W_MAX, ACC_W"):
        elaborate("pe", ["KMAX=3"])
    pe, used, _ = elaborate("pe", ["DW=8", "PREFETCH=1", "LOOKAHEAD=2"])
    assert pe.prefetch and pe.lookahead == 2 and used["PREFETCH"] == 1 and used["LOOKAHEAD"] == 2
    assert "port1_take2" in pe.signature.members
    with pytest.raises(ValueError, match="PREFETCH = 2 is out of range; allowed: 0, 1"):
        elaborate("pe", ["PREFETCH=2"])
    with pytest.raises(ValueError, match="lookahead = 3 is out of range; allowed: 1, 2"):
        elaborate("pe", ["LOOKAHEAD=3"])
    pe, used, _ = elaborate("pe", ["DW=8", "OSRC_WINDOW=2"])
    assert pe.osrc_window == 2 and used["OSRC_WINDOW"] == 2
    assert {"port1_take2", "port2_take2"} <= set(pe.signature.members)
    with pytest.raises(ValueError, match="OSRC_WINDOW = 3 is out of range; allowed: 1 .. 2"):
        elaborate("pe", ["OSRC_WINDOW=3"])
    with pytest.raises(ValueError, match="K_MAX = 20 is out of range"):
        elaborate("pe", {"K_MAX": "20"})
    with pytest.raises(ValueError, match="block = 'nope' is unknown"):
        elaborate("nope")


def test_run_pe_ops_rejects_ops_the_instance_cannot_hold():
    from sparsetrain.arch.fixedpoint import SparseRow
    with pytest.raises(ValueError, match="K = 6 is out of range"):
        write_stimulus([PeOp.src([1] * 6, SparseRow(8))], SMALL, "/dev/null")
    with pytest.raises(ValueError, match="in_len = 40 is out of range"):
        write_stimulus([PeOp.src([1, 2], SparseRow(40))], SMALL, "/dev/null")


# ---- Verilator --------------------------------------------------------------------------

@pytest.mark.parametrize("params, config", [(SMALL, c) for c in CONFIGS] + [(DEFAULT, GEN1),
                                                                             (DEFAULT, CONFIGS[3])],
                         ids=[f"small-{i}" for i in CONFIG_IDS] + ["default-gen1", "default-prefetch+lookahead"])
def test_directed_cases_exact(params, config, seed):
    cases = directed_ops(params)
    ops = [op for group in cases.values() for op in group]
    results = run_pe_ops(ops, params, seed=seed, config=config)
    assert_matches_golden(ops, results, exact_cycles=True, config=config)
    # the saturation case must really saturate, or it tests nothing
    sat_ops = cases["maximum magnitude (saturation)"]
    lim = (1 << (params.acc_w - 1)) - 1
    if params is SMALL:  # 5 products of 127 * 127 exceed 2**16 - 1
        assert all(np.abs(op.golden(params.acc_w).dense).max() == lim for op in sat_ops)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_random_ops_no_backpressure_cycle_exact(config, seed):
    ops = random_ops(seed, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=seed, config=config)
    assert_matches_golden(ops, results, exact_cycles=True, config=config)


@pytest.mark.parametrize("config, serial", [(c, False) for c in CONFIGS] + [(c, True) for c in CONFIGS if c.prefetch],
                         ids=CONFIG_IDS + [f"{i}-serial" for c, i in zip(CONFIGS, CONFIG_IDS) if c.prefetch])
def test_random_ops_with_backpressure(config, serial, seed):
    ops = random_ops(seed + 1, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=seed + 1, p_valid=0.6, p_ready=0.5, config=config, serial=serial)
    assert_matches_golden(ops, results, exact_cycles=False, config=config, overlapped=config.prefetch and not serial)
    assert sum(r.stalls for r in results) > 0  # back-pressure really happened


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_reset_mid_operation_leaves_pe_ready_and_correct(config, seed):
    ops = random_ops(seed + 2, SMALL, ALL, 30)
    # reset at several depths: during weights/mask, during data, on the final beat cycle
    want = [(0, 2), (4, 3), (8, 5), (13, 4), (17, 99), (21, 1)]
    alone = [schedule([op.timing(config.lookahead, config.osrc_window)], config.prefetch)[0].cycles for op in ops]
    resets = [(i, max(1, min(at, alone[i] - 1))) for i, at in want]
    results = run_pe_ops(ops, SMALL, seed=seed + 2, p_valid=0.8, p_ready=0.8, resets=resets, config=config)
    aborted = {i for i, r in enumerate(results) if r.aborted}
    if config.prefetch:  # a reset drops every op in flight (up to three), the named one among them
        assert {i for i, _ in resets} <= aborted and len(aborted) < len(ops) - 8
    else:
        assert aborted == {i for i, _ in resets}
    live = [i for i in range(len(ops)) if i not in aborted]
    assert_matches_golden([ops[i] for i in live], [results[i] for i in live], exact_cycles=False, config=config,
                          overlapped=config.prefetch)


def _period_sequences() -> dict[str, tuple[list[PeOp], dict[str, int]]]:
    """Back-to-back runs of one op shape, with the steady-state period (final beat to final
    beat) that section 6 / 6.1 state for it, per configuration."""
    dense5 = SparseRow.from_dense(np.arange(1, 6), keep_zeros=True)        # N1 = 5
    two = SparseRow(8, [2, 6], [3, -4])                                     # N1 = 2
    do6 = SparseRow.from_dense(np.arange(1, 7), keep_zeros=True)            # dO row of 6, N1 = 6
    grad = SparseRow(4, [0, 2, 3], [1, 2, 3])                               # N2 = 3
    row = SparseRow(6, [0, 1, 4, 5], [1, -1, 2, 2])                         # N1 = 4
    n = 8
    return {
        # SRC K=3, N1=5: gen1 1+K+N1+1 = 10; prefetch max(N1+1, K) = 6
        "src k3 n5": ([PeOp.src([1, 2, 3], dense5)] * n, {"gen1": 10, "prefetch": 6}),
        # SRC K=5, N1=2: gen1 9; prefetch max(3, 5) = 5 (the weight load is the bottleneck)
        "src k5 n2": ([PeOp.src([1, -2, 3, 1, 2], two, pad=2)] * n, {"gen1": 9, "prefetch": 5}),
        # MSRC K=3, N1=6, all wanted: gen1 1+1+K+N1+1 = 12; prefetch max(7, 3) = 7
        "msrc k3 n6": ([PeOp.msrc([1, 2, 3], do6, [1] * 8)] * n, {"gen1": 12, "prefetch": 7}),
        # MSRC K=3, N1=6, all masked: look-ahead consumes 2 skip entries a cycle, C = 3:
        # gen1 + lookahead 9; prefetch + lookahead max(4, 3) = 4
        "msrc k3 n6 masked": ([PeOp.msrc([1, 2, 3], do6, [0] * 8)] * n,
                              {"gen1": 12, "prefetch": 7, "lookahead": 9, "prefetch+lookahead": 4,
                               "prefetch+lookahead+osrc-window": 4}),
        # OSRC N1=4, N2=3: gen1 1+N1+N2+1 = 9; prefetch: nothing to load, C + 1 = 8; every action
        # has a partner, so the OSRC window changes nothing
        "osrc n4 n3": ([PeOp.osrc(row, grad, 3)] * n, {"gen1": 9, "prefetch": 8}),
        # OSRC K=2 with five skip actions of seven (test_schedule_recurrence_hand_worked): gen1 9,
        # prefetch 8; window 2: C = 4, 1 + 4 + 1 = 6; prefetch + window: C + 1 = 5
        "osrc skips": ([PeOp.osrc(SparseRow(10, [0, 5, 9], [3, -2, 5]), SparseRow(9, [2, 3, 7, 8], [1, 2, -3, 4]), 2)] * n,
                       {"gen1": 9, "prefetch": 8, "osrc-window": 6, "prefetch+lookahead+osrc-window": 5}),
    }


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_back_to_back_periods(config, seed):
    """Back-to-back ops with cfg offered early: every op's cfg and final-beat cycle equal the
    schedule, and the steady-state period is the one section 6.1 states."""
    cid = CONFIG_IDS[CONFIGS.index(config)]
    seqs = _period_sequences()
    ops = [op for seq, _ in seqs.values() for op in seq]
    results = run_pe_ops(ops, SMALL, seed=seed, config=config)
    assert_matches_golden(ops, results, exact_cycles=True, config=config)
    i = 0
    for name, (seq, periods) in seqs.items():
        finals = [r.final_cycle for r in results[i:i + len(seq)]]
        i += len(seq)
        measured = sorted({b - a for a, b in zip(finals[2:], finals[3:])})
        want = periods.get(cid, periods["prefetch" if config.prefetch else "gen1"])
        print(f"{cid}: {name}: period {measured} cycles (stated {want})")
        assert measured == [want], (name, measured, want)


def _osrc_window_cases() -> list[PeOp]:
    """Directed OSRC ops for the window (E): partners absent in runs on either port, K < S,
    stride 2, empty rows, skips at the row ends and next to the markers."""
    r = SparseRow
    return [
        PeOp.osrc(r(10, [0, 5, 9], [3, -2, 5]), r(9, [2, 3, 7, 8], [1, 2, -3, 4]), 2),
        PeOp.osrc(r(8, [1, 3, 5, 7], [1, 2, 3, 4]), r(4, [0, 1, 2, 3], [5, 6, 7, 8]), 1, stride=2),   # K < S: no pair
        PeOp.osrc(r(8, [0, 2, 3, 7], [1, 2, 3, 4]), r(4, [0, 1, 3], [5, 6, 7]), 1, stride=2),         # K < S: some
        PeOp.osrc(r(12, [], []), r(10, list(range(10)), list(range(1, 11))), 3),                     # empty input
        PeOp.osrc(r(12, list(range(12)), list(range(1, 13))), r(10, [], []), 3),                     # empty dO
        PeOp.osrc(r(12, [], []), r(10, [], []), 3),                                                  # both empty
        PeOp.osrc(r(16, [0, 1, 2, 3], [1, 1, 1, 1]), r(14, [10, 11, 12, 13], [2, 2, 2, 2]), 3),      # apart
        PeOp.osrc(r(16, [12, 13, 14, 15], [1, 1, 1, 1]), r(14, [0, 1, 2, 3], [2, 2, 2, 2]), 3),      # apart
        PeOp.osrc(r(15, [0, 4, 9, 14], [7, -7, 7, -7]), r(8, [0, 1, 3, 6], [1, -1, 2, -2]), 3, stride=2, pad=1),
        PeOp.osrc(r(16, list(range(0, 16, 3)), [5] * 6), r(16, list(range(1, 16, 3)), [3] * 5), 1),  # K=1 interleaved
        PeOp.osrc(r(16, [15], [9]), r(16, [0], [4]), 5, pad=2),
    ]


@pytest.mark.parametrize("config", OSRC_WINDOW_CONFIGS, ids=OSRC_WINDOW_IDS)
@pytest.mark.parametrize("backpressure", [False, True], ids=["no-backpressure", "backpressure"])
def test_osrc_window_random_and_directed_osrc_ops(config, backpressure, seed):
    """E: directed OSRC cases and 1,500 random OSRC ops (every K, both strides, densities from
    empty to dense), bit-exact against golden.bitexact.rowops.osrc; without back-pressure every op's
    cfg and final-beat cycle equal the schedule of window_cycles(osrc_skips, 2), with it each op's
    cycles - stalls does (one op at a time where the PE prefetches). The window must really save
    cycles (skips consumed in pairs), or the test tests nothing."""
    s = seed + (11 if backpressure else 10)
    print("seed", s)
    ops = _osrc_window_cases() + random_ops(s, SMALL, (Mode.OSRC,), 1500)
    serial = backpressure and config.prefetch
    results = run_pe_ops(ops, SMALL, seed=s, p_valid=0.6 if backpressure else 1.0, p_ready=0.5 if backpressure else 1.0,
                         config=config, serial=serial)
    assert_matches_golden(ops, results, exact_cycles=not backpressure, config=config,
                          overlapped=config.prefetch and not serial)
    c1 = sum(op.timing(1, 1).compute for op in ops)
    c2 = sum(op.timing(1, 2).compute for op in ops)
    print(f"OSRC merge cycles: {c1} (window 1) -> {c2} (window 2), {c2 / c1:.3f}")
    assert c2 < 0.9 * c1
    assert {op.k for op in ops} == set(range(1, SMALL.k_max + 1)) and {op.stride for op in ops} == {1, 2}
    if backpressure:
        assert sum(r.stalls for r in results) > 0


@pytest.mark.parametrize("fault", list(PE_FAULTS))
def test_testbench_detects_a_wrong_expectation(fault, seed):
    """The checker can fail: one wrong expectation in the stimulus (a beat's lane, an op's cycle
    count, a cfg_error; sim_tb.faults) and the run of the correct PE must fail, for that reason."""
    hook, reason = PE_FAULTS[fault]
    ops = random_ops(seed + 3, SMALL, ALL, 20)
    with pytest.raises(AssertionError, match=reason):
        run_pe_ops(ops, SMALL, seed=seed + 3, stimulus_hook=hook)


# ---- Icarus: second opinion on a smaller subset ------------------------------------------

@pytest.mark.parametrize("config", [GEN1, CONFIGS[3]], ids=["gen1", "prefetch+lookahead"])
def test_icarus_directed_and_random_subset(config, seed):
    ops = [op for group in directed_ops(SMALL).values() for op in group] + random_ops(seed + 4, SMALL, ALL, 90)
    results = run_pe_ops(ops, SMALL, sim="icarus", seed=seed + 4, p_valid=0.8, p_ready=0.7, config=config,
                         serial=config.prefetch)
    assert_matches_golden(ops, results, exact_cycles=False, config=config, overlapped=False)


# ---- regress: >= 100,000 random operations per mode -----------------------------------------

REGRESS_OPS = int(os.environ.get("PE_REGRESS_OPS", "100000"))
# four chunks at least, so that a reduced count still runs half of its ops with back-pressure
REGRESS_CHUNK = min(25000, max(1, REGRESS_OPS // 4))


def regress_chunks(total: int) -> list[int]:
    """Op counts of the chunks: at most REGRESS_CHUNK each and at least two chunks (one without
    and one with back-pressure), also for a short run (PE_REGRESS_OPS=2000)."""
    if total < 2:
        raise ValueError(f"PE_REGRESS_OPS = {total} is out of range; allowed: 2 or more")
    size = min(REGRESS_CHUNK, -(-total // 2))
    return [min(size, total - start) for start in range(0, total, size)]


@pytest.mark.regress
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("mode", ALL, ids=[m.name for m in ALL])
def test_regress_random_ops(mode, config, seed):
    """REGRESS_OPS ops of one mode on SMALL, chunks alternately without back-pressure (cycle exact
    against the schedule) and with it (with prefetch, the back-pressured chunks alternate one op
    at a time, cycles - stalls exact, and overlapped, beats exact); at the end, the run must have
    covered what it claims: REGRESS_OPS random ops of the mode, every K from 1 to K_MAX and both
    strides among them, all-zero outputs, stall cycles under back-pressure, and saturated outputs
    (the directed case saturates every mode; random SRC/MSRC ops of SMALL rarely do, so
    saturation is counted over every op of the run)."""
    lim = (1 << (SMALL.acc_w - 1)) - 1
    ks, strides, saturated, empty, random_checked, bp_stalls = set(), set(), 0, 0, 0, 0
    random_saturated = 0
    for chunk, n in enumerate(regress_chunks(REGRESS_OPS)):
        chunk_seed = seed * 1000 + int(mode) * 100 + chunk
        print(f"mode {mode.name} config {config} chunk {chunk}: seed {chunk_seed}, {n} ops")
        ops = random_ops(chunk_seed, SMALL, (mode,), n)
        directed = [op for group in directed_ops(SMALL).values() for op in group] if chunk == 0 else []
        bp = chunk % 2 == 1
        serial = config.prefetch and chunk % 4 == 1
        results = run_pe_ops(directed + ops, SMALL, seed=chunk_seed, p_valid=0.7 if bp else 1.0,
                             p_ready=0.7 if bp else 1.0, config=config, serial=serial)
        assert_matches_golden(directed + ops, results, exact_cycles=not bp, config=config,
                              overlapped=config.prefetch and not serial)
        saturated += sum(int(np.abs(r.dense).max(initial=0) == lim) for r in results if r.expected is not None)
        for op, r in zip(ops, results[len(directed):]):
            assert op.mode is mode and r.expected is not None and not r.aborted
            ks.add(op.k)
            strides.add(op.stride)
            random_saturated += int(np.abs(r.dense).max(initial=0) == lim)
            empty += int(not r.dense.any())
            random_checked += 1
            bp_stalls += r.stalls if bp else 0
    print(f"{random_checked} random {mode.name} ops checked ({config}): K {sorted(ks)}, strides {sorted(strides)}, "
          f"{empty} all-zero, {bp_stalls} stall cycles under back-pressure; saturated outputs in "
          f"{saturated} ops ({random_saturated} of them random)")
    assert random_checked == REGRESS_OPS
    assert ks == set(range(1, SMALL.k_max + 1)) and strides == {1, 2}
    assert saturated > 0 and empty > 0 and bp_stalls > 0


@pytest.mark.regress
def test_regress_default_config_random_ops(seed):
    """The default (synthesis-sized) configuration: 3,000 mixed ops with back-pressure."""
    seed = seed + 7
    print("seed", seed)
    ops = random_ops(seed, DEFAULT, ALL, 3000)
    results = run_pe_ops(ops, DEFAULT, seed=seed, p_valid=0.8, p_ready=0.8)
    assert_matches_golden(ops, results, exact_cycles=False)


@pytest.mark.parametrize("params", [["PREFETCH=1"], ["PREFETCH=1", "LOOKAHEAD=2"], ["LOOKAHEAD=2", "K_MAX=1", "W_MAX=2"],
                                    ["OSRC_WINDOW=2"], ["PREFETCH=1", "LOOKAHEAD=2", "OSRC_WINDOW=2"],
                                    ["OSRC_WINDOW=2", "K_MAX=1", "W_MAX=2"]],
                         ids=["prefetch", "prefetch+lookahead", "lookahead-k1", "osrc-window",
                              "prefetch+lookahead+osrc-window", "osrc-window-k1"])
def test_second_generation_verilog_is_lint_clean(tmp_path, params):
    """Verilator lint of the second-generation PE (the first generation's is in test_lint)."""
    from sparsetrain.hw.blocks import write_block
    from sparsetrain.hw.lint import WAIVERS, lint_file
    vpath, _ = write_block("pe", params, tmp_path)
    res = lint_file(vpath)
    assert res.ok, res.failures
    assert set(res.waived) <= set(WAIVERS)
