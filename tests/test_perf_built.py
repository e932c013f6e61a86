"""`sparsetrain perf` / `make perf` default: the built second-generation set (arch.microarch.BUILT =
A+B+C+D with the RTL's op reader of 4 OP words per cycle and a controller that hands out 8 units per
cycle, 12.9), the first design still selectable."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.geometry import ConvShape
from sparsetrain.arch.microarch import BUILT, GEN1, GEN2, MicroArch
from sparsetrain.arch.schedule import ArchParams
from sparsetrain.cli import main
from sparsetrain.perf import api, paper
from sparsetrain.perf.densities import LayerDensity
from sparsetrain.perf.model import analytic_layer, exact_layer
from sparsetrain.perf.shapes import INPUT_SIZES


def test_built_is_the_five_built_changes_with_the_rtl_op_reader_and_unit_rate():
    assert BUILT == GEN2.with_(op_scan=4, osrc_window=2, unit_rate=8)
    assert MicroArch.parse("built") == MicroArch.parse("A+B+C+D4+E+U8") == BUILT
    # the baseline's controller hands out units at the same rate (not a zero-dependent change)
    assert BUILT.dense_baseline() == MicroArch(prefetch=True, pingpong=True, op_scan=4, unit_rate=8)


def test_fully_dense_layer_speedup_is_one_with_built():
    """No zeros, nothing to skip: the built set and its baseline (A and C) take the same cycles,
    event level and closed form, on a stride-1 and a stride-2 layer."""
    for sh in (ConvShape(1, 3, 4, 9, 11, 3, 1, 1, 1, name="s1"), ConvShape(1, 4, 3, 11, 13, 3, 2, 1, 1, name="s2")):
        dense = {"in": np.ones((1, sh.c_in, sh.h_in, sh.w_in), bool),
                 "grad": np.ones((1, sh.c_out, sh.h_out, sh.w_out), bool)}
        res = exact_layer(sh, dense, ArchParams(groups=2, micro=BUILT))
        for name, st in res.steps.items():
            # D's op reader examines a block one cycle after reading its directory entries (12.4), a
            # pipeline the baseline (no D) does not have: at most one cycle per unit (1 to 8 here)
            assert 0 <= st.sparse.cycles - st.dense.cycles <= st.sparse.units, (sh.name, name)
        an = analytic_layer(sh, LayerDensity(1.0, 1.0), ArchParams(groups=2, micro=BUILT))
        for name, st in an.steps.items():
            # the same op-reader cycles (closed form): within 3 %
            assert 0.97 <= st.speedup <= 1.0 + 1e-9, (sh.name, name)


def _built_not_below_first(pairs) -> None:
    for model, kind in pairs:
        first = api.perf_network(model, kind, None, ArchParams(micro=GEN1))
        built = api.perf_network(model, kind, None, ArchParams(micro=BUILT))
        print(f"{model} {kind}: first {first.speedup:.2f}x, built {built.speedup:.2f}x")
        assert built.speedup >= first.speedup, (model, kind)
        assert built.cycles() < first.cycles(), (model, kind)          # the design itself got faster
        assert built.useful_utilisation() > first.useful_utilisation(), (model, kind)


def test_built_is_at_least_the_first_design_on_alexnet_and_resnet18():
    """make test: the fast pairs (AlexNet both inputs, ResNet-18 ImageNet); every pair: regress."""
    _built_not_below_first([("alexnet", "cifar"), ("alexnet", "imagenet"), ("resnet18", "imagenet")])


@pytest.mark.regress
def test_built_is_at_least_the_first_design_on_every_network_of_make_perf():
    _built_not_below_first([(m, k) for m in paper.MODELS for k in INPUT_SIZES])


def test_command_defaults_to_built_and_gen1_stays_selectable(capsys):
    assert main(["perf", "--model", "alexnet"]) == 0
    assert f"microarchitecture {BUILT.name} (dense baseline {BUILT.dense_baseline().name})" in capsys.readouterr().out
    assert main(["perf", "--model", "alexnet", "--microarch", "gen1"]) == 0
    assert "microarchitecture gen1 (dense baseline gen1)" in capsys.readouterr().out
