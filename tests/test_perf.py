"""Performance model: hand-computable layers, dense speedup 1, monotonicity, sources, command."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.arch.schedule import ArchParams
from sparsetrain.arch.steps import Step
from sparsetrain.cli import main
from sparsetrain.golden.bitexact.rowconv import layer_row_ops
from sparsetrain.perf import api, paper
from sparsetrain.perf.decompose import STEPS, conv_shape, exact_units
from sparsetrain.perf.densities import LayerDensity, load_run_dir, load_table, paper_table, table_from_metrics
from sparsetrain.perf.energy import EnergyTable
from sparsetrain.perf.model import analytic_layer, evaluate, exact_layer, expected_entries
from sparsetrain.perf.shapes import LayerShape, conv_layer_shapes, network_shapes

SEED = int(os.environ.get("SPARSETRAIN_SEED", "2024"))


@pytest.fixture
def rng():
    print(f"SPARSETRAIN_SEED={SEED}")
    return np.random.default_rng(SEED)


def shape(c=4, f=4, h=8, w=8, k=3, s=1, p=1, groups=1, first=False, name="L"):
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return LayerShape(name, c, f, h, w, ho, wo, k, s, p, groups, first)


def patterns(rng, sh, d_in, d_grad, n=1):
    return {"in": rng.random((n, sh.c_in, sh.h_in, sh.w_in)) < d_in,
            "grad": rng.random((n, sh.c_out, sh.h_out, sh.w_out)) < d_grad}


# ---------------------------------------------------------------- hand-computable cases

def test_single_row_convolution_by_hand(rng):
    """One input row, one filter, K=3: forward is one SRC op plus the PPU finish of its row."""
    sh = LayerShape("row", 1, 1, 3, 10, 1, 8, 3, 1, 0, 1)  # 3 input rows, one output row of 8
    arch = ArchParams(groups=1, ppu_latency=3)
    row = rng.random((1, 1, 3, 10)) < 0.4
    row[0, 0, 1, :] = False  # the middle kernel row sees an empty row: one marker entry
    grad = np.ones((1, 1, 1, 8), dtype=bool)
    res = exact_layer(sh, {"in": row, "grad": grad}, arch)
    nnz = [max(1, int(row[0, 0, r].sum())) for r in range(3)]
    # three SRC ops (one per kernel row) on three PEs at once: 1 cfg + 3 weights + entries + 1 final
    ops = [1 + 3 + n + 1 for n in nnz]
    assert res.steps["forward"].sparse.cycles == max(ops) + 8 + 3
    dense_ops = 1 + 3 + 10 + 1
    assert res.steps["forward"].dense.cycles == dense_ops + 8 + 3
    # GTW: one OSRC per kernel row: 1 cfg + I entries + dO entries (8, dense) + 1 final
    # GTW: three dW rows (kr) of one OSRC each, one after the other on the single group
    gtw = [1 + n + 8 + 1 + 3 + 3 for n in nnz]
    assert res.steps["gtw"].sparse.cycles == sum(gtw)
    # GTA: each of the 3 dI rows gets one MSRC: cfg + mask + 3 weights + 8 dO entries + final
    assert res.steps["gta"].sparse.cycles == 3 * ((1 + 1 + 3 + 8 + 1) + 10 + 3)
    lanes = np.array([1, 2, 3, 3, 3, 3, 3, 3, 2, 1])  # taps k with 0 <= c - k < 8, column c
    assert res.steps["forward"].sparse.macs == int((row[0, 0] * lanes).sum())


def test_one_by_one_layer_by_hand():
    """1x1 layer, dense, one group: every number below is worked out from the contract by hand."""
    sh = shape(c=6, f=2, h=4, w=4, k=1, p=0)
    arch = ArchParams(groups=1, ppu_latency=3)
    ones = {"in": np.ones((1, 6, 4, 4), bool), "grad": np.ones((1, 2, 4, 4), bool)}
    ex, an = exact_layer(sh, ones, arch), analytic_layer(sh, LayerDensity(1.0, 1.0), arch)
    # forward: 8 output rows, each 6 SRC ops of 1+1+4+1 = 7 cycles on 3 PEs (2 each) + finish 4+3
    # GTA: 24 dI rows, each 2 MSRC ops of 1+1+1+4+1 = 8 cycles (one wave) + finish 4+3
    # GTW: 12 dW rows (f, c, kr), each 4 OSRC ops of 1+4+4+1 = 10 cycles (two waves) + finish 1+3
    want = {"forward": 8 * (2 * 7 + 7), "gta": 24 * (8 + 7), "gtw": 12 * (2 * 10 + 4)}
    for step, cycles in want.items():
        assert ex.steps[step].sparse.cycles == cycles, step
        assert an.steps[step].sparse.cycles == pytest.approx(cycles), step
        assert ex.steps[step].speedup == pytest.approx(1.0)


def test_all_zero_gradients(rng):
    """dO all zero: every MSRC streams one marker, OSRC one marker on Port-2, no multiply at all."""
    sh = shape(c=3, f=5, h=6, w=6)
    arch = ArchParams(groups=2)
    pats = patterns(rng, sh, 0.6, 0.0)
    res = exact_layer(sh, pats, arch)
    units = exact_units("gta", sh, pats["in"], pats["grad"])
    assert all((u.cycles == 1 + 1 + sh.k + 1 + 1).all() for u in units)
    assert res.steps["gta"].sparse.macs == 0 and res.steps["gtw"].sparse.macs == 0
    assert res.steps["gta"].energy["mac"] == 0
    an = analytic_layer(sh, LayerDensity(0.6, 0.0), arch)
    assert an.steps["gta"].sparse.cycles < an.steps["gta"].dense.cycles
    assert expected_entries(sh.w_out, 0.0) == 1.0
    for step in ("gta", "gtw"):
        assert res.steps[step].speedup > 1.5


def test_fully_dense_layer_speedup_is_one(rng):
    for sh in (shape(c=5, f=3, h=7, w=9, k=3, s=2, p=1), shape(c=4, f=4, h=6, w=6, k=1, p=0, groups=4)):
        arch = ArchParams(groups=3)
        ones = {"in": np.ones((1, sh.c_in, sh.h_in, sh.w_in), bool),
                "grad": np.ones((1, sh.c_out, sh.h_out, sh.w_out), bool)}
        ex = exact_layer(sh, ones, arch)
        an = analytic_layer(sh, LayerDensity(1.0, 1.0), arch)
        for step in STEPS:
            assert ex.steps[step].speedup == pytest.approx(1.0)
            assert an.steps[step].speedup == pytest.approx(1.0)
            assert ex.steps[step].sparse.macs == ex.steps[step].dense.macs


def test_dense_macs_match_torch():
    """Dense MACs of every step equal conv2d's valid multiply count (counted with all-ones tensors)."""
    for sh in (shape(c=3, f=4, h=7, w=7, k=3, s=2, p=1), shape(c=4, f=4, h=5, w=5, k=3, p=1, groups=4)):
        x = torch.ones(1, sh.c_in, sh.h_in, sh.w_in, dtype=torch.float64)
        wt = torch.ones(sh.c_out, sh.c_per_group, sh.k, sh.k, dtype=torch.float64)
        macs = torch.nn.functional.conv2d(x, wt, stride=sh.stride, padding=sh.pad, groups=sh.groups).sum()
        res = analytic_layer(sh, LayerDensity(1.0, 1.0), ArchParams(groups=2))
        for step in STEPS:
            assert res.steps[step].dense.macs == pytest.approx(float(macs)), step


# ---------------------------------------------------------------- the two evaluations agree

def test_unit_ops_are_the_shared_decomposition(rng):
    sh = shape(c=4, f=2, h=7, w=5, k=3, s=2, p=1)
    pats = patterns(rng, sh, 0.5, 0.3)
    for step in STEPS:
        units = exact_units(step, sh, pats["in"], pats["grad"])
        assert sum(len(u.cycles) for u in units) == len(list(layer_row_ops(conv_shape(sh), Step(step))))
        an = analytic_layer(sh, LayerDensity(0.5, 0.3), ArchParams())
        assert an.steps[step].sparse.ops == sum(len(u.cycles) for u in units)
        assert an.steps[step].sparse.units == len(units)


@pytest.mark.parametrize("d_in,d_grad", [(0.5, 0.3), (0.2, 0.1), (0.9, 0.6)])
def test_analytic_matches_exact_on_random_layers(rng, d_in, d_grad):
    sh = shape(c=8, f=12, h=12, w=24, k=3, s=1, p=1)
    arch = ArchParams(groups=4)
    ex = exact_layer(sh, patterns(rng, sh, d_in, d_grad), arch)
    an = analytic_layer(sh, LayerDensity(d_in, d_grad), arch)
    for step in STEPS:
        e, a = ex.steps[step].sparse.cycles, an.steps[step].sparse.cycles
        assert abs(a - e) / e < 0.05, (step, a, e)
        assert an.steps[step].sparse.macs == pytest.approx(ex.steps[step].sparse.macs, rel=0.1)


# ---------------------------------------------------------------- monotonicity

def test_more_sparsity_is_never_slower(rng):
    shapes = [shape(c=int(rng.integers(1, 9)), f=int(rng.integers(1, 9)), h=int(rng.integers(3, 20)),
                    w=int(rng.integers(3, 40)), k=k, s=s, p=p)
              for k, s, p in [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 2, 2), (7, 1, 3)] for _ in range(3)]
    grid = np.linspace(0.0, 1.0, 11)
    for sh in shapes:
        arch = ArchParams(groups=int(rng.integers(1, 8)))
        for step in STEPS:
            prev = None
            for d in grid:  # both densities rising together
                c = analytic_layer(sh, LayerDensity(d, d), arch).steps[step].sparse.cycles
                assert prev is None or c >= prev - 1e-9, (sh, step, d)
                prev = c
            for fixed in (0.3, 0.8):
                a = [analytic_layer(sh, LayerDensity(d, fixed), arch).steps[step].sparse.cycles for d in grid]
                g = [analytic_layer(sh, LayerDensity(fixed, d), arch).steps[step].sparse.cycles for d in grid]
                assert np.all(np.diff(a) >= -1e-9) and np.all(np.diff(g) >= -1e-9), (sh, step)


def test_more_groups_never_slower_and_bandwidth_bound():
    sh = shape(c=16, f=16, h=16, w=16)
    prev = None
    for g in (1, 2, 4, 8, 16, 56):
        c = analytic_layer(sh, LayerDensity(0.5, 0.3), ArchParams(groups=g)).cycles()
        assert prev is None or c <= prev
        prev = c
    free = analytic_layer(sh, LayerDensity(0.5, 0.3), ArchParams(groups=56))
    tight = analytic_layer(sh, LayerDensity(0.5, 0.3), ArchParams(groups=56, buffer_bw=4.0))
    st = tight.steps["forward"].sparse
    assert st.bound == "buffer" and st.cycles == pytest.approx(st.entries_read / 4.0)
    assert tight.cycles() > free.cycles()


# ---------------------------------------------------------------- shapes, sources, energy

def test_shapes_from_hooks():
    m = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    sh = conv_layer_shapes(m, 20)
    assert [(s.c_in, s.c_out, s.h_in, s.h_out, s.k, s.stride, s.pad, s.groups) for s in sh] == [
        (3, 8, 20, 10, 5, 2, 2, 1), (8, 8, 10, 10, 3, 1, 1, 8), (8, 4, 10, 10, 1, 1, 0, 1)]
    assert [s.first for s in sh] == [True, False, False]
    res = evaluate(sh, LayerDensity(0.5, 0.3))
    assert "gta" not in res.layers[0].steps and "gta" in res.layers[1].steps
    assert res.layers[0].density.act == 1.0  # the image is dense


def test_resnet152_imagenet_under_a_second():
    shapes = network_shapes("resnet152", "imagenet")
    assert len(shapes) == 155
    t0 = time.perf_counter()
    res = evaluate(shapes, paper_table("resnet152", "imagenet"), model="resnet152", input_kind="imagenet")
    dt = time.perf_counter() - t0
    print(f"resnet152 imagenet: {dt:.3f} s, speedup {res.speedup:.2f}")
    assert dt < 1.0
    assert any("CIFAR-10" in n for n in res.notes)  # no ImageNet figure in the papers: says so
    assert 1.0 < res.speedup < 10.0


def test_density_sources(tmp_path):
    t = paper_table("alexnet", "cifar")
    assert t.default.grad == 0.01 and "reported" in t.notes[0]
    with pytest.raises(ValueError, match="model"):
        paper_table("vgg", "cifar")
    metrics = {"epochs": [{"layers": {}}, {"layers": {
        "a.conv": {"activation_density": 1.0, "target": "dI", "grad_density": 0.2},
        "b.conv": {"activation_density": 0.4, "target": "dI", "grad_density": 0.1},
        "c.conv": {"activation_density": 0.3, "target": "dO", "grad_density": 0.25}}}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    tab = load_run_dir(tmp_path)
    shapes = [shape(name=n, first=n == "a.conv") for n in ("a.conv", "b.conv", "c.conv")]
    d = tab.for_network(shapes)
    assert d[0].grad == pytest.approx(0.1 * 0.4)   # next layer's pruned dI through this layer's ReLU
    assert d[1].out_grad == pytest.approx(0.1) and d[2].grad == 0.25 and d[2].act == 0.3
    csv = tmp_path / "d.csv"
    csv.write_text("layer,act,grad\n*,0.5,0.2\nb.conv,0.7,0.6\n")
    tab = load_table(csv)
    assert tab.for_layer(shapes[1]).grad == 0.6 and tab.for_layer(shapes[2]).act == 0.5
    with pytest.raises(ValueError, match="grad"):
        table_from_metrics({"layers": {"x": {"grad": 1.5}}}, "bad")
    with pytest.raises(ValueError, match="missing"):
        table_from_metrics({"layers": {"x": {"grad": 0.5}}}, "t").for_layer(shapes[0])


def test_energy_table_and_ratio(tmp_path):
    sh = shape(c=8, f=8, h=8, w=16)
    base = analytic_layer(sh, LayerDensity(0.5, 0.2), ArchParams())
    (tmp_path / "e.json").write_text(json.dumps({"mac_pj": 0.0, "buffer_pj": 0.0, "reg_pj": 0.0, "add_pj": 1.0}))
    only_ppu = analytic_layer(sh, LayerDensity(0.5, 0.2), ArchParams(), EnergyTable.load(tmp_path / "e.json"))
    for step in STEPS:
        assert only_ppu.steps[step].energy["on_chip"] == pytest.approx(only_ppu.steps[step].sparse.acc.adds)
        e, d = base.steps[step].energy, base.steps[step].dense_energy
        assert e["mac"] < d["mac"] and e["on_chip"] < d["on_chip"]
    (tmp_path / "bad.json").write_text(json.dumps({"sram_pj": 1.0}))
    with pytest.raises(ValueError, match="sram_pj"):
        EnergyTable.load(tmp_path / "bad.json")


def test_bad_parameters():
    with pytest.raises(ValueError, match="groups = 0"):
        ArchParams(groups=0)
    with pytest.raises(ValueError, match="buffer_bw"):
        ArchParams(buffer_bw=0.0)
    with pytest.raises(ValueError, match="act"):
        LayerDensity(act=-0.1)
    with pytest.raises(ValueError, match="pad"):
        shape(k=3, p=3)
    with pytest.raises(ValueError, match="input"):
        api.perf_network("alexnet", "mnist")


def test_command_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["perf", "--model", "alexnet", "--input", "cifar", "--json", str(out),
                 "--plot", str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "reported by the papers" in text and "total" in text
    data = json.loads(out.read_text())
    assert data["total"]["speedup"] > 1.0 and len(data["layers"]) == 5
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["perf", "--model", "alexnet", "--groups", "0"]) == 2  # one clear error line


def test_every_paper_model_has_a_density():
    for m in paper.MODELS:
        for kind in ("cifar", "imagenet"):
            d, note = paper.reported_grad_density(m, kind)
            assert 0.0 < d <= 1.0 and note


def test_golden_tensors_exact_patterns(tmp_path, rng):
    """Exported golden tensors: the exact model reads their non-zero patterns (dO_pruned for a dO target)."""
    from sparsetrain.golden.training.tensors import LayerTensors, export_golden
    sh = shape(c=3, f=4, h=6, w=7, k=3, s=1, p=1, name="c1")
    i = np.maximum(rng.standard_normal((1, 3, 6, 7)), 0)
    do = rng.standard_normal((1, 4, 6, 7))
    pruned = do * (rng.random(do.shape) < 0.25)
    lt = LayerTensors("c1", "conv_bn_relu", 1, 1, 1, 3, True, 0.1, 0.1, [0.1] * 4, True, 1,
                      {"I": i, "W": rng.standard_normal((4, 3, 3, 3)), "dO": do, "dO_pruned": pruned})
    export_golden(tmp_path, [lt], {"model": "test"})
    res = api.perf_golden(tmp_path, ArchParams(groups=2))
    ref = exact_layer(sh, {"in": i != 0, "grad": pruned != 0}, ArchParams(groups=2))
    got = res.layers[0]
    assert got.density.grad == pytest.approx(float((pruned != 0).mean()))
    for step in got.steps:
        assert got.steps[step].sparse.cycles == ref.steps[step].sparse.cycles
