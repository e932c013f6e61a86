"""PPU RTL (hw/ppu.py) against golden.bitexact.ppu_model on Verilator (and Icarus), via sim_tb.ppu_tb.

Every run's testbench compares every output entry, the whole status after every command and
the timing contract of docs/architecture.md section 7.1; these tests add checks of their
own on what the run returned.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from sparsetrain.arch.fixedpoint import choose_frac_bits, quantize
from sparsetrain.arch.ppu import Op, PPUConfig
from sparsetrain.golden.bitexact.ppu_model import threshold_constant
from sparsetrain.golden.training.tensors import load_golden
from sparsetrain.hw.blocks import to_verilog
from sparsetrain.hw.ppu import PPU
from sparsetrain.sim_tb import ppu_stimulus as stim
from sparsetrain.sim_tb.ppu_driver import PpuTxn, run_ppu

# make test: a small configuration (fast to compile); make regress: the default one too
SMALL = PPUConfig(dw=8, k_max=3, w_max=16, n_f=4, n_slots=4, r_w=8, cnt_w=10)
DEFAULT = PPUConfig()


def _finish_txns(txns):
    return [t for t in txns if t.cmd is not None and t.cmd.op == Op.FINISH]


def test_directed_no_backpressure_exact_timing(seed):
    txns = stim.directed_txns(SMALL)
    r = run_ppu(txns, SMALL, seed=seed)
    assert np.array_equal(r.occupancy[r.expected_cycles > 0], r.expected_cycles[r.expected_cycles > 0])
    assert len(r.entries) == len(_finish_txns(txns))
    # the first FINISH is an all-zero row: exactly the empty-row marker
    assert r.entries[0] == [(0, (1 << 5) - 1, 1)]


def test_directed_and_random_with_backpressure(seed):
    rng = np.random.default_rng(seed)
    txns = stim.directed_txns(SMALL) + stim.random_txns(rng, SMALL, 250)
    r = run_ppu(txns, SMALL, seed=seed, p_valid=0.6, p_ready=0.5)
    assert (r.occupancy[r.expected_cycles > 0] >= r.expected_cycles[r.expected_cycles > 0]).all()
    assert r.blocked.sum() > 0  # back-pressure really happened


def test_checker_catches_a_wrong_value(seed):
    with pytest.raises(AssertionError):
        run_ppu(stim.directed_txns(SMALL)[:8], SMALL, seed=seed, corrupt=True)


def test_algorithm1_multi_layer_multi_batch(seed):
    """3 layers x 7 batches of GTA rows: pruning off until each FIFO holds N_F thresholds, then
    every value pruned with that layer's predicted threshold; statuses checked after each command."""
    cfg = SMALL
    rng = np.random.default_rng(seed)
    txns: list[PpuTxn] = []
    rows_per_batch, shift = 3, 4
    c_m, c_shift = threshold_constant(0.9, rows_per_batch * cfg.w_max)
    for _batch in range(7):
        for slot in range(3):
            g = quantize(rng.normal(0, 0.1 * (slot + 1), (rows_per_batch, cfg.w_max)), 6 + shift, cfg.acc_w)
            txns += stim.gradient_row_txns(g, cfg, slot=slot, shift=shift, g_first=True)
            txns.append(PpuTxn(stim.Cmd(Op.END_BATCH, slot=slot, c_m=c_m, c_shift=c_shift), index=cfg.n_f - 1))
    r = run_ppu(txns, cfg, seed=seed, p_valid=0.8, p_ready=0.8)
    ends = [s for t, s in zip(txns, r.statuses) if t.cmd is not None and t.cmd.op == Op.END_BATCH]
    assert [s.fifo_count for s in ends[:3 * cfg.n_f:3]] == list(range(1, cfg.n_f + 1))
    assert all(s.fifo_full for s in ends[3 * (cfg.n_f - 1):])
    assert len(r.entries) == 7 * 3 * rows_per_batch


def test_golden_training_gradients(small_golden_run, seed):
    """dI of a real pruned training step, requantised by the PPU and pruned with its FIFO."""
    run = load_golden(small_golden_run)
    layer = next(name for name in run.layers if run[name, "dI"].shape[-1] <= SMALL.w_max)
    d_i = run[layer, "dI"]
    cfg = SMALL
    rows = d_i.reshape(-1, d_i.shape[-1])[:24]
    f = choose_frac_bits(rows, cfg.dw)
    shift = 6
    acc = quantize(rows, f + shift, cfg.acc_w)
    c_m, c_shift = threshold_constant(run.manifest["run"]["p"], rows.size)
    txns: list[PpuTxn] = []
    for _batch in range(cfg.n_f + 1):  # the last batch is pruned (FIFO full)
        txns += stim.gradient_row_txns(acc, cfg, slot=1, shift=shift, g_first=True)
        txns.append(PpuTxn(stim.Cmd(Op.END_BATCH, slot=1, c_m=c_m, c_shift=c_shift)))
    r = run_ppu(txns, cfg, seed=seed)
    last = r.entries[-len(rows):]
    dense = np.zeros(rows.shape, np.int64)
    for i, ents in enumerate(last):
        for v, o, _l in ents:
            if o < cfg.w_max:
                dense[i, o] = v
    assert np.count_nonzero(dense) < np.count_nonzero(quantize(rows, f, cfg.dw))  # pruning removed values


def test_icarus_second_opinion(seed):
    txns = stim.directed_txns(SMALL)[:40] + stim.random_txns(np.random.default_rng(seed), SMALL, 20)
    run_ppu(txns, SMALL, "icarus", seed=seed, p_valid=0.7, p_ready=0.7)


@pytest.mark.parametrize("kwargs, name", [({"n_f": 0}, "N_F"), ({"n_f": 6}, "N_F"), ({"seed": 0}, "seed"),
                                          ({"dw": 2}, "DW"), ({"acc_w": 10}, "ACC_W"), ({"sum_w": 100}, "SUM_W")])
def test_invalid_parameters_raise_at_elaboration(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PPU(PPUConfig(**kwargs))
    with pytest.raises(ValueError, match=name):
        to_verilog("ppu", {k.upper(): v for k, v in kwargs.items()})


def test_verilog_block_emits_ppu():
    text, used = to_verilog("ppu", {"N_F": 8, "W_MAX": 16, "K_MAX": 3, "DW": 8, "R_W": 8})
    assert "module ppu" in text and used["N_F"] == 8
    assert "pe2__payload" in text and "status_sel" in text
    assert len(verilog.convert(PPU(SMALL), name="ppu_small", emit_src=False)) > 1000


@pytest.mark.regress
@pytest.mark.parametrize("chunk", range(10))
def test_regress_random_rows(seed, chunk):
    """10 x 10,000 random rows on the default configuration with back-pressure."""
    rng = np.random.default_rng([seed, chunk])
    txns = stim.random_txns(rng, DEFAULT, 10_000)
    if chunk == 0:
        txns = stim.directed_txns(DEFAULT) + txns
    run_ppu(txns, DEFAULT, seed=seed + chunk, p_valid=0.9 if chunk % 2 else 1.0, p_ready=0.8 if chunk % 2 else 1.0)


@pytest.mark.regress
@pytest.mark.parametrize("chunk", range(2))
def test_regress_random_rows_small_config(seed, chunk):
    """2 x 10,000 random rows on the small configuration (where the 4-slot, 4-deep FIFO and
    the 8-bit random draw wrap far more often); cheap enough to run with HDL coverage."""
    rng = np.random.default_rng([seed, 100 + chunk])
    txns = stim.directed_txns(SMALL) + stim.random_txns(rng, SMALL, 10_000)
    run_ppu(txns, SMALL, seed=seed + 100 + chunk, p_valid=0.8 if chunk else 1.0, p_ready=0.7 if chunk else 1.0)
