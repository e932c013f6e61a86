"""The direct sparse convolution backward (C++ extension, golden/training/csrc/) against torch autograd.

Every instruction set the CPU has (generic C++, AVX2, AVX-512) is checked, in float64 (tight)
and float32 (float tolerance), on random shapes from hypothesis: strides 1 and 2, padding,
1x1, grouped and depthwise convolutions, dilation, the first layer (no dI), densities 0 to 1,
and tiny filter blocks so that the blocked loops run many blocks.

Randomised tests take their seed from the ``seed`` fixture (tests/conftest.py), which prints it.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import nn

from sparsetrain.golden.training import sparse_backward as sb
from sparsetrain.golden.training.sparse_conv_ext import load

EXT = load()  # builds the extension on first use (make test builds it before pytest starts)
ISAS = EXT.supported_isas()
DEFAULT_BLOCK = EXT.block_bytes()
print(f"extension instruction sets on this CPU: {ISAS} (default {EXT.isa()})")


@pytest.fixture
def isa_and_block(request):
    """Run with the given instruction set and block size; restore the defaults afterwards."""
    default_isa = EXT.isa()
    yield lambda isa, block: (EXT.set_isa(isa), EXT.set_block_bytes(block))
    EXT.set_isa(default_isa)
    EXT.set_block_bytes(DEFAULT_BLOCK)


def autograd_reference(x, w, d_o, stride, padding, dilation, groups):
    """dI, dW of F.conv2d by torch autograd in float64: what the kernel must equal."""
    x, w = x.double().requires_grad_(True), w.double().requires_grad_(True)
    F.conv2d(x, w, None, stride, padding, dilation, groups).backward(d_o.double())
    return x.grad, w.grad


@st.composite
def conv_cases(draw):
    """A random conv layer (every kind the networks use, plus dilation) and its sparse dO."""
    kind = draw(st.sampled_from(["dense", "1x1", "grouped", "depthwise", "first"]))
    n = draw(st.integers(1, 3))
    groups = 1
    if kind == "grouped":
        groups = draw(st.integers(2, 3))
        c, f = groups * draw(st.integers(1, 5)), groups * draw(st.integers(1, 3))
    elif kind == "depthwise":
        c = draw(st.integers(1, 20))
        groups, f = c, c * draw(st.integers(1, 2))
    elif kind == "first":
        c, f = draw(st.integers(1, 3)), draw(st.integers(1, 24))
    else:
        c, f = draw(st.integers(1, 40)), draw(st.integers(1, 24))
    k = 1 if kind == "1x1" else draw(st.integers(1, 5))
    kh, kw = k, draw(st.sampled_from([k, max(1, k - 1)]))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (1, 1) if draw(st.integers(0, 3)) else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 12))
    density = draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 0.7, 1.0]))
    data_seed = draw(st.integers(0, 2**31 - 1))
    return dict(shape=(n, c, h, w), weight=(f, c // groups, kh, kw), stride=stride, padding=padding,
                dilation=dilation, groups=groups, density=density, first=kind == "first", data_seed=data_seed)


def make_tensors(case: dict, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(case["data_seed"])
    x = torch.randn(case["shape"], generator=gen, dtype=torch.float64)
    w = torch.randn(case["weight"], generator=gen, dtype=torch.float64)
    out = F.conv2d(x, w, None, case["stride"], case["padding"], case["dilation"], case["groups"])
    d_o = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    d_o = d_o * (torch.rand(out.shape, generator=gen, dtype=torch.float64) < case["density"])
    return x.to(dtype), w.to(dtype), d_o.to(dtype)


def check_case(case: dict, dtype: torch.dtype) -> None:
    x, w, d_o = make_tensors(case, dtype)
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    ref_i, ref_w = autograd_reference(x, w, d_o, *args)
    got = sb.direct_conv2d_backward(x, w, d_o, *args, need_input=not case["first"], need_bias=True)
    assert got.grad_weight.dtype == dtype and got.grad_weight.shape == w.shape
    if dtype == torch.float64:
        tol = dict(rtol=1e-10, atol=1e-10)
    else:  # float32 sums of up to ~N*Ho*Wo products of unit normals
        tol = dict(rtol=1e-4, atol=2e-5 * max(1.0, float(d_o.abs().sum(dim=(0, 2, 3)).max())) ** 0.5)
    torch.testing.assert_close(got.grad_weight.double(), ref_w, **tol)
    torch.testing.assert_close(got.grad_bias.double(), d_o.double().sum(dim=(0, 2, 3)), **tol)
    if case["first"]:
        assert got.grad_input is None
    else:
        assert got.grad_input.dtype == dtype and got.grad_input.shape == x.shape
        torch.testing.assert_close(got.grad_input.double(), ref_i, **tol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_random_layers_equal_autograd(isa_and_block, isa, dtype, seed):
    @hypothesis_seed(seed)  # hypothesis draws from the test's seed
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=conv_cases(), tiny_blocks=st.booleans())
    def check(case, tiny_blocks):
        isa_and_block(isa, 1 if tiny_blocks else DEFAULT_BLOCK)  # 1 byte: one filter per block
        check_case(case, dtype)

    check()


@pytest.mark.parametrize("isa", ISAS)
def test_alexnet_sized_layer_uses_several_blocks(isa_and_block, isa, seed):
    """Channel counts past two vector registers, a vector tail, and the default block size
    (512 KiB) split into several filter blocks: the paths the real layers take."""
    isa_and_block(isa, 64 * 1024)
    case = dict(shape=(2, 83, 9, 9), weight=(70, 83, 3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                groups=1, density=0.1, first=False, data_seed=seed % 1000)
    for dtype in (torch.float64, torch.float32):
        check_case(case, dtype)


def test_results_do_not_depend_on_the_thread_count(seed):
    """dW is summed per filter and dI per image in a fixed order: bit-identical with 1 or 2 threads."""
    case = dict(shape=(4, 24, 10, 10), weight=(32, 24, 3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                groups=1, density=0.2, first=False, data_seed=seed % 997)
    x, w, d_o = make_tensors(case, torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(sb.direct_conv2d_backward(x, w, d_o, 1, 1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0].grad_input, results[1].grad_input)
    assert torch.equal(results[0].grad_weight, results[1].grad_weight)


def test_fallback_above_max_density_runs_the_native_backward(seed):
    case = dict(shape=(2, 4, 8, 8), weight=(6, 4, 3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1),
                groups=1, density=0.5, first=False, data_seed=seed % 991)
    x, w, d_o = make_tensors(case, torch.float64)
    density = float(torch.count_nonzero(d_o)) / d_o.numel()
    ref_i, ref_w = autograd_reference(x, w, d_o, 2, 1, 1, 1)
    for max_density, sparse in ((1.0, True), (density, True), (density / 2, False), (0.0, False)):
        result = sb.direct_conv2d_backward_ex(x, w, d_o, 2, 1, max_density=max_density)
        assert result.sparse is sparse and result.density == pytest.approx(density)
        torch.testing.assert_close(result.gradients.grad_input, ref_i, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(result.gradients.grad_weight, ref_w, rtol=1e-10, atol=1e-10)


def test_bad_arguments_raise_naming_the_parameter():
    x, w, d_o = torch.zeros(1, 2, 5, 5), torch.zeros(3, 2, 3, 3), torch.zeros(1, 3, 3, 3)
    with pytest.raises(ValueError, match="max_density"):
        sb.direct_conv2d_backward(x, w, d_o, max_density=1.5)
    with pytest.raises(ValueError, match="dtype"):
        sb.direct_conv2d_backward(x.half(), w.half(), d_o.half())
    with pytest.raises(ValueError, match="grad_output shape"):
        sb.direct_conv2d_backward(x, w, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="max_density"):
        sb.convert_model(nn.Conv2d(2, 2, 3), max_density=-0.1)
    with pytest.raises(RuntimeError, match="isa"):
        EXT.set_isa("sse9")


def test_drop_in_module_counts_sparse_and_fallback_calls(seed):
    gen = torch.Generator().manual_seed(seed % 983)
    conv = sb.convert_model(nn.Conv2d(3, 5, 3, padding=1).double(), max_density=0.5)
    ref = nn.Conv2d(3, 5, 3, padding=1).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    for mask_density, sparse in ((0.1, True), (0.9, False)):
        d_o = torch.randn(2, 5, 6, 6, generator=gen, dtype=torch.float64)
        d_o = d_o * (torch.rand(d_o.shape, generator=gen, dtype=torch.float64) < mask_density)
        xs, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        conv.zero_grad(), ref.zero_grad()
        conv(xs).backward(d_o)
        ref(xr).backward(d_o)
        torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(conv.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-10)
        stats = conv.sparse_stats
        assert (stats.sparse_calls, stats.dense_calls) == ((1, 0) if sparse else (1, 1))


@pytest.mark.parametrize("prune", [False, True], ids=["unpruned", "p0.99"])
def test_training_with_sparse_backward_follows_the_dense_run(seed, prune):
    """`sparsetrain train --sparse-backward` (TrainConfig.sparse_backward): same seed, same data, six
    steps of a narrow AlexNet, with the sparse kernels taking part.

    Unpruned, only float rounding separates the two runs (measured: 1.5e-8 relative in the loss).
    Pruned, the stochastic pruner compares each small gradient with a random draw, so a rounding
    difference can flip a decision and the runs become two draws of the same process: measured 2e-5
    to 2e-3 relative over seeds 1, 7, 99 and 1234 (1234 on two CPUs), bounded at 1e-2.
    """
    from sparsetrain.golden.training.data import fashion_mnist
    from sparsetrain.golden.training.train import TrainConfig, train

    train_split = fashion_mnist("train", samples=96, input_size=32, subset_seed=seed % 1000)
    test_split = fashion_mnist("test", samples=64, input_size=32, subset_seed=seed % 1000)
    runs, sparse_calls = [], []

    def count_sparse_calls(step: int, model: nn.Module) -> None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(type(m) is sb.SparseBackwardConv2d for m in convs)
        sparse_calls.append(sum(m.sparse_stats.sparse_calls for m in convs))

    for sparse in (False, True):
        cfg = TrainConfig(model="alexnet", p=0.99, prune=prune, n_f=1, batch_size=16, width_mult=0.125,
                          seed=seed % 1000, lr=0.01, progress=False, sparse_backward=sparse)
        runs.append(train(cfg, None, train_split=train_split, test_split=test_split,
                          step_callback=count_sparse_calls if sparse else None)["epochs"][0])
    assert sparse_calls and sparse_calls[-1] > 0  # the sparse kernels ran, not only the native fallback
    dense, sparse = runs
    rel = 1e-2 if prune else 1e-6
    assert dense["loss"] == pytest.approx(sparse["loss"], rel=rel)
    assert dense["test_loss"] == pytest.approx(sparse["test_loss"], rel=rel)


def test_depthwise_layers_of_the_drop_in_module_use_the_native_backward(seed):
    """Fewer than MIN_GROUP_CHANNELS channels per group: native backward at any density."""
    gen = torch.Generator().manual_seed(seed % 977)
    depthwise = sb.convert_model(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False).double())
    grouped = sb.convert_model(nn.Conv2d(2 * sb.MIN_GROUP_CHANNELS, 4, 3, padding=1, groups=2, bias=False).double())
    for conv in (depthwise, grouped):
        x = torch.randn(2, conv.in_channels, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
        d_o = torch.randn(2, conv.out_channels, 6, 6, generator=gen, dtype=torch.float64)
        d_o = d_o * (torch.rand(d_o.shape, generator=gen, dtype=torch.float64) < 0.05)
        conv(x).backward(d_o)
        ref_i, ref_w = autograd_reference(x.detach(), conv.weight.detach(), d_o, 1, 1, 1, conv.groups)
        torch.testing.assert_close(x.grad, ref_i, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(conv.weight.grad, ref_w, rtol=1e-10, atol=1e-10)
    assert (depthwise.sparse_stats.sparse_calls, depthwise.sparse_stats.dense_calls) == (0, 1)
    assert (grouped.sparse_stats.sparse_calls, grouped.sparse_stats.dense_calls) == (1, 0)
