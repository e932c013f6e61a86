"""DBTD thresholds, stochastic pruning statistics, and the threshold FIFO (Algorithm 1)."""
from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from sparsetrain.golden.training.pruning import (GradientPruner, PruneConfig, ThresholdFIFO, dbtd_threshold,
                                                 prune_grad, stochastic_prune, threshold_coefficient)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_unbiased_threshold_keeps_fraction_p_of_a_normal_inside(seed: int) -> None:
    sigma = 0.37
    g = torch.randn(1_000_000, generator=_gen(seed), dtype=torch.float64) * sigma
    for p in (0.7, 0.9, 0.99):
        tau = dbtd_threshold(g, p)
        inside = float((g.abs() < tau).double().mean())
        # sampling error of the fraction plus that of sigma_hat (relative sd sqrt((pi/2-1)/n))
        assert abs(inside - p) < 5 * math.sqrt(p * (1 - p) / g.numel()) + 0.002, (p, inside)
        assert tau / sigma == pytest.approx(NormalDist().inv_cdf((1 + p) / 2), rel=0.005)


def test_paper_estimator_is_two_over_pi_of_the_unbiased_one(seed: int) -> None:
    g = torch.randn(10_000, generator=_gen(seed))
    for p in (0.5, 0.9):
        ratio = dbtd_threshold(g, p, "paper") / dbtd_threshold(g, p, "unbiased")
        assert ratio == pytest.approx(2 / math.pi, rel=1e-9)
        assert threshold_coefficient(p, "paper") / threshold_coefficient(p) == pytest.approx(2 / math.pi)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 2])
def test_bad_rate_is_rejected_naming_p(bad: float) -> None:
    with pytest.raises(ValueError, match=r"p = .* out of range"):
        threshold_coefficient(bad)


def test_bad_estimator_and_fifo_depth_are_rejected() -> None:
    with pytest.raises(ValueError, match="estimator = 'median'"):
        threshold_coefficient(0.9, "median")
    for depth in (0, 65):
        with pytest.raises(ValueError, match=f"N_F = {depth} is out of range"):
            ThresholdFIFO(depth)
    with pytest.raises(ValueError, match="N_F"):
        PruneConfig(n_f=100)


def test_stochastic_pruning_is_unbiased_and_has_the_second_moment_tau_abs_x(seed: int) -> None:
    tau = 0.8
    x = torch.tensor([0.0, 0.01, -0.05, 0.2, -0.4, 0.6, -0.79, 0.8, -1.5, 3.0], dtype=torch.float64)
    n = 40_000
    y = stochastic_prune(x.expand(n, -1).clone(), tau, _gen(seed))
    mean, second = y.mean(0), (y * y).mean(0)
    small = x.abs() < tau
    q = (x.abs() / tau).clamp(max=1)
    # y takes sign(x)*tau w.p. q and 0 otherwise for |x| < tau: Var(y) = tau*|x| - x^2
    var = torch.where(small, tau * x.abs() - x * x, torch.zeros_like(x))
    assert torch.all((mean - x).abs() <= 5 * torch.sqrt(var / n) + 1e-12), (mean, x)
    expect2 = torch.where(small, tau * x.abs(), x * x)
    var2 = torch.where(small, tau**4 * q * (1 - q), torch.zeros_like(x))
    assert torch.all((second - expect2).abs() <= 5 * torch.sqrt(var2 / n) + 1e-12), (second, expect2)
    # values: large ones unchanged, small ones in {0, +-tau} with the sign of x, zero stays zero
    assert torch.equal(y[:, ~small], x[~small].expand(n, -1))
    ys = y[:, small]
    assert torch.all((ys == 0) | (ys.abs() == tau))
    assert torch.all(ys * x[small] >= 0)
    assert torch.all(y[:, 0] == 0)


def test_density_on_gaussian_matches_the_design_notes_formula(seed: int) -> None:
    notes = {0.7: 0.620, 0.8: 0.549, 0.9: 0.460, 0.95: 0.398, 0.99: 0.309}  # design-notes.md
    n = 2_000_000
    g = torch.randn(n, generator=_gen(seed))
    for p, printed in notes.items():
        z = NormalDist().inv_cdf((1 + p) / 2)
        formula = (1 - p) + math.sqrt(2 / math.pi) * (1 - math.exp(-z * z / 2)) / z
        assert formula == pytest.approx(printed, abs=0.0006)
        density = float((stochastic_prune(g, dbtd_threshold(g, p), _gen(seed + 1)) != 0).double().mean())
        assert abs(density - formula) < 5 * math.sqrt(formula * (1 - formula) / n) + 0.002, (p, density, formula)


def test_generator_makes_pruning_reproducible(seed: int) -> None:
    g = torch.randn(1000, generator=_gen(seed))
    a = stochastic_prune(g, 1.0, _gen(seed + 7))
    assert torch.equal(a, stochastic_prune(g, 1.0, _gen(seed + 7)))
    assert not torch.equal(a, stochastic_prune(g, 1.0, _gen(seed + 8)))


def test_fifo_follows_algorithm_1_step_by_step() -> None:
    f = ThresholdFIFO(2)
    assert f.predicted() is None and not f.full
    f.push(1.0)
    assert f.predicted() is None and f.entries == [1.0]
    f.push(3.0)
    assert f.full and f.predicted() == 2.0
    f.push(5.0)  # oldest (1.0) drops out
    assert f.entries == [3.0, 5.0] and f.predicted() == 4.0
    with pytest.raises(ValueError, match="tau"):
        f.push(-1.0)


def _constant_gradient(m: float, n: int = 64) -> torch.Tensor:
    """|g| = m everywhere, alternating signs: mean|g| = m, so tau_batch = c_p * m exactly."""
    return torch.tensor([m if i % 2 else -m for i in range(n)], dtype=torch.float64)


def test_pruning_layer_uses_the_fifo_mean_only_when_full_and_pushes_the_unpruned_threshold(seed: int) -> None:
    p = 0.9
    c = threshold_coefficient(p)
    layer = GradientPruner(PruneConfig(p=p, n_f=2, seed=seed), target="dO")
    mags = [1.0, 2.0, 3.0, 4.0, 5.0]
    expected_tau = [None, None, c * 1.5, c * 2.5, c * 3.5]  # mean of the two previous batches
    for m, want in zip(mags, expected_tau):
        g = _constant_gradient(m)
        out = layer.prune_gradient(g)
        assert layer.last_tau_batch == pytest.approx(c * m)  # from the *unpruned* gradient
        if want is None:
            assert layer.last_tau is None and torch.equal(out, g)
        else:
            assert layer.last_tau == pytest.approx(want)
            assert want > m  # every value is below tau here, so each becomes 0 or +-tau
            assert torch.all((out == 0) | torch.isclose(out.abs(), torch.tensor(want, dtype=out.dtype)))
            assert torch.count_nonzero(out) < g.numel()
    assert layer.fifo.entries == pytest.approx([c * 4.0, c * 5.0])
    stats = layer.reset_stats()
    assert stats.batches == 5 and stats.pruned_batches == 3
    assert stats.density_before == 1.0 and stats.density_after < 1.0


def test_two_pass_variant_prunes_with_the_batch_own_threshold(seed: int) -> None:
    c = threshold_coefficient(0.7)
    layer = GradientPruner(PruneConfig(p=0.7, n_f=4, two_pass=True, seed=seed))
    layer.prune_gradient(_constant_gradient(2.0))
    assert layer.last_tau == pytest.approx(c * 2.0)


def test_observe_only_layer_measures_but_never_prunes(seed: int) -> None:
    layer = GradientPruner(PruneConfig(p=0.99, n_f=1, seed=seed))
    layer.active = False
    g = torch.randn(500, generator=_gen(seed))
    for _ in range(3):
        assert torch.equal(layer.prune_gradient(g), g)
    assert layer.last_tau is None and layer.fifo.full


def test_straight_through_function_is_identity_forward_and_prunes_backward(seed: int) -> None:
    layer = GradientPruner(PruneConfig(p=0.9, n_f=1, two_pass=True, seed=seed))
    layer.record = True
    x = torch.randn(8, 16, generator=_gen(seed), requires_grad=True)
    y = prune_grad(x, layer)
    assert torch.equal(y, x)
    upstream = torch.randn(8, 16, generator=_gen(seed + 1))
    y.backward(upstream)
    rec = layer.last
    assert torch.equal(rec.grad_in, upstream)
    assert torch.equal(x.grad, rec.grad_out)
    assert rec.tau == pytest.approx(dbtd_threshold(upstream, 0.9))
    assert not torch.equal(x.grad, upstream)


def test_count_nonzero_agrees_with_torch_on_every_layout_and_dtype(seed: int) -> None:
    # golden.training.pruning.count_nonzero (numpy's count for CPU float32/bool) feeds the density metrics.
    from sparsetrain.golden.training.pruning import count_nonzero

    g = torch.relu(torch.randn(8, 6, 5, 7, generator=_gen(seed)))
    g[0, 0, 0, :3] = torch.tensor([-0.0, float("nan"), float("inf")])  # -0.0 is zero; nan and inf are not
    cases = {"contiguous": g, "channels_last": g.to(memory_format=torch.channels_last),
             "strided": g[:, ::2, 1:, ::3], "transposed": g.transpose(1, 3), "bool": g > 0.5,
             "float64 (torch path)": g.double(), "requires_grad": g.clone().requires_grad_(),
             "empty": g[:0]}
    for name, t in cases.items():
        assert count_nonzero(t) == int(torch.count_nonzero(t)), name
