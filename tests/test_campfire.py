"""Campfire weight pruning (golden.training.campfire): schedule, mask structure, era handling, FC rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.golden.training.campfire import (PRUNING_MODES, CampfirePruner, WeightPruneConfig, ck_mask,
                                                  combined_mask, conv_mask, dead_filters, fc_block_mask,
                                                  fc_fine_mask, fc_input_rule, input_rule_pair, load_masks,
                                                  scheduled_sparsity, step_target, window_mask, zero_kernel_rows)
from sparsetrain.golden.training.networks import build_model, conv_layers
from sparsetrain.golden.training.train import DEFAULT_LR


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def kernels(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0] * t.shape[1], -1)


# ------------------------------------------------------------------------------------ schedule

@pytest.mark.parametrize("exponent", [1.0, 2.0, 3.0])
def test_schedule_matches_zhu_gupta(exponent: float) -> None:
    s_f, t0, n = 0.7, 2.0, 5.0
    for t in np.linspace(t0, t0 + n, 23):
        # s_t = s_f + (0 - s_f) * (1 - (t - t0)/n)^e, written out independently
        progress = (t - t0) / n
        expected = s_f - s_f * (1.0 - progress) ** exponent
        assert scheduled_sparsity(t, s_f, t0, n, exponent) == pytest.approx(expected, abs=1e-12)
    assert scheduled_sparsity(t0 - 1, s_f, t0, n, exponent) == 0.0
    assert scheduled_sparsity(t0 + n + 3, s_f, t0, n, exponent) == s_f
    values = [scheduled_sparsity(t, s_f, t0, n, exponent) for t in np.linspace(0, 10, 101)]
    assert all(b >= a for a, b in zip(values, values[1:])), "the schedule never decreases"


def test_schedule_exponent_sets_speed() -> None:
    # a larger exponent prunes faster early in the era
    mid = [scheduled_sparsity(1.0, 0.8, 0.0, 4.0, e) for e in (1.0, 3.0, 5.0)]
    assert mid[0] < mid[1] < mid[2]
    assert mid[0] == pytest.approx(0.8 * 0.25)


@pytest.mark.parametrize("resolution", ["epoch", "step"])
def test_step_target_covers_the_era(resolution: str) -> None:
    cfg = WeightPruneConfig(sparsity=0.6, era_start=2, era_length=3, resolution=resolution)
    spe = 4
    assert step_target(cfg, 1, spe - 1, spe) is None
    assert step_target(cfg, 5, 0, spe) is None
    assert step_target(cfg, 4, spe - 1, spe) == pytest.approx(0.6), "last step of the era reaches s_f"
    targets = [step_target(cfg, e, i, spe) for e in range(2, 5) for i in range(spe)]
    assert all(b >= a for a, b in zip(targets, targets[1:]))
    if resolution == "epoch":
        for e in range(2, 5):
            per_epoch = {step_target(cfg, e, i, spe) for i in range(spe)}
            assert per_epoch == {scheduled_sparsity(e + 1, 0.6, 2, 3)}
    else:
        assert step_target(cfg, 2, 0, spe) == pytest.approx(scheduled_sparsity(2.25, 0.6, 2, 3))


# ------------------------------------------------------------------------------------ conv masks

@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("s", [0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.95])
def test_window_structure(seed: int, k: int, s: float) -> None:
    gen = torch.Generator().manual_seed(seed + k)
    w = torch.randn(7, 5, k, k, generator=gen)
    m = window_mask(w, s)
    allowed = math.ceil((1 - s) * k * k - 1e-9)  # ceil((1-s) K^2)
    per_kernel = kernels(m).sum(1)
    assert int(per_kernel.max()) <= allowed
    assert abs(int((~m).sum()) - s * w.numel()) <= 0.5 + 1e-9, "layer target met to within one weight"
    # in every kernel, every kept weight is at least as large as every pruned one
    mag = kernels(w.abs())
    km = kernels(m)
    for row in range(mag.shape[0]):
        kept, pruned = mag[row][km[row]], mag[row][~km[row]]
        if len(kept) and len(pruned):
            assert float(kept.min()) >= float(pruned.max())


@pytest.mark.parametrize("s", [0.1, 0.4, 0.6, 0.7, 0.8])
def test_ck_prunes_whole_kernels_by_max(seed: int, s: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(9, 6, 3, 3, generator=gen)
    m = ck_mask(w, s)
    km = kernels(m)
    alive_per_kernel = km.sum(1)
    assert set(alive_per_kernel.tolist()) <= {0, 9}, "every kernel is all kept or all pruned"
    pruned = int((~m).sum())
    assert s * w.numel() - 0.5 <= pruned < s * w.numel() + 9, "target met, overshoot below one kernel"
    kmax = kernels(w.abs()).amax(1)
    dead = alive_per_kernel == 0
    assert float(kmax[dead].max()) <= float(kmax[~dead].min()), "ranked by the largest magnitude"


@pytest.mark.parametrize("s", [0.4, 0.6, 0.7, 0.8])
def test_combined_is_window_then_ck(seed: int, s: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 8, 3, 3, generator=gen)
    m = combined_mask(w, s, window_fraction=0.8)
    window_only = window_mask(w, 0.8 * s)
    assert not bool((m & ~window_only).any()), "combined only removes more than its window phase"
    km = kernels(m)
    live = km.sum(1)
    assert int(live.max()) <= math.ceil((1 - 0.8 * s) * 9 - 1e-9)
    assert bool((live == 0).any()), "the CK phase zeroes whole kernels"
    assert s * w.numel() - 0.5 <= int((~m).sum()) < s * w.numel() + 9


def test_masks_never_revive_pruned_weights(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 4, 3, 3, generator=gen)
    alive = torch.ones_like(w, dtype=torch.bool)
    alive[0, 0, 0, 0] = False  # pruned, yet the largest weight
    w[0, 0, 0, 0] = 100.0
    for mode in PRUNING_MODES:
        assert not bool(conv_mask(w, 0.3, mode, alive)[0, 0, 0, 0])


# ------------------------------------------------------------------------------------ FC masks

@pytest.mark.parametrize("s", [0.5, 0.9, 0.99])
def test_fc_fine_keeps_an_input_per_output(seed: int, s: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 40, generator=gen)
    w[3] *= 1e-3  # an output whose weights are all small: plain magnitude pruning would cut it off
    m = fc_fine_mask(w, s)
    assert bool(m.any(1).all())
    assert int((~m).sum()) == min(round(s * w.numel()), w.numel() - 12), "target, unless the rule forbids it"
    kept, pruned = w.abs()[m], w.abs()[~m]
    # apart from each row's protected maximum, the kept weights are the largest
    row_max = w.abs().amax(1, keepdim=True)
    unprotected_kept = w.abs()[m & (w.abs() < row_max)]
    if len(unprotected_kept) and len(pruned):
        assert float(unprotected_kept.min()) >= float(pruned.max())
    assert len(kept) >= 12


@pytest.mark.parametrize("block", [2, 4, 5])
def test_fc_block_structure(seed: int, block: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 33, generator=gen)
    m = fc_block_mask(w, 0.7, block=block)
    assert bool(m.any(1).all()), "every output keeps an input"
    for r in range(0, 20, block):
        for c in range(0, 33, block):
            tile = m[r:r + block, c:c + block]
            assert bool(tile.all()) or not bool(tile.any()), "tiles are kept or pruned whole"
    assert 0.7 * w.numel() - 0.5 <= int((~m).sum()) < 0.7 * w.numel() + block * block


def test_fc_input_rule_removes_dead_channels() -> None:
    alive = torch.ones(5, 3 * 4, dtype=torch.bool)
    dead = torch.tensor([False, True, False])
    out = fc_input_rule(alive, dead, 4)
    assert not bool(out[:, 4:8].any()) and bool(out[:, :4].all()) and bool(out[:, 8:].all())
    with pytest.raises(ValueError, match="spatial"):
        fc_input_rule(alive, dead, 5)


# ------------------------------------------------------------------------------------ training

def _train_with_campfire(cfg: WeightPruneConfig, seed: int, epochs: int, spe: int):
    torch.manual_seed(seed)
    model = build_model("alexnet", in_channels=1, input_size=32, width_mult=0.125)
    pruner = CampfirePruner(model, cfg)
    # AlexNet's default lr (golden.training.train.DEFAULT_LR): with its He initialisation, lr 0.05 on these
    # batches of 8 random images diverges to NaN within a few steps
    opt = torch.optim.SGD(model.parameters(), lr=DEFAULT_LR["alexnet"], momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    history = []
    step = 0
    for epoch in range(epochs):
        for i in range(spe):
            x = torch.randn(8, 1, 32, 32, generator=gen)
            y = torch.randint(0, 10, (8,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            for lay in pruner.layers:  # the gradient of a pruned weight is zero
                assert not bool(lay.module.weight.grad[~lay.weight_mask].any())
            opt.step()
            pruner.after_step(opt, epoch, i, spe, step)
            step += 1
            history.append({lay.name: lay.weight_mask.clone() for lay in pruner.layers})
    return model, pruner, history


@pytest.mark.parametrize("mode", PRUNING_MODES)
def test_era_reaches_target_then_freezes(seed: int, mode: str) -> None:
    cfg = WeightPruneConfig(sparsity=0.7, mode=mode, era_start=1, era_length=2, fc_mode="fine")
    spe = 3
    model, pruner, history = _train_with_campfire(cfg, seed, epochs=4, spe=spe)
    era_end_step = cfg.era_end * spe - 1
    # before the era nothing is pruned
    assert all(bool(m.all()) for m in history[spe - 1].values())
    # masks only lose entries during the era
    for before, after in zip(history, history[1:]):
        for name in before:
            assert not bool((after[name] & ~before[name]).any()), f"{name} revived a weight"
    # at the end of the era each conv layer sits at the target, within one kernel's worth
    for lay in pruner.layers:
        m = history[era_end_step][lay.name]
        if lay.kind == "conv":
            kk = m.shape[2] * m.shape[3]
            assert abs(int((~m).sum()) - 0.7 * m.numel()) <= kk, lay.name
            if mode == "ck":
                assert set(kernels(m).sum(1).tolist()) <= {0, kk}
            if mode == "window":
                assert int(kernels(m).sum(1).max()) <= math.ceil(0.3 * kk - 1e-9)
        else:
            assert bool(m.any(1).all()), f"{lay.name}: an output lost every input"
    # fixed after the era: same masks, and the pruned weights are still exactly zero
    assert pruner.frozen and pruner.frozen_at_step == era_end_step
    for later in history[era_end_step + 1:]:
        for name, m in later.items():
            assert torch.equal(m, history[era_end_step][name])
    for lay in pruner.layers:
        assert not bool(lay.module.weight.detach()[~lay.weight_mask].any())
    true = pruner.sparsity()
    for lay in pruner.layers:
        assert true[lay.name]["weight_sparsity"] >= true[lay.name]["mask_sparsity"]


def test_alexnet_input_rule_and_dead_bias(seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model("alexnet", in_channels=1, input_size=32, width_mult=0.125)
    pair = input_rule_pair(model)
    assert pair is not None
    conv_name, fc_name, spatial = pair
    assert conv_name == conv_layers(model)[-1][0] and fc_name == "classifier.1" and spatial == 16
    last = dict(model.named_modules())[conv_name]
    with torch.no_grad():  # whether random weights lose whole filters depends on the initialisation:
        last.weight[:2] *= 1e-3  # two filters of tiny kernels, which CK removes first,
        last.bias.fill_(0.1)  # and non-zero biases (AlexNet's init zeroes them), so only the rule zeroes a channel
    cfg = WeightPruneConfig(sparsity=0.8, mode="ck", era_start=0, era_length=1)
    pruner = CampfirePruner(model, cfg)
    pruner.update_masks(0.8)
    pruner.apply()
    conv, fc = pruner.by_name[conv_name], pruner.by_name[fc_name]
    dead = dead_filters(conv.weight_mask)
    assert bool(dead.any()), "CK at 80 % kills some filters of the last conv"
    assert not bool(conv.bias_mask[dead].any()), "a dead filter loses its bias: its channel is zero"
    dead_inputs = dead.repeat_interleave(spatial)
    assert not bool(fc.weight_mask[:, dead_inputs].any())
    # the channel really is zero: the FC inputs it feeds are exactly 0
    x = torch.randn(4, 1, 32, 32)
    feats = torch.flatten(model.features(x), 1)
    assert not bool(feats[:, dead_inputs].any())
    assert input_rule_pair(build_model("resnet18", in_channels=1, width_mult=0.125)) is None


def test_masks_saved_and_loaded(tmp_path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model("alexnet", in_channels=1, input_size=32, width_mult=0.125)
    pruner = CampfirePruner(model, WeightPruneConfig(sparsity=0.6, mode="ck"))
    pruner.update_masks(0.6)
    pruner.save(tmp_path)
    masks = load_masks(tmp_path)
    for lay in pruner.layers:
        assert np.array_equal(masks[f"{lay.name}/weight"], lay.weight_mask.numpy())
    conv = pruner.layers[2]
    rows = zero_kernel_rows(masks[f"{conv.name}/weight"])
    assert rows.shape == conv.weight_mask.shape[:3]
    assert np.array_equal(rows, ~conv.weight_mask.any(3).numpy())
    with pytest.raises(FileNotFoundError):
        load_masks(tmp_path / "nothing")


@pytest.mark.parametrize("kwargs, name", [
    ({"sparsity": 1.0}, "weight_sparsity"), ({"sparsity": 0.5, "mode": "filter"}, "weight_pruning"),
    ({"sparsity": 0.5, "era_length": 0}, "era_length"), ({"sparsity": 0.5, "era_start": -1}, "era_start"),
    ({"sparsity": 0.5, "exponent": 0.0}, "prune_exponent"), ({"sparsity": 0.5, "window_fraction": 1.5},
                                                             "window_fraction"),
    ({"sparsity": 0.5, "fc_mode": "x"}, "fc_pruning"), ({"sparsity": 0.5, "fc_block": 0}, "fc_block"),
])
def test_bad_config_names_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WeightPruneConfig(**kwargs)


# ------------------------------------------------------------------------------------ hardware path

def test_weight_row_ops_rule(seed: int) -> None:
    from sparsetrain.golden.training.campfire import weight_row_ops
    from sparsetrain.golden.bitexact.rowconv import ConvShape, layer_row_ops
    from sparsetrain.arch.steps import Step

    shape = ConvShape(1, 3, 4, 6, 6, 3, 1, 1, 1)
    rng = np.random.default_rng(seed)
    live = rng.random((4, 3, 3)) < 0.4
    live[1] = False  # a dead filter: its forward units keep exactly one op
    for step in ("forward", "gta", "gtw"):
        units: dict = {}
        for op in layer_row_ops(shape, Step(step)):
            key = {"forward": (op.n, op.f, op.out_row), "gta": (op.n, op.c, op.in_row),
                   "gtw": (op.f, op.c, op.kr)}[step]
            units.setdefault(key, []).append(op)
        for key, ops in units.items():
            kept = weight_row_ops(step, ops, live, shape.weight_channel)
            if step == "gtw":
                assert kept == (ops if live[key[0], key[1], key[2]] else [])
                continue
            assert kept, "a Forward/GTA unit always keeps an op"
            dead = [o for o in ops if not live[o.f, o.c, o.kr]]
            if len(dead) < len(ops):
                assert kept == [o for o in ops if live[o.f, o.c, o.kr]]
            else:
                assert kept == ops[:1]
        assert weight_row_ops(step, ops, None, shape.weight_channel) == ops


def test_perf_analytic_weight_rows() -> None:
    from sparsetrain.perf.densities import LayerDensity
    from sparsetrain.arch.geometry import ConvShape
    from sparsetrain.perf.model import analytic_layer

    s = ConvShape(1, 64, 64, 16, 16, 3, 1, 1, 1, name="conv")
    full = analytic_layer(s, LayerDensity(act=0.5, grad=0.4))
    same = analytic_layer(s, LayerDensity(act=0.5, grad=0.4, weight_rows=1.0))
    assert full.cycles() == same.cycles()
    prev = full
    for w in (0.7, 0.4, 0.2):
        r = analytic_layer(s, LayerDensity(act=0.5, grad=0.4, weight_rows=w))
        assert r.cycles(dense=True) == full.cycles(dense=True), "the dense baseline runs every row"
        assert r.cycles() < prev.cycles()
        assert r.steps["forward"].sparse.ops == pytest.approx(full.steps["forward"].sparse.ops * w, rel=0.02)
        assert r.steps["gtw"].sparse.units == pytest.approx(full.steps["gtw"].sparse.units * w, abs=1)
        prev = r


def _fake_run(tmp_path, seed: int, sparsity: float):
    import json
    torch.manual_seed(seed)
    model = build_model("alexnet", in_channels=1, input_size=32, width_mult=0.125)
    pruner = CampfirePruner(model, WeightPruneConfig(sparsity=sparsity, mode="ck"))
    pruner.update_masks(sparsity)
    pruner.save(tmp_path)
    layers = {n: {"activation_density": 0.5, "grad_density": 0.4, "target": "dO"} for n, _, _ in conv_layers(model)}
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": [{"layers": layers}]}))
    return pruner


def test_perf_takes_weight_sparsity_from_masks(tmp_path, seed: int) -> None:
    from sparsetrain.perf.api import perf_network
    from sparsetrain.perf.densities import load_run_dir

    pruner = _fake_run(tmp_path, seed, 0.6)
    table = load_run_dir(tmp_path)
    for lay in pruner.layers:
        if lay.kind == "conv":
            expected = float(lay.weight_mask.any(3).float().mean())
            assert table.per_layer[lay.name].weight_rows == pytest.approx(expected)
    with_masks = perf_network("alexnet", "cifar", tmp_path)
    for f in ("weight_masks.npz", "weight_masks.json"):
        (tmp_path / f).unlink()
    without = perf_network("alexnet", "cifar", tmp_path)
    assert with_masks.cycles(dense=True) == without.cycles(dense=True)
    assert with_masks.speedup > 1.3 * without.speedup, "CK at 60 % removes most of the row ops"


def test_perf_exact_units_skip_rows(seed: int) -> None:
    from sparsetrain.arch.geometry import ConvShape
    from sparsetrain.perf.decompose import exact_units

    s = ConvShape(1, 4, 5, 7, 7, 3, 1, 1, 1, name="conv")
    rng = np.random.default_rng(seed)
    nz_in, nz_grad = rng.random((2, 4, 7, 7)) < 0.5, rng.random((2, 5, 7, 7)) < 0.5
    live = rng.random((5, 4, 3)) < 0.5
    for step in ("forward", "gta", "gtw"):
        base = exact_units(step, s, nz_in, nz_grad)
        skip = exact_units(step, s, nz_in, nz_grad, live_rows=live)
        if step == "gtw":
            assert len(skip) == sum(1 for u in base if live[u.key[1], u.key[2], u.key[3]])
        else:
            assert len(skip) == len(base)
            assert sum(len(u.cycles) for u in skip) < sum(len(u.cycles) for u in base)


def test_train_config_checks_the_era() -> None:
    from sparsetrain.golden.training.train import TrainConfig

    with pytest.raises(ValueError, match="era_start"):
        TrainConfig(epochs=2, weight_sparsity=0.5, era_start=2)
    with pytest.raises(ValueError, match="era_length"):
        TrainConfig(epochs=3, weight_sparsity=0.5, era_start=1, era_length=3)
    with pytest.raises(ValueError, match="weight_pruning"):
        TrainConfig(epochs=3, weight_sparsity=0.5, weight_pruning="filter")
    cfg = TrainConfig(epochs=3, weight_sparsity=0.5, weight_pruning="combined", era_start=1, era_length=2)
    w = cfg.weight_prune_config()
    assert (w.mode, w.era_start, w.era_end, w.window_fraction) == ("combined", 1, 3, 0.8)
    assert TrainConfig(epochs=1).weight_prune_config() is None


def test_train_command_with_weight_and_gradient_pruning(tmp_path, capsys) -> None:
    import json

    from sparsetrain.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--model", "alexnet", "--width-mult", "0.125", "--epochs", "2", "--train-samples", "256",
               "--test-samples", "100", "--batch-size", "32", "--threads", "1", "--no-progress", "--p", "0.9",
               "--weight-sparsity", "0.6", "--weight-pruning", "combined", "--era-start", "0", "--era-length", "1",
               "--save-model", "--out", str(out)])
    assert rc == 0 and "weight sparsity" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert [e["weight_sparsity_target"] for e in m["epochs"]] == [pytest.approx(0.6), pytest.approx(0.6)]
    masks = load_masks(out)
    state = torch.load(out / "model.pt", weights_only=True)
    for name, rec in m["epochs"][-1]["weight_sparsity"].items():
        mask = masks[f"{name}/weight"]
        weight = state[f"{name}.weight"].numpy()
        assert not weight[~mask].any(), f"{name}: a pruned weight is not zero"
        assert rec["weight_sparsity"] == pytest.approx(float((weight == 0).mean()))
        if mask.ndim == 4:
            kk = mask.shape[2] * mask.shape[3]
            assert abs((~mask).sum() - 0.6 * mask.size) <= kk
    # both kinds of sparsity in one run: the gradient pruning layers were active too
    pruned = [lay["grad_density"] for lay in m["epochs"][-1]["layers"].values() if "grad_density" in lay]
    assert pruned and max(pruned) < 0.9
    assert (out / "metrics.png").stat().st_size > 0
    assert m["weight_pruning"]["frozen"] and m["weight_pruning"]["masks"] == "weight_masks.npz"


def _ck_layer(seed: int):
    """A conv_relu layer whose weights are CK-pruned at 60 %, with its pruned kernel rows."""
    from sparsetrain.compiler import ConvShape, LayerData

    rng = np.random.default_rng(seed)
    shape = ConvShape(2, 3, 4, 7, 9, 3, 1, 1, 1, name="ck")
    x = rng.standard_normal(shape.input_shape) * (rng.random(shape.input_shape) < 0.5)
    w = rng.standard_normal(shape.weight_shape) * 0.3
    mask = ck_mask(torch.from_numpy(w), 0.6).numpy()
    arrays = {"I": np.maximum(x, 0).astype(np.float32), "W": (w * mask).astype(np.float32),
              "b": (rng.standard_normal(4) * 0.1).astype(np.float32),
              "dO": (rng.standard_normal(shape.output_shape) * 1e-3
                     * (rng.random(shape.output_shape) < 0.5)).astype(np.float32)}
    return LayerData(shape, "conv_relu", arrays, [], False, False, 0.9, "unbiased", 7,
                     pruned_rows=~mask.any(axis=3)), mask


def test_compiler_skips_pruned_kernel_rows_bit_exactly(seed: int) -> None:
    from sparsetrain.compiler import compile_step
    from sparsetrain.arch.isa import CoreParams
    from sparsetrain.arch.schedule import ArchParams
    from sparsetrain.check.cycles import schedule_cycles, weight_saved_cycles
    from sparsetrain.golden.bitexact.core_model import run_program
    from sparsetrain.arch.schedule2 import schedule_units2
    from sparsetrain.perf.decompose import exact_units
    from sparsetrain.perf.ops2 import unit_ops

    params = CoreParams(acc_w=48, groups=2, buf_depth=1 << 14, mask_depth=1 << 10, imem_depth=1 << 14,
                        dir_depth=1 << 12)
    data, mask = _ck_layer(seed)
    pruned = ~mask.any(axis=3)
    assert pruned.any() and not pruned.all()
    for step in ("forward", "gta", "gtw"):
        full = compile_step(data, step, params, skip_weight_rows=False)
        skip = compile_step(data, step, params)
        runs = [run_program(c.program, c.buffer_image, params, masks=c.masks) for c in (full, skip)]
        got = [c.decode(lambda r, run=run: run.row(r.dir, r.length, params)) for c, run in zip((full, skip), runs)]
        assert all(r.error == 0 for r in runs)
        if step == "gtw":
            np.testing.assert_array_equal(got[1][~pruned], got[0][~pruned])
            assert not got[1][pruned].any(), "a pruned row's gradient is 0"
            assert skip.skipped_units == int(pruned.sum()) * 1  # one unit per (f, c, kr)
        else:
            np.testing.assert_array_equal(got[1], got[0], err_msg=f"{step}: skipping changed a result")
            assert skip.skipped_ops > 0 and skip.skipped_units == 0
        assert np.count_nonzero(got[1]), "a check on all-zero results proves nothing"
        assert runs[1].cycles < runs[0].cycles, f"{step}: no cycles saved"
        # section 2 bound still holds against the (masked, for GTW) float reference
        t = skip.tensors
        assert np.all(np.abs(got[1] * 2.0 ** -t.frac[t.result_name] - t.reference) <= t.bound)
        # the performance model's exact schedule predicts the skipped program's cycles (section 10's
        # rules at the core's unit rate, one UNIT per cycle: arch.schedule2, architecture 12.9)
        s = ls = skip.shape
        if step == "forward":
            nz_in, nz_grad, m = t.q["I"] != 0, np.zeros(s.output_shape, bool), None
        elif step == "gta":
            nz_in, nz_grad, m = np.ones(s.input_shape, bool), t.q["dO"] != 0, t.mask
        else:
            nz_in, nz_grad, m = t.q["I"] != 0, t.q["dO"] != 0, None
        arch = ArchParams(groups=params.groups, dw=params.dw, w_max=params.w_max)
        units = exact_units(step, ls, nz_in, nz_grad, None, m, skip.live_rows)
        micro = params.microarch()
        predicted = schedule_units2(units, unit_ops(step, ls, units, nz_in, nz_grad, m, micro), arch, micro).cycles
        assert predicted == runs[1].cycles_contract == runs[1].cycles, step
        # `sparsetrain check` reports the same prediction and the cycles the skipping saves
        assert schedule_cycles(skip)[0] == runs[1].cycles_contract
        assert schedule_cycles(full)[1] == schedule_cycles(skip)[1], "the dense baseline runs every row"
        assert weight_saved_cycles(skip) == runs[0].cycles_contract - runs[1].cycles_contract > 0
        assert weight_saved_cycles(full) == 0


@pytest.fixture(scope="module")
def ck_golden_run(tmp_path_factory) -> str:
    """A short AlexNet run, CK-pruned to 70 % in epoch 0 (masks fixed in epoch 1), golden tensors of
    features.2.conv at its last step."""
    from sparsetrain.golden.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ck-run")
    cfg = TrainConfig(model="alexnet", epochs=2, batch_size=32, train_samples=320, test_samples=100, width_mult=0.125,
                      threads=1, progress=False, seed=3, weight_sparsity=0.7, weight_pruning="ck", era_start=0,
                      era_length=1, dump_layers=["features.2.conv"], dump_steps=[19])
    train(cfg, out)
    return str(out)


@pytest.mark.regress
@pytest.mark.parametrize("step", ["forward", "gta", "gtw"])
def test_check_ck_run_on_verilator(ck_golden_run: str, step: str) -> None:
    """`sparsetrain check` on a layer of a CK-pruned run: RTL bit-exact with the model, the model's
    cycles are the performance model's schedule, and the skipped rows save cycles."""
    from sparsetrain.check import check_layer

    rep = check_layer(ck_golden_run, "features.2.conv", step, samples=1)
    print(rep.text())
    assert rep.ok and rep.bit_exact and rep.rtl_cycles == rep.model_cycles
    assert rep.schedule_cycles == rep.contract_cycles
    assert (rep.skipped_units if step == "gtw" else rep.skipped_ops) > 0
    assert rep.weight_saved_cycles > 0 and "saving" in rep.text()


def test_golden_of_a_ck_run_carries_its_masks(ck_golden_run: str) -> None:
    from sparsetrain.compiler import LayerData, compile_step
    from sparsetrain.check import sim_params
    from sparsetrain.golden.training.tensors import load_golden
    from sparsetrain.perf.densities import golden_patterns

    mask = load_masks(ck_golden_run)["features.2.conv/weight"]
    data = LayerData.from_golden(load_golden(ck_golden_run), "features.2.conv")
    assert np.array_equal(data.pruned_rows, ~mask.any(axis=3))
    assert not np.asarray(data.arrays["W"])[~mask].any(), "the dumped weights are the pruned ones"
    gtw = compile_step(data, "gtw", sim_params(), samples=1)
    assert gtw.skipped_units == int(data.pruned_rows.sum()) > 0
    fwd = compile_step(data, "forward", sim_params(), samples=1)
    assert fwd.skipped_ops > 0
    (shape, pats), = golden_patterns(ck_golden_run)
    assert np.array_equal(pats["gtw_rows"], mask.any(axis=3))
