"""PE RTL against golden.bitexact.rowops (bit for bit) and sparsetrain.arch.timing (cycle for cycle).

Every simulation goes through sim_tb.pe_driver.run_pe_ops; the cocotb testbench itself
fails on any beat or cycle mismatch, and the tests below check the returned results against
the golden model a second time, from the Python side.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparsetrain.arch.pe import HwParams
from sparsetrain.arch.timing import Mode
from sparsetrain.hw.blocks import BLOCKS, elaborate
from sparsetrain.hw.layouts import beat_layout, entry_layout, pe_cfg_layout
from sparsetrain.hw.pe import PE
from sparsetrain.sim_tb.faults import PE_FAULTS
from sparsetrain.sim_tb.pe_driver import PeOp, run_pe_ops, write_stimulus
from sparsetrain.sim_tb.pe_stimulus import directed_ops, random_ops
from sparsetrain.sim_tb.streams import always, pack, random_handshakes, unpack

ALL = (Mode.SRC, Mode.MSRC, Mode.OSRC)
# Small accumulator (ACC_W = 2*DW+1) so that saturation is reachable with short rows.
SMALL = HwParams(dw=8, k_max=5, w_max=16, acc_w=17)
DEFAULT = HwParams()


def assert_matches_golden(ops, results, exact_cycles: bool) -> None:
    assert len(results) == len(ops)
    for i, (op, r) in enumerate(zip(ops, results)):
        g = r.expected
        if op.raw_cfg is not None:
            assert r.cfg_error and [(b.base, b.count, b.last) for b in r.beats] == [(0, 0, True)], i
            assert r.cycles - r.stalls == 2, i
            continue
        assert not r.cfg_error, i
        assert r.beats == g.beats, (i, op.mode, r.beats, g.beats)
        np.testing.assert_array_equal(r.dense, g.dense)
        assert r.cycles - r.stalls == g.cycles, (i, r.cycles, r.stalls, g.cycles)
        if exact_cycles:
            assert r.stalls == 0 and r.cycles == g.cycles, (i, r.cycles, g.cycles)


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


def test_block_registry_builds_pe_and_rejects_unknown_params():
    assert "pe" in BLOCKS
    pe, used, spec = elaborate("pe", ["DW=8", "K_MAX=0x4", "W_MAX=16"])
    assert isinstance(pe, PE) and used == {"DW": 8, "K_MAX": 4, "W_MAX": 16, "ACC_W": 24}
    with pytest.raises(ValueError, match="'KMAX' is unknown .* allowed: DW, K_MAX, W_MAX, ACC_W"):
        elaborate("pe", ["KMAX=3"])
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

@pytest.mark.parametrize("params", [SMALL, DEFAULT], ids=["small", "default"])
def test_directed_cases_exact(params, seed):
    cases = directed_ops(params)
    ops = [op for group in cases.values() for op in group]
    results = run_pe_ops(ops, params, seed=seed)
    assert_matches_golden(ops, results, exact_cycles=True)
    # the saturation case must really saturate, or it tests nothing
    sat_ops = cases["maximum magnitude (saturation)"]
    lim = (1 << (params.acc_w - 1)) - 1
    if params is SMALL:  # 5 products of 127 * 127 exceed 2**16 - 1
        assert all(np.abs(op.golden(params.acc_w).dense).max() == lim for op in sat_ops)


def test_random_ops_no_backpressure_cycle_exact(seed):
    ops = random_ops(seed, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=seed)
    assert_matches_golden(ops, results, exact_cycles=True)


def test_random_ops_with_backpressure(seed):
    ops = random_ops(seed + 1, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=seed + 1, p_valid=0.6, p_ready=0.5)
    assert_matches_golden(ops, results, exact_cycles=False)
    assert sum(r.stalls for r in results) > 0  # back-pressure really happened


def test_reset_mid_operation_leaves_pe_ready_and_correct(seed):
    ops = random_ops(seed + 2, SMALL, ALL, 30)
    # reset at several depths: during weights/mask, during data, on the final beat cycle
    want = [(0, 2), (4, 3), (8, 5), (13, 4), (17, 99), (21, 1)]
    resets = [(i, max(1, min(at, ops[i].golden(SMALL.acc_w).cycles - 1))) for i, at in want]
    results = run_pe_ops(ops, SMALL, seed=seed + 2, p_valid=0.8, p_ready=0.8, resets=resets)
    aborted = {i for i, _ in resets}
    assert {i for i, r in enumerate(results) if r.aborted} == aborted
    live = [i for i in range(len(ops)) if i not in aborted]
    assert_matches_golden([ops[i] for i in live], [results[i] for i in live], exact_cycles=False)


@pytest.mark.parametrize("fault", list(PE_FAULTS))
def test_testbench_detects_a_wrong_expectation(fault, seed):
    """The checker can fail: one wrong expectation in the stimulus (a beat's lane, an op's cycle
    count, a cfg_error; sim_tb.faults) and the run of the correct PE must fail, for that reason."""
    hook, reason = PE_FAULTS[fault]
    ops = random_ops(seed + 3, SMALL, ALL, 20)
    with pytest.raises(AssertionError, match=reason):
        run_pe_ops(ops, SMALL, seed=seed + 3, stimulus_hook=hook)


# ---- Icarus: second opinion on a smaller subset ------------------------------------------

def test_icarus_directed_and_random_subset(seed):
    ops = [op for group in directed_ops(SMALL).values() for op in group] + random_ops(seed + 4, SMALL, ALL, 90)
    results = run_pe_ops(ops, SMALL, sim="icarus", seed=seed + 4, p_valid=0.8, p_ready=0.7)
    assert_matches_golden(ops, results, exact_cycles=False)


# ---- regress: >= 100,000 random operations per mode -----------------------------------------

REGRESS_OPS = int(os.environ.get("PE_REGRESS_OPS", "100000"))
REGRESS_CHUNK = 25000


def regress_chunks(total: int) -> list[int]:
    """Op counts of the chunks: at most REGRESS_CHUNK each and at least two chunks (one without
    and one with back-pressure), also for a short run (PE_REGRESS_OPS=2000)."""
    if total < 2:
        raise ValueError(f"PE_REGRESS_OPS = {total} is out of range; allowed: 2 or more")
    size = min(REGRESS_CHUNK, -(-total // 2))
    return [min(size, total - start) for start in range(0, total, size)]


@pytest.mark.regress
@pytest.mark.parametrize("mode", ALL, ids=[m.name for m in ALL])
def test_regress_random_ops(mode, seed):
    """REGRESS_OPS ops of one mode on SMALL, chunks alternately without back-pressure (cycle exact)
    and with it; at the end, the run must have covered what it claims: REGRESS_OPS random ops of
    the mode, every K from 1 to K_MAX and both strides among them, all-zero outputs, stall cycles
    under back-pressure, and saturated outputs (the directed case saturates every mode; random
    SRC/MSRC ops of SMALL rarely do, so saturation is counted over every op of the run)."""
    lim = (1 << (SMALL.acc_w - 1)) - 1
    ks, strides, saturated, empty, random_checked, bp_stalls = set(), set(), 0, 0, 0, 0
    random_saturated = 0
    for chunk, n in enumerate(regress_chunks(REGRESS_OPS)):
        chunk_seed = seed * 1000 + int(mode) * 100 + chunk
        print(f"mode {mode.name} chunk {chunk}: seed {chunk_seed}, {n} ops")
        ops = random_ops(chunk_seed, SMALL, (mode,), n)
        directed = [op for group in directed_ops(SMALL).values() for op in group] if chunk == 0 else []
        bp = chunk % 2 == 1
        results = run_pe_ops(directed + ops, SMALL, seed=chunk_seed, p_valid=0.7 if bp else 1.0,
                             p_ready=0.7 if bp else 1.0)
        assert_matches_golden(directed + ops, results, exact_cycles=not bp)
        saturated += sum(int(np.abs(r.dense).max(initial=0) == lim) for r in results if r.expected is not None)
        for op, r in zip(ops, results[len(directed):]):
            assert op.mode is mode and r.expected is not None and not r.aborted
            ks.add(op.k)
            strides.add(op.stride)
            random_saturated += int(np.abs(r.dense).max(initial=0) == lim)
            empty += int(not r.dense.any())
            random_checked += 1
            bp_stalls += r.stalls if bp else 0
    print(f"{random_checked} random {mode.name} ops checked: K {sorted(ks)}, strides {sorted(strides)}, "
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
