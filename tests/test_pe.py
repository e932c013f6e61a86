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
from sparsetrain.sim_tb import runner
from sparsetrain.sim_tb.pe_driver import PeOp, pe_build, run_pe_ops, write_stimulus
from sparsetrain.sim_tb.pe_stimulus import directed_ops, random_ops
from sparsetrain.sim_tb.streams import pack, unpack

SEED = int(os.environ.get("SPARSETRAIN_SEED", "20240611"))
ALL = (Mode.SRC, Mode.MSRC, Mode.OSRC)
# Small accumulator (ACC_W = 2*DW+1) so that saturation is reachable with short rows.
SMALL = HwParams(dw=8, k_max=5, w_max=16, acc_w=17)
DEFAULT = HwParams()


def assert_matches_golden(ops, results, exact_cycles: bool) -> None:
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

def test_pack_matches_amaranth_layout_constants():
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
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
def test_directed_cases_exact(params):
    cases = directed_ops(params)
    ops = [op for group in cases.values() for op in group]
    results = run_pe_ops(ops, params, seed=SEED)
    assert_matches_golden(ops, results, exact_cycles=True)
    # the saturation case must really saturate, or it tests nothing
    sat_ops = cases["maximum magnitude (saturation)"]
    lim = (1 << (params.acc_w - 1)) - 1
    if params is SMALL:  # 5 products of 127 * 127 exceed 2**16 - 1
        assert all(np.abs(op.golden(params.acc_w).dense).max() == lim for op in sat_ops)


def test_random_ops_no_backpressure_cycle_exact():
    print("seed", SEED)
    ops = random_ops(SEED, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=SEED)
    assert_matches_golden(ops, results, exact_cycles=True)


def test_random_ops_with_backpressure():
    print("seed", SEED + 1)
    ops = random_ops(SEED + 1, SMALL, ALL, 600)
    results = run_pe_ops(ops, SMALL, seed=SEED + 1, p_valid=0.6, p_ready=0.5)
    assert_matches_golden(ops, results, exact_cycles=False)
    assert sum(r.stalls for r in results) > 0  # back-pressure really happened


def test_reset_mid_operation_leaves_pe_ready_and_correct():
    print("seed", SEED + 2)
    ops = random_ops(SEED + 2, SMALL, ALL, 30)
    # reset at several depths: during weights/mask, during data, on the final beat cycle
    want = [(0, 2), (4, 3), (8, 5), (13, 4), (17, 99), (21, 1)]
    resets = [(i, max(1, min(at, ops[i].golden(SMALL.acc_w).cycles - 1))) for i, at in want]
    results = run_pe_ops(ops, SMALL, seed=SEED + 2, p_valid=0.8, p_ready=0.8, resets=resets)
    aborted = {i for i, _ in resets}
    assert {i for i, r in enumerate(results) if r.aborted} == aborted
    live = [i for i in range(len(ops)) if i not in aborted]
    assert_matches_golden([ops[i] for i in live], [results[i] for i in live], exact_cycles=False)


def test_testbench_detects_a_wrong_result(tmp_path):
    """The checker can fail: corrupt one expected lane and the cocotb run must raise."""
    import json
    ops = random_ops(SEED + 3, SMALL, ALL, 20)
    stim = tmp_path / "stim.npz"
    write_stimulus(ops, SMALL, stim)
    d = dict(np.load(stim))
    d["beats"][len(d["beats"]) // 2, 4] += 1
    np.savez(stim, **d)
    env = {"PE_STIM": str(stim), "PE_RESULT": str(tmp_path / "r.npz"),
           "PE_TB_CFG": json.dumps({"p_valid": 1.0, "p_ready": 1.0, "resets": [], "params": SMALL.as_dict(),
                                    "seed": SEED})}
    with pytest.raises((AssertionError, SystemExit)):  # cocotb's runner exits on a failed test
        runner.run(pe_build(SMALL), "sparsetrain.sim_tb.pe_tb", seed=SEED, env=env, test_dir=tmp_path / "tb")


# ---- Icarus: second opinion on a smaller subset ------------------------------------------

def test_icarus_directed_and_random_subset():
    print("seed", SEED + 4)
    ops = [op for group in directed_ops(SMALL).values() for op in group] + random_ops(SEED + 4, SMALL, ALL, 90)
    results = run_pe_ops(ops, SMALL, sim="icarus", seed=SEED + 4, p_valid=0.8, p_ready=0.7)
    assert_matches_golden(ops, results, exact_cycles=False)


# ---- regress: >= 100,000 random operations per mode -----------------------------------------

REGRESS_OPS = int(os.environ.get("PE_REGRESS_OPS", "100000"))
REGRESS_CHUNK = 25000


@pytest.mark.regress
@pytest.mark.parametrize("mode", ALL, ids=[m.name for m in ALL])
def test_regress_random_ops(mode):
    """REGRESS_OPS ops of one mode on SMALL, half without back-pressure (cycle exact)."""
    done = 0
    chunk = 0
    while done < REGRESS_OPS:
        n = min(REGRESS_CHUNK, REGRESS_OPS - done)
        seed = SEED * 1000 + int(mode) * 100 + chunk
        print(f"mode {mode.name} chunk {chunk}: seed {seed}, {n} ops")
        ops = random_ops(seed, SMALL, (mode,), n)
        if chunk == 0:  # the directed cases too, so that coverage includes them
            ops = [op for group in directed_ops(SMALL).values() for op in group] + ops
        bp = chunk % 2 == 1
        results = run_pe_ops(ops, SMALL, seed=seed, p_valid=0.7 if bp else 1.0, p_ready=0.7 if bp else 1.0)
        assert_matches_golden(ops, results, exact_cycles=not bp)
        done += n
        chunk += 1
    assert done >= REGRESS_OPS


@pytest.mark.regress
def test_regress_default_config_random_ops():
    """The default (synthesis-sized) configuration: 3,000 mixed ops with back-pressure."""
    seed = SEED + 7
    print("seed", seed)
    ops = random_ops(seed, DEFAULT, ALL, 3000)
    results = run_pe_ops(ops, DEFAULT, seed=seed, p_valid=0.8, p_ready=0.8)
    assert_matches_golden(ops, results, exact_cycles=False)
