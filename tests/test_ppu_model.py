"""golden.bitexact.ppu_model: integer arithmetic, xorshift, FIFO, and agreement with the float pruning."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsetrain.arch.dbtd import threshold_coefficient
from sparsetrain.arch.fixedpoint import quantize, rne_shift
from sparsetrain.arch.ppu import Op, PPUCommand, PPUConfig, command_cycles
from sparsetrain.golden.bitexact.ppu_model import (PPUModel, PPUThresholdFIFO, Xorshift32, prune_row, prune_value,
                                                   tau_batch, threshold_constant)
from sparsetrain.golden.bitexact.rowops import Beat
from sparsetrain.golden.training import pruning

SIGMAS = 5.0


def test_xorshift32_matches_marsaglia():
    # Marsaglia (2003), "Xorshift RNGs": y = 2463534242 with (13, 17, 5) first yields 723471715.
    rng = Xorshift32(2463534242)
    assert rng.step() == 723471715


def test_xorshift_draws_are_uniform(seed):
    rng = Xorshift32(seed % (2**32 - 1) + 1)
    r = np.array([rng.draw(8) for _ in range(40_000)])
    counts = np.bincount(r, minlength=256)
    chi2 = float(((counts - 40_000 / 256) ** 2 / (40_000 / 256)).sum())
    assert chi2 < 255 + SIGMAS * math.sqrt(2 * 255)  # chi-square, 255 dof


@pytest.mark.parametrize("p", [0.5, 0.7, 0.9, 0.99])
@pytest.mark.parametrize("estimator", ["unbiased", "paper"])
@pytest.mark.parametrize("n", [1, 37, 4096, 3 * 10**6])
def test_threshold_constant_is_nearest_16_bit_value(p, estimator, n):
    c_m, c_shift = threshold_constant(p, n, estimator)
    assert 2**15 <= c_m < 2**16 and 0 <= c_shift <= 63
    exact = threshold_coefficient(p, estimator) / n
    assert abs(c_m * 2.0**-c_shift - exact) <= 2.0**-(c_shift + 1) * (1 + 1e-9)


def test_invalid_parameters_name_themselves():
    for kwargs, name in (({"n_f": 0}, "N_F"), ({"n_f": 3}, "N_F"), ({"seed": 0}, "seed"), ({"r_w": 30}, "R_W"),
                         ({"dw": 40}, "DW"), ({"sum_w": 8}, "SUM_W"), ({"acc_w": 20}, "ACC_W"),
                         ({"n_slots": 0}, "N_SLOTS")):
        with pytest.raises(ValueError, match=name):
            PPUConfig(**kwargs)
    with pytest.raises(ValueError, match="seed"):
        Xorshift32(0)
    with pytest.raises(ValueError, match="p = "):
        threshold_constant(1.0, 10)
    with pytest.raises(ValueError, match="length"):
        PPUModel(PPUConfig(w_max=16)).finish(17, 0)


def test_fifo_mean_and_wrap():
    f = PPUThresholdFIFO(4)
    pushed = [10, 11, 13, 17, 19, 23]
    for i, v in enumerate(pushed):
        f.push(v)
        assert f.full == (i >= 3)
    window = pushed[-4:]
    assert list(f.entries) == window
    assert f.mean() == round(sum(window) / 4)  # 72/4 = 18, no tie


def test_rne_ties_in_requantisation_and_prune_rules():
    m = PPUModel(PPUConfig(dw=8, k_max=3, w_max=16))
    vals = [-1, -2, -3, 1, 3, 5, -5, 100000, -100000]
    m.accumulate([[Beat(0, 3, tuple(vals[:3]), False), Beat(3, 3, tuple(vals[3:6]), False),
                   Beat(6, 3, tuple(vals[6:]), True)], [], []])
    res = m.finish(len(vals), 1)
    # -0.5 -> 0 (even), -1 -> -1, -1.5 -> -2, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, saturate
    assert res.dense.tolist() == [0, -1, -2, 0, 2, 2, -2, 127, -127]
    rng = Xorshift32(5)
    assert prune_value(0, 10, rng, 16) == 0 and rng.state == 5           # zero stays, no draw
    assert prune_value(-10, 10, rng, 16) == -10 and rng.state == 5       # at tau: kept
    assert prune_value(3, 0, rng, 16) == 3 and rng.state == 5            # tau 0: no pruning
    assert prune_value(-3, 10, rng, 16) in (0, -10) and rng.state != 5   # below: drawn


def test_tau_batch_rounds_and_saturates():
    assert tau_batch(3, 1, 1, 16) == 2          # 1.5 -> 2
    assert tau_batch(5, 1, 1, 16) == 2          # 2.5 -> 2
    assert tau_batch(10**9, 0xFFFF, 0, 16) == 2**15 - 1
    assert tau_batch(12345, 0x8000, 63, 16) == 0


def test_fifo_gates_pruning_and_draws():
    cfg = PPUConfig(dw=8, k_max=3, w_max=16, n_f=2)
    m = PPUModel(cfg)
    m.push_tau(0, 50)
    m.start(bias=3)
    before = m.rng.state
    res = m.finish(16, 0, prune=True)
    assert (res.dense == 3).all() and m.rng.state == before and res.draws == 0
    m.push_tau(0, 50)
    m.start(bias=3)
    res = m.finish(16, 0, prune=True)
    assert set(res.dense.tolist()) <= {0, 50} and res.draws == 16


def test_command_cycles_contract():
    assert command_cycles(PPUCommand(Op.FINISH, length=10)) == 13
    assert command_cycles(PPUCommand(Op.ACCUM, pe_mask=0b101), (4, 9, 2)) == 5
    assert command_cycles(PPUCommand(Op.ACCUM, pe_mask=0)) == 1
    assert command_cycles(PPUCommand(Op.END_BATCH)) == 2
    assert command_cycles(PPUCommand(Op.SEED)) == 1


def _quantised_normal(seed: int, n: int, f: int = 10, dw: int = 16) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed).normal(0.0, 1.0, n)
    return g, quantize(g, f, dw)


@pytest.mark.parametrize("p", [0.7, 0.9, 0.99])
def test_threshold_agrees_with_float_dbtd(seed, p):
    f, n = 10, 50_000
    g, q = _quantised_normal(seed, n, f)
    c_m, c_shift = threshold_constant(p, n)
    tau_q = tau_batch(int(np.abs(q).sum()), c_m, c_shift, 16)
    tau_f = pruning.dbtd_threshold(torch.from_numpy(g), p) * 2**f
    c_p = threshold_coefficient(p)
    # bound (docs section 7.1): final rounding 1/2 + quantisation of g c_p/2 + constant 2^-16 relative
    assert abs(tau_q - tau_f) <= 0.5 + c_p / 2 + tau_f * 2**-16 + 1e-9


@pytest.mark.parametrize("p", [0.7, 0.9, 0.99])
def test_pruned_density_and_mean_agree_with_float(seed, p):
    f, n, r_w = 10, 200_000, 16
    g, q = _quantised_normal(seed + 1, n, f)
    tau = tau_batch(int(np.abs(q).sum()), *threshold_constant(p, n), 16)
    out = prune_row(q, tau, Xorshift32(seed % (2**32 - 1) + 1), r_w)
    a = np.abs(q).astype(np.float64)
    small = (a > 0) & (a < tau)
    p_model = np.where(small, np.ceil(a * 2**r_w / tau) / 2**r_w, (a > 0).astype(float))
    p_float = np.where(small, a / tau, (a > 0).astype(float))
    assert np.all(p_model - p_float <= 2.0**-r_w + 1e-12) and np.all(p_model >= p_float)
    var = float((p_model * (1 - p_model)).sum())
    nnz = int(np.count_nonzero(out))
    # density: binomial 5 sigma around the model's exact expectation ...
    assert abs(nnz - p_model.sum()) <= SIGMAS * math.sqrt(var) + 1
    # ... and the float stochastic pruning of the same integers around the float expectation
    fl = pruning.stochastic_prune(torch.from_numpy(q.astype(np.float64)), float(tau), np.random.default_rng(seed))
    nnz_f = int(torch.count_nonzero(fl))
    var_f = float((p_float * (1 - p_float)).sum())
    assert abs(nnz_f - p_float.sum()) <= SIGMAS * math.sqrt(var_f) + 1
    assert abs(nnz - nnz_f) <= SIGMAS * math.sqrt(var + var_f) + n * 2.0**-r_w + 1
    # the expected-density formula of docs/architecture.md s.7 (normal g, unbiased threshold), quantisation aside
    z = float(torch.distributions.Normal(0, 1).icdf(torch.tensor((1 + p) / 2)))
    expected = (1 - p) + math.sqrt(2 / math.pi) * (1 - math.exp(-z * z / 2)) / z
    assert abs(nnz / n - expected) <= SIGMAS * math.sqrt(expected * (1 - expected) / n) + 0.01
    # mean: E[prune(g)] = g in float; the model's bias is at most tau * 2^-R_W per element
    sd = math.sqrt(float((tau**2 * p_model * (1 - p_model))[small].sum()))
    diff = float(out.sum() - q.sum())
    assert abs(diff) <= SIGMAS * sd + small.sum() * tau * 2.0**-r_w + 1


def test_algorithm1_state_evolution(seed):
    """Per layer: no pruning until N_F batch thresholds are in; then the mean of the last N_F."""
    cfg = PPUConfig(dw=16, k_max=11, w_max=64, n_f=4, n_slots=2)
    m = PPUModel(cfg)
    rng = np.random.default_rng(seed)
    history = {0: [], 1: []}
    for batch in range(7):
        for slot in (0, 1):
            rows = quantize(rng.normal(0, 0.05 * (slot + 1), (6, 64)), 14, 16)
            c = threshold_constant(0.9, rows.size)
            tau_used = round(sum(history[slot][-4:]) / 4) if len(history[slot]) >= 4 else None
            for r, row in enumerate(rows):
                m.accumulate([[Beat(i, min(11, 64 - i), tuple(int(v) for v in row[i:i + 11]), i + 11 >= 64)
                               for i in range(0, 64, 11)], [], []])
                res = m.finish(64, 0, acc_g=True, prune=True, slot=slot, g_first=r == 0)
                assert np.array_equal(res.unpruned, row)
                if tau_used is None:
                    assert np.array_equal(res.dense, row) and res.draws == 0
                else:
                    assert m.status(slot).tau_pred == int(rne_shift(sum(history[slot][-4:]), 2))
                    big = np.abs(row) >= tau_used
                    assert np.array_equal(res.dense[big], row[big])
                    assert set(np.abs(res.dense[~big]).tolist()) <= {0, tau_used}
            assert m.status(slot).abs_sum == int(np.abs(rows).sum())
            tau = m.end_batch(slot, *c)
            assert tau == tau_batch(int(np.abs(rows).sum()), *c, 16)
            history[slot].append(tau)
            assert list(m.slots[slot].fifo.entries) == history[slot][-4:]


def test_pingpong_model_accumulators_are_independent(seed):
    """PINGPONG=1: a row built in accumulator 1 while accumulator 0 finishes gives the rows that
    two PINGPONG=0 models give one after the other; ACCUM is a no-op; acc out of range raises."""
    rng = np.random.default_rng(seed)
    cfg0 = PPUConfig(dw=8, k_max=3, w_max=16)
    pp, ref = PPUModel(PPUConfig(dw=8, k_max=3, w_max=16, pingpong=1)), PPUModel(cfg0)
    rows = [[Beat(int(b), 3, tuple(int(v) for v in rng.integers(-500, 500, 3)), False) for b in rng.integers(0, 13, 4)]
            for _ in range(2)]
    pp.start(7, acc=0)
    pp.start(-3, acc=1)
    for b0, b1 in zip(*rows):  # beats of both rows in the same cycles
        pp.accumulate_cycle([b0, b1, None], [0, 1, 0])
    assert pp.apply(PPUCommand(Op.ACCUM, pe_mask=7), [[Beat(0, 1, (99,), True)]] * 3) == 0
    got = [pp.finish(16, 2, acc=a).entries for a in (0, 1)]
    want = []
    for bias, bl in ((7, rows[0]), (-3, rows[1])):
        ref.start(bias)
        for b in bl:
            ref.accumulate_cycle([b, None, None])
        want.append(ref.finish(16, 2).entries)
    assert got == want
    assert pp.accs == [[0] * 16, [0] * 16]
    with pytest.raises(ValueError, match="acc"):
        ref.start(0, acc=1)
    with pytest.raises(ValueError, match="PINGPONG"):
        PPUConfig(pingpong=3)
    assert command_cycles(PPUCommand(Op.ACCUM, pe_mask=7), (5, 5, 5), pingpong=1) == 1
