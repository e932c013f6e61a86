"""Useful utilisation (docs/architecture.md 12.7): the one counting rule by hand and against the
bit-accurate row operations, and the performance model and the check path (the operand rows of the
compiled programs the RTL runs) agreeing on whole layers."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow
from sparsetrain.arch.isa import CoreParams
from sparsetrain.arch.microarch import BUILT, GEN1, MicroArch, of_params
from sparsetrain.arch.schedule import ArchParams
from sparsetrain.arch.timing import Mode
from sparsetrain.arch.utilisation import useful_columns, useful_cycles
from sparsetrain.check.cycles import _step_patterns, schedule_cycles
from sparsetrain.check.harness import useful_cycles as check_useful_cycles
from sparsetrain.check.report import CheckReport
from sparsetrain.compiler import ConvShape, LayerData, compile_step
from sparsetrain.golden.bitexact import rowops
from sparsetrain.perf.model import exact_step

PARAMS = CoreParams(acc_w=48, groups=2, buf_depth=1 << 14, mask_depth=1 << 10, imem_depth=1 << 14, dir_depth=1 << 12)


def _row(n: int, cols) -> np.ndarray:
    r = np.zeros(n, bool)
    r[list(cols)] = True
    return r


# ---------------------------------------------------------------- the rule by hand

def test_src_counts_non_zero_inputs_that_reach_an_output():
    # 1x1, stride 2: outputs read input columns 0, 2, 4; columns 1 and 5 yield no product
    assert useful_cycles(Mode.SRC, 1, 2, 0, 6, 3, _row(6, [0, 1, 2, 5])) == 2
    # 3x3, stride 1, pad 1: every column reaches an output
    assert useful_cycles(Mode.SRC, 3, 1, 1, 5, 5, _row(5, [0, 4])) == 2
    assert useful_cycles(Mode.SRC, 3, 1, 1, 5, 5, _row(5, [])) == 0     # the empty row's marker


def test_msrc_counts_gradients_with_a_wanted_target():
    # dO at 0, 2, 4 (pad 1): targets y-1 .. y+1; the mask wants dI columns 3 and 4 only
    mask = _row(5, [3, 4])
    assert useful_cycles(Mode.MSRC, 3, 1, 1, 5, 5, _row(5, [0, 2, 4]), mask) == 2
    assert useful_cycles(Mode.MSRC, 3, 1, 1, 5, 5, _row(5, [0, 2, 4]), _row(5, [])) == 0


def test_osrc_counts_inputs_with_a_gradient_partner():
    # K = 3, no pad, 5 inputs -> 3 outputs; input c partners dO x with 0 <= c - x <= 2
    assert useful_cycles(Mode.OSRC, 3, 1, 0, 5, 3, _row(5, [0, 4]), _row(3, [0])) == 1
    assert useful_cycles(Mode.OSRC, 3, 1, 0, 5, 3, _row(5, [0, 4]), _row(3, [2])) == 1   # column 4 only
    assert useful_cycles(Mode.OSRC, 3, 1, 0, 5, 3, _row(5, [0, 4]), _row(3, [1])) == 0


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="other"):
        useful_columns(Mode.MSRC, 3, 1, 1, 5, 5)
    with pytest.raises(ValueError, match="other has 4 columns"):
        useful_columns(Mode.OSRC, 3, 1, 0, 5, 3, np.zeros(4, bool))
    with pytest.raises(ValueError, match="port1"):
        useful_cycles(Mode.SRC, 3, 1, 1, 5, 5, np.zeros(4, bool))


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (1, 2, 0), (5, 2, 2), (3, 2, 0)])
def test_an_entry_is_useful_exactly_when_the_row_operation_multiplies_it(rng, k, s, p):
    """Against golden.bitexact.rowops: each non-zero entry on its own performs >= 1 multiply
    (weights all 1) exactly when the rule counts it."""
    w_in = 13
    w_out = rowops.conv_out_len(w_in, k, s, p)
    for _ in range(20):
        mask, grad = rng.random(w_in) < 0.4, rng.random(w_out) < 0.3
        inp = rng.random(w_in) < 0.5
        g_row = SparseRow(w_out, np.flatnonzero(grad).tolist(), [1] * int(grad.sum()))
        want_src = useful_columns(Mode.SRC, k, s, p, w_in, w_out)
        want_osrc = useful_columns(Mode.OSRC, k, s, p, w_in, w_out, grad)
        for c in range(w_in):
            one = SparseRow(w_in, [c], [1])
            assert (rowops.src([1] * k, one, stride=s, pad=p, out_len=w_out).macs > 0) == bool(want_src[c])
            assert (rowops.osrc(one, g_row, k, stride=s, pad=p).macs > 0) == bool(want_osrc[c])
        want_msrc = useful_columns(Mode.MSRC, k, s, p, w_in, w_out, mask)
        for x in range(w_out):
            one = SparseRow(w_out, [x], [1])
            assert (rowops.msrc([1] * k, one, mask.astype(int), stride=s, pad=p).macs > 0) == bool(want_msrc[x])
        assert useful_cycles(Mode.SRC, k, s, p, w_in, w_out, inp) == int(np.count_nonzero(inp & want_src))


# ---------------------------------------------------------------- perf model and check agree

def random_layer(rng: np.random.Generator, *, n=2, c=3, f=4, h=7, w=9, k=3, stride=1, pad=1, density=0.5):
    shape = ConvShape(n, c, f, h, w, k, stride, pad, 1, name="rand")
    x = rng.standard_normal(shape.input_shape) * (rng.random(shape.input_shape) < density)
    arrays = {"I": np.maximum(x, 0).astype(np.float32),
              "W": (rng.standard_normal(shape.weight_shape) * 0.3).astype(np.float32),
              "b": (rng.standard_normal(f) * 0.1).astype(np.float32),
              "dO": (rng.standard_normal(shape.output_shape) * 1e-3
                     * (rng.random(shape.output_shape) < 0.3)).astype(np.float32)}
    return LayerData(shape, "conv_relu", arrays, [], False, False, 0.9, "unbiased", 7)


@pytest.mark.parametrize("geom", [dict(), dict(k=1, pad=0, stride=2, w=10, h=8)], ids=["3x3", "1x1-s2"])
@pytest.mark.parametrize("step", ["forward", "gta", "gtw"])
def test_perf_model_and_check_count_the_same_useful_cycles(rng, geom, step):
    data = random_layer(rng, **geom)
    data.arrays["W"][1, 0, 0, :] = 0.0      # a zero kernel row: the compiler leaves its ops out (10.1)
    c = compile_step(data, step, PARAMS)
    from_programs = check_useful_cycles(c)
    ls, nz_in, nz_grad, mask, arch = _step_patterns(c)
    pats = {"in": nz_in, "grad": nz_grad}
    if c.live_rows is not None:
        pats["live_rows" if step != "gtw" else "gtw_rows"] = c.live_rows
    if mask is not None:
        pats["mask"] = mask
    for micro in (GEN1, BUILT):     # the useful work is the data's, whatever the switches
        model = exact_step(step, ls, pats, ArchParams(groups=arch.groups, micro=micro))
        assert model.useful == from_programs, (step, micro.name)
    dense = exact_step(step, ls, pats, arch, dense=True)     # the baseline does the same useful work
    assert dense.useful == from_programs
    assert 0 < from_programs < model.ops * ls.w_in


def test_report_utilisation_is_over_pes_times_rtl_cycles():
    rep = CheckReport(layer="l", step="gta", sim="verilator", samples=1, batch=1, units=1, ops=1, programs=1,
                      instructions=1, buffer_words=1, frac={}, bit_exact=True, mismatches=0, first_mismatch=None,
                      counters_equal=True, rtl_error=0, model_error=0, within_bound=True, max_error=0.0,
                      max_bound=0.0, worst_ratio=0.0, checked_elements=1, golden_max_error=None, rtl_cycles=100,
                      model_cycles=100, schedule_cycles=100, contract_cycles=100, dense_cycles=200, density=0.5,
                      pe_busy_cycles=300, pe_useful_cycles=60, pes=6)
    assert rep.busy_utilisation == pytest.approx(0.5) and rep.useful_utilisation == pytest.approx(0.1)
    d = rep.as_dict()
    assert d["useful_utilisation"] == pytest.approx(0.1) and d["pe_useful_cycles"] == 60
    assert "busy 0.500, useful 0.100" in rep.text()


# ---------------------------------------------------------------- the dense baseline's switches

def test_core_params_map_to_their_switches():
    from types import SimpleNamespace
    assert of_params(PARAMS) == GEN1.with_(unit_rate=PARAMS.unit_rate)   # the first generation's core
    built = SimpleNamespace(prefetch=1, lookahead=2, pingpong=1, skip_empty=1, op_scan=4, osrc_window=2, unit_rate=8)
    assert of_params(built) == BUILT
    assert of_params(SimpleNamespace(prefetch=1, op_scan=4)) == MicroArch(prefetch=True)  # no D: no reader
    assert of_params(SimpleNamespace(prefetch=0, microarch=lambda: BUILT)) == BUILT    # its own mapping wins


def test_check_baseline_of_a_dense_layer_matches_with_the_built_switches(rng, monkeypatch):
    """With the core's switches (BUILT) a fully dense layer takes the baseline's cycles (12.8), and the
    switches do make the baseline faster than the first generation's."""
    data = random_layer(rng, density=1.0)
    data.arrays["I"] = np.abs(data.arrays["I"]) + 0.5
    data.arrays["dO"] = np.where(data.arrays["dO"] == 0, 1e-3, data.arrays["dO"]).astype(np.float32)
    c = compile_step(data, "gtw", PARAMS)
    gen1 = schedule_cycles(c)
    monkeypatch.setattr("sparsetrain.check.cycles.of_params", lambda params: BUILT)
    built = schedule_cycles(c)
    assert 0 <= built[0] - built[1] <= c.n_units   # D's op-reader pipeline: at most a cycle per unit (12.8)
    assert built[1] < gen1[1]
