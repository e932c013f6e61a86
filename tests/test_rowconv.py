"""golden.bitexact.rowconv: the row decomposition of a conv layer against torch, and the integer path.

Randomised tests take their seed from SPARSETRAIN_SEED (default below) and print it.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from sparsetrain.arch.fixedpoint import choose_frac_bits, quantize, requantize, sat_limit
from sparsetrain.arch.timing import Mode, pe_cycles
from sparsetrain.golden.bitexact import rowconv as rc

SEED = int(os.environ.get("SPARSETRAIN_SEED", "20240611"))
torch.set_num_threads(1)


def rng_for(*salt: int) -> np.random.Generator:
    print(f"seed={SEED} salt={salt}")
    return np.random.default_rng([SEED, *salt])


def sparse_normal(rng: np.random.Generator, shape: tuple[int, ...], density: float = 0.6) -> np.ndarray:
    """Normal values with a fraction of exact zeros, so rows are genuinely sparse."""
    return rng.standard_normal(shape) * (rng.random(shape) < density)


def torch_layer(x, w, b, g, relu_in: np.ndarray | None, stride, pad, groups):
    """conv2d and autograd: O, dI (through the ReLU whose mask is relu_in > 0, if given), dW, db."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    inp = torch.relu(xt) if relu_in is not None else xt
    out = torch.nn.functional.conv2d(inp, wt, bt, stride=stride, padding=pad, groups=groups)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * scale)


def check_float_layer(shape: rc.ConvShape, rng: np.random.Generator, relu: bool) -> None:
    x = sparse_normal(rng, shape.input_shape)
    w = rng.standard_normal(shape.weight_shape)
    b = rng.standard_normal(shape.out_channels)
    g = sparse_normal(rng, shape.output_shape)
    # With a ReLU in front, the layer sees relu(x) and the gradient to x is masked by x > 0.
    seen = np.maximum(x, 0) if relu else x
    mask = x > 0 if relu else None
    o_ref, di_ref, dw_ref, db_ref = torch_layer(x, w, b, g, x if relu else None,
                                                shape.stride, shape.pad, shape.groups)
    assert_close(rc.forward_f64(shape, seen, w, b).value, o_ref)
    assert_close(rc.grad_input_f64(shape, g, w, mask).value, di_ref)
    assert_close(rc.grad_weight_f64(shape, seen, g).value, dw_ref)
    assert_close(rc.grad_bias_f64(shape, g), db_ref)


@pytest.mark.parametrize("k", [1, 3, 5, 7, 11])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("depthwise", [False, True])
def test_float_path_equals_torch(k: int, stride: int, depthwise: bool) -> None:
    rng = rng_for(k, stride, depthwise)
    pad = int(rng.integers(0, k))
    c = int(rng.integers(1, 4))
    f = c * int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, 4))
    h = int(rng.integers(max(1, k - 2 * pad), k + 6))
    w = int(rng.integers(max(1, k - 2 * pad), k + 8))
    shape = rc.ConvShape(2, c, f, h, w, k, stride, pad, c if depthwise else 1)
    check_float_layer(shape, rng, relu=False)


@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 2, 5)])
def test_msrc_mask_equals_autograd_through_relu(stride: int, pad: int, k: int) -> None:
    rng = rng_for(stride, pad, k, 7)
    check_float_layer(rc.ConvShape(3, 3, 4, 9, 10, k, stride, pad), rng, relu=True)


@st.composite
def layer_shapes(draw) -> tuple[rc.ConvShape, int]:
    k = draw(st.integers(1, 11))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, k - 1))
    low = max(1, k - 2 * pad)
    h, w = draw(st.integers(low, low + 6)), draw(st.integers(low, low + 6))
    c = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    f = c * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 3))
    n = draw(st.integers(1, 3))
    data_seed = draw(st.integers(0, 2**32 - 1))
    return rc.ConvShape(n, c, f, h, w, k, stride, pad, c if depthwise else 1), data_seed


@seed(SEED)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_shapes(), st.booleans())
def test_float_path_random_shapes(case: tuple[rc.ConvShape, int], relu: bool) -> None:
    shape, data_seed = case
    print(f"seed={SEED} shape={shape} data_seed={data_seed}")
    check_float_layer(shape, np.random.default_rng(data_seed), relu)


# ------------------------------------------------------------------ the decomposition itself

@pytest.mark.parametrize("step", list(rc.Step))
def test_row_ops_cover_every_product_once(step: rc.Step) -> None:
    """Each (n, f, c, kr, output row) pair with a real input row is issued exactly once."""
    shape = rc.ConvShape(2, 4, 4, 7, 6, 3, 2, 1, groups=4)
    ops = list(rc.layer_row_ops(shape, step))
    keys = [(op.n, op.f, op.c, op.kr, op.out_row) for op in ops]
    assert len(keys) == len(set(keys))
    expected = {(n, f, c, kr, y)
                for n in range(shape.batch) for f in range(shape.out_channels) for c in shape.in_channels_of(f)
                for kr in range(shape.kernel) for y in range(shape.out_height)
                if 0 <= y * shape.stride + kr - shape.pad < shape.height}
    assert set(keys) == expected
    for op in ops:
        assert op.in_row == op.out_row * shape.stride + op.kr - shape.pad
        assert op.mode is step.mode
        assert op.c // shape.in_per_group == op.f // shape.out_per_group  # same group


def test_row_ops_are_grouped_by_target_row() -> None:
    shape = rc.ConvShape(2, 2, 3, 5, 5, 3, 1, 1)
    target = {rc.Step.FORWARD: lambda o: (o.n, o.f, o.out_row), rc.Step.GTA: lambda o: (o.n, o.c, o.in_row),
              rc.Step.GTW: lambda o: (o.f, o.c, o.kr)}
    for step, key in target.items():
        seen, prev = set(), None
        for op in rc.layer_row_ops(shape, step):
            k = key(op)
            if k != prev:
                assert k not in seen, f"{step}: target row {k} is revisited after others"
                seen.add(k)
                prev = k


def test_float_cycles_follow_the_timing_contract() -> None:
    rng = rng_for(11)
    shape = rc.ConvShape(2, 2, 3, 6, 7, 3, 1, 1)
    x = sparse_normal(rng, shape.input_shape, 0.3)
    x[0, 1, 2] = 0.0  # an empty row costs its marker entry
    w = rng.standard_normal(shape.weight_shape)
    g = sparse_normal(rng, shape.output_shape, 0.5)
    fwd = rc.forward_f64(shape, x, w)
    gta = rc.grad_input_f64(shape, g, w)
    gtw = rc.grad_weight_f64(shape, x, g)
    for op, cyc in zip(fwd.ops, fwd.op_cycles):
        assert cyc == 1 + shape.kernel + max(1, np.count_nonzero(x[op.n, op.c, op.in_row])) + 1
    for op, cyc in zip(gta.ops, gta.op_cycles):
        assert cyc == 2 + shape.kernel + max(1, np.count_nonzero(g[op.n, op.f, op.out_row])) + 1
    for op, cyc in zip(gtw.ops, gtw.op_cycles):
        assert cyc == pe_cycles(Mode.OSRC, shape.kernel, max(1, np.count_nonzero(x[op.n, op.c, op.in_row])),
                                max(1, np.count_nonzero(g[op.n, op.f, op.out_row])))
    assert fwd.cycles == sum(fwd.op_cycles) and len(fwd.op_cycles) == len(fwd.ops)
    assert any(c == 1 + shape.kernel + 1 + 1 for c in fwd.op_cycles)
    layer = rc.float_layer(x, w, None, g, stride=1, pad=1)
    assert layer.cycles == {rc.Step.FORWARD: fwd.cycles, rc.Step.GTA: gta.cycles, rc.Step.GTW: gtw.cycles}
    assert layer.total_cycles == fwd.cycles + gta.cycles + gtw.cycles
    np.testing.assert_array_equal(layer.steps[rc.Step.GTW].value, gtw.value)
    np.testing.assert_array_equal(layer.grad_bias, g.sum(axis=(0, 2, 3)))
    only_forward = rc.float_layer(x, w, stride=1, pad=1)
    assert set(only_forward.steps) == {rc.Step.FORWARD} and only_forward.grad_bias is None


# ------------------------------------------------------------------ bit-accurate integer path

def int_reference(xq, wq, gq, mask, bq_preload, shape: rc.ConvShape):
    """Independent integer conv, its transpose and weight gradient with numpy int64 einsum."""
    s, p, k = shape.stride, shape.pad, shape.kernel
    ho, wo = shape.out_height, shape.out_width
    xp = np.pad(xq, ((0, 0), (0, 0), (p, p), (p, p)))
    o = np.zeros(shape.output_shape, np.int64)
    dip = np.zeros(xp.shape, np.int64)
    dw = np.zeros(shape.weight_shape, np.int64)
    cg, fg = shape.in_per_group, shape.out_per_group
    for grp in range(shape.groups):
        cs, fs = slice(grp * cg, (grp + 1) * cg), slice(grp * fg, (grp + 1) * fg)
        for kr in range(k):
            for kc in range(k):
                win = (slice(None), cs, slice(kr, kr + s * (ho - 1) + 1, s), slice(kc, kc + s * (wo - 1) + 1, s))
                o[:, fs] += np.einsum("ncyx,fc->nfyx", xp[win], wq[fs, :, kr, kc])
                dip[win] += np.einsum("nfyx,fc->ncyx", gq[:, fs], wq[fs, :, kr, kc])
                dw[fs, :, kr, kc] += np.einsum("nfyx,ncyx->fc", gq[:, fs], xp[win])
    if bq_preload is not None:
        o += bq_preload[None, :, None, None]
    di = dip[:, :, p:p + shape.height, p:p + shape.width] * mask
    return o, di, dw


@pytest.mark.parametrize("dw", [8, 12, 16])
@pytest.mark.parametrize("geometry", [
    (2, 3, 4, 7, 9, 3, 1, 1, 1),
    (2, 3, 3, 10, 9, 5, 2, 2, 3),
    (1, 2, 2, 12, 13, 11, 2, 5, 1),
    (3, 2, 4, 5, 6, 1, 2, 0, 2),
])
def test_integer_path_within_bound_and_exact(dw: int, geometry: tuple[int, ...]) -> None:
    shape = rc.ConvShape(*geometry)
    rng = rng_for(dw, *geometry)
    x = sparse_normal(rng, shape.input_shape) * 3.0
    w = rng.standard_normal(shape.weight_shape) * 0.2
    b = rng.standard_normal(shape.out_channels)
    g = sparse_normal(rng, shape.output_shape) * 1e-3
    mask = rng.random(shape.input_shape) < 0.6
    q = rc.quantized_layer(x, w, b, g, mask, stride=shape.stride, pad=shape.pad, groups=shape.groups, dw=dw)

    # 1. Error against float64 within the bound of section 2, element by element.
    for name, out in q.outputs.items():
        assert out.q.dtype == np.int64 and np.max(np.abs(out.q)) <= sat_limit(dw), name
        slack = 1e-9 * out.bound + 1e-13 * np.abs(out.reference)  # float64 rounding of the reference
        excess = out.error - (out.bound + slack)
        assert np.all(excess <= 0), f"{name}: error exceeds the bound by {excess.max()} (DW={dw})"
    assert set(q.outputs) == {"O", "dI", "dW", "db"}

    # 2. Bit-exact against an independent integer computation of the same quantised tensors.
    fr = q.input_frac
    assert fr["I"] == choose_frac_bits(x, dw) and fr["W"] == choose_frac_bits(w, dw)
    xq, wq, bq, gq = (quantize(x, fr["I"], dw), quantize(w, fr["W"], dw), quantize(b, fr["b"], dw),
                      quantize(g, fr["dO"], dw))
    o, di, dwt = int_reference(xq, wq, gq, mask, bq * 2 ** (fr["I"] + fr["W"] - fr["b"]), shape)
    out = q.outputs
    np.testing.assert_array_equal(out["O"].q, requantize(o, fr["I"] + fr["W"] - out["O"].frac, dw))
    np.testing.assert_array_equal(out["dI"].q, requantize(di, fr["dO"] + fr["W"] - out["dI"].frac, dw))
    np.testing.assert_array_equal(out["dW"].q, requantize(dwt, fr["I"] + fr["dO"] - out["dW"].frac, dw))
    np.testing.assert_array_equal(out["db"].q, requantize(gq.sum(axis=(0, 2, 3)), fr["dO"] - out["db"].frac, dw))

    # 3. The integer path reports the PE cycles of its row ops; same ops as the float path.
    fwd = rc.forward_f64(rc.ConvShape(*geometry), xq.astype(float), wq.astype(float))
    assert q.steps[rc.Step.FORWARD].ops == fwd.ops
    assert q.steps[rc.Step.FORWARD].op_cycles == fwd.op_cycles
    assert q.total_cycles == sum(q.cycles.values()) == sum(r.cycles for r in q.steps.values())
    assert q.steps[rc.Step.GTA].macs <= int(mask.sum()) * shape.out_per_group * shape.kernel ** 2


def test_accumulator_saturates_instead_of_wrapping() -> None:
    """All-positive products with a narrow ACC_W: the result clamps at the accumulator limit."""
    dw, acc_w = 8, 17
    shape = rc.ConvShape(1, 4, 1, 3, 3, 3, 1, 0)
    lim = sat_limit(dw)
    xq = np.full(shape.input_shape, lim, np.int64)
    wq = np.full(shape.weight_shape, lim, np.int64)
    exact = 4 * 9 * lim * lim
    assert exact > sat_limit(acc_w)  # the case is one that would wrap
    res = rc.forward_int(shape, xq, wq, frac_in=0, frac_w=0, frac_out=0, dw=dw, acc_w=acc_w)
    assert np.all(res.value == lim)  # saturated accumulator, saturated DW result
    res = rc.forward_int(shape, xq, wq, frac_in=0, frac_w=0, frac_out=-10, dw=dw, acc_w=acc_w)
    assert np.all(res.value == requantize(np.int64(sat_limit(acc_w)), 10, dw))
    assert np.all(res.value > 0)


def test_wide_accumulator_saturates_without_int64_overflow() -> None:
    """DW = 31 with ACC_W = 64: partial sums beyond int64 clamp at the 64-bit limit."""
    dw, acc_w = 31, 64
    shape = rc.ConvShape(1, 2, 2, 3, 3, 3, 1, 0)
    lim = sat_limit(dw)
    xq = np.full(shape.input_shape, lim, np.int64)
    wq = np.full(shape.weight_shape, lim, np.int64)
    wq[1] = -lim
    assert 2 * 9 * lim * lim > sat_limit(acc_w)  # the exact sums do not fit in 64 bits
    res = rc.forward_int(shape, xq, wq, frac_in=20, frac_w=20, frac_out=0, dw=dw, acc_w=acc_w)
    expect = requantize(np.array([sat_limit(acc_w), -sat_limit(acc_w)], np.int64), 40, dw)
    assert np.all(res.value[0, 0] == expect[0]) and np.all(res.value[0, 1] == expect[1])
    assert expect[0] > 0 > expect[1]


def test_bound_holds_with_all_zero_tensors_and_no_bias() -> None:
    shape = rc.ConvShape(1, 2, 2, 5, 5, 3, 1, 1)
    z = np.zeros(shape.input_shape)
    w = rng_for(3).standard_normal(shape.weight_shape)
    q = rc.quantized_layer(z, w, None, np.zeros(shape.output_shape), pad=1, dw=8)
    for name, out in q.outputs.items():
        assert np.all(out.q == 0), name
        assert np.all(out.error <= out.bound), name
    assert "b" not in q.input_frac


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs,fragment", [
    (dict(kernel=7, height=2, width=9, pad=1), "K = 7"),
    (dict(stride=3), "stride = 3"),
    (dict(pad=3), "pad = 3"),
    (dict(groups=2), "groups = 2"),
    (dict(kernel=17), "K = 17"),
    (dict(width=0), "width = 0"),
    (dict(out_channels=5, groups=3), "out_channels = 5"),
])
def test_bad_geometry_raises(kwargs: dict, fragment: str) -> None:
    base = dict(batch=1, in_channels=3, out_channels=3, height=8, width=8, kernel=3, stride=1, pad=0, groups=1)
    base.update(kwargs)
    with pytest.raises(ValueError, match="allowed") as exc:
        rc.ConvShape(**base)
    assert fragment in str(exc.value)


def test_bad_tensors_raise() -> None:
    shape = rc.ConvShape(1, 2, 3, 6, 6, 3, 1, 1)
    x = np.zeros(shape.input_shape)
    w = np.zeros(shape.weight_shape)
    cases = [
        (lambda: rc.forward_f64(shape, x[:, :1], w), "I shape"),
        (lambda: rc.forward_f64(shape, x, w[:, :, :2]), "W shape"),
        (lambda: rc.forward_f64(shape, x, w, np.zeros(2)), "b shape"),
        (lambda: rc.grad_input_f64(shape, np.zeros((1, 3, 5, 6)), w), "dO shape"),
        (lambda: rc.grad_input_f64(shape, np.zeros(shape.output_shape), w, np.ones((1, 2, 6, 5))), "mask shape"),
        (lambda: rc.grad_input_f64(shape, np.zeros(shape.output_shape), w, np.full(x.shape, 2)), "mask values"),
        (lambda: rc.ConvShape.from_tensors((1, 2, 6, 6), (3, 2, 3, 2)), "square kernel"),
        (lambda: rc.ConvShape.from_tensors((1, 2, 6, 6), (3, 1, 3, 3)), "W shape"),
        (lambda: rc.ConvShape.from_tensors((2, 6, 6), (3, 2, 3, 3)), "I shape"),
        (lambda: rc.forward_int(shape, np.full(x.shape, 200), w.astype(int), frac_in=0, frac_w=0, frac_out=0,
                                dw=8), "I value = 200"),
        (lambda: rc.forward_int(shape, x, w.astype(int), frac_in=0, frac_w=0, frac_out=0), "I dtype"),
        (lambda: rc.forward_int(shape, x.astype(int), w.astype(int), frac_in=0, frac_w=0, frac_out=0,
                                dw=8, acc_w=16), "ACC_W = 16"),
        (lambda: rc.forward_int(shape, x.astype(int), w.astype(int), frac_in=0, frac_w=0, frac_out=1),
         "frac_out = 1"),
        (lambda: rc.quantized_layer(x, w, dw=3), "DW = 3"),
        (lambda: rc.quantized_layer(x, w, dw=16, acc_w=33), "ACC_W = 33"),
        (lambda: rc.quantized_layer(x, w, stride=3), "stride = 3"),
    ]
    for call, fragment in cases:
        with pytest.raises(ValueError) as exc:
            call()
        assert fragment in str(exc.value) and "allowed" in str(exc.value), (fragment, str(exc.value))
