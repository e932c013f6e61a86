"""golden.training.sparse_backward: the sparse x dense conv backward against torch's dense autograd.

Randomised tests take their seed from SPARSETRAIN_SEED (default below) and print it.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.golden.training import sparse_backward as sb
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.networks import build_model
from sparsetrain.golden.training.pruning import PruneConfig

SEED = int(os.environ.get("SPARSETRAIN_SEED", "20240611"))
torch.set_num_threads(1)
# torch labels every CSR use "beta"; pytest resets the module's own filter for each test
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def generator_for(*salt: int) -> torch.Generator:
    seed = SEED * 1000003 + sum(s * 7919 ** i for i, s in enumerate(salt))
    print(f"seed={SEED} salt={salt}")
    return torch.Generator().manual_seed(seed % (1 << 62))


def autograd_reference(x, w, b, d_o, stride, padding, groups, dilation=1):
    """dI, dW, db of F.conv2d by torch autograd: the dense backward the sparse one must equal."""
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    b = None if b is None else b.clone().requires_grad_(True)
    F.conv2d(x, w, b, stride, padding, dilation, groups).backward(d_o)
    return x.grad, w.grad, None if b is None else b.grad


# (N, C, H, W, F, K, stride, padding, groups)
CASES = [
    (2, 3, 9, 9, 4, 3, 1, 1, 1),       # ordinary, padding
    (3, 4, 11, 10, 6, 3, 2, 1, 1),     # stride 2, odd sizes
    (2, 5, 8, 8, 7, 1, 1, 0, 1),       # 1x1
    (2, 3, 12, 12, 4, 5, 2, 2, 1),     # 5x5 stride 2
    (2, 6, 9, 9, 6, 3, 1, 1, 6),       # depthwise
    (3, 8, 10, 10, 8, 3, 2, 1, 8),     # depthwise stride 2
    (2, 4, 7, 9, 6, 3, 1, 2, 2),       # grouped, padding 2
    (1, 3, 4, 4, 2, 4, 1, 0, 1),       # kernel covers the input: one output position
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("density", [1.0, 0.3, 0.02])
def test_random_gradients_equal_dense_backward(case, density):
    n, c, h, wd, f, k, s, p, g = case
    gen = generator_for(CASES.index(case), int(density * 100))
    x = torch.randn(n, c, h, wd, generator=gen, dtype=torch.float64)
    w = torch.randn(f, c // g, k, k, generator=gen, dtype=torch.float64)
    b = torch.randn(f, generator=gen, dtype=torch.float64)
    out_shape = F.conv2d(x, w, None, s, p, 1, g).shape
    d_o = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    d_o = d_o * (torch.rand(out_shape, generator=gen, dtype=torch.float64) < density)
    ref_i, ref_w, ref_b = autograd_reference(x, w, b, d_o, s, p, g)
    for backward in (sb.sparse_conv2d_backward, sb.dense_conv2d_backward, sb.native_conv2d_backward,
                     sb.direct_conv2d_backward):
        got = backward(x, w, d_o, s, p, 1, g, need_bias=True)
        torch.testing.assert_close(got.grad_input, ref_i, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.grad_weight, ref_w, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.grad_bias, ref_b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_elements", [1, 200])
def test_chunked_batches_give_the_same_gradients(monkeypatch, chunk_elements):
    """Small chunks split the batch into single images / several images per product."""
    gen = generator_for(99, chunk_elements)
    x = torch.randn(5, 4, 8, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    d_o = torch.randn(5, 6, 4, 4, generator=gen, dtype=torch.float64)
    d_o = d_o * (torch.rand(d_o.shape, generator=gen, dtype=torch.float64) < 0.2)
    ref_i, ref_w, _ = autograd_reference(x, w, None, d_o, 2, 1, 2)
    monkeypatch.setattr(sb, "CHUNK_ELEMENTS", chunk_elements)
    g = sb.conv_geometry(x.shape, w.shape, 2, 1, 1, 2)
    assert 1 <= sb._chunk_size(g) < 5
    got = sb.sparse_conv2d_backward(x, w, d_o, 2, 1, 1, 2)
    torch.testing.assert_close(got.grad_input, ref_i, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.grad_weight, ref_w, rtol=1e-10, atol=1e-10)


def test_float32_within_float_tolerance():
    gen = generator_for(7)
    x = torch.randn(4, 16, 16, 16, generator=gen)
    w = torch.randn(32, 16, 3, 3, generator=gen)
    d_o = torch.randn(4, 32, 16, 16, generator=gen) * (torch.rand(4, 32, 16, 16, generator=gen) < 0.1)
    ref_i, ref_w, _ = autograd_reference(x.double(), w.double(), None, d_o.double(), 1, 1, 1)
    got = sb.sparse_conv2d_backward(x, w, d_o, 1, 1)
    assert got.grad_input.dtype == torch.float32
    torch.testing.assert_close(got.grad_input.double(), ref_i, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.grad_weight.double(), ref_w, rtol=1e-4, atol=1e-4)


def test_all_zero_gradient_gives_zeros():
    gen = generator_for(3)
    for s, g in ((1, 1), (2, 4)):
        x = torch.randn(2, 4, 9, 9, generator=gen)
        w = torch.randn(4, 4 // g, 3, 3, generator=gen)
        d_o = torch.zeros(F.conv2d(x, w, None, s, 1, 1, g).shape)
        got = sb.sparse_conv2d_backward(x, w, d_o, s, 1, 1, g, need_bias=True)
        assert got.grad_input.shape == x.shape and got.grad_weight.shape == w.shape
        assert torch.count_nonzero(got.grad_input) == 0
        assert torch.count_nonzero(got.grad_weight) == 0
        assert torch.count_nonzero(got.grad_bias) == 0


def test_only_requested_gradients_are_computed():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    d_o = torch.randn(1, 3, 3, 3)
    got = sb.sparse_conv2d_backward(x, w, d_o, need_input=False)
    assert got.grad_input is None and got.grad_bias is None and got.grad_weight is not None
    got = sb.sparse_conv2d_backward(x, w, d_o, need_weight=False)
    assert got.grad_weight is None and got.grad_input is not None


@pytest.mark.parametrize("x_shape, w_shape, d_shape, kwargs, match", [
    ((2, 3, 8), (4, 3, 3, 3), (2, 4, 6, 6), {}, "input shape"),
    ((2, 3, 8, 8), (4, 3, 3), (2, 4, 6, 6), {}, "weight shape"),
    ((2, 3, 8, 8), (4, 2, 3, 3), (2, 4, 6, 6), {}, "weight shape"),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 5, 6), {}, "grad_output shape"),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 5, 6, 6), {}, "grad_output shape"),
    ((2, 3, 8, 8), (4, 3, 9, 9), (2, 4, 1, 1), {}, "kernel size"),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 6, 6), {"stride": 0}, "stride = 0"),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 6, 6), {"padding": -1}, "padding = -1"),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 6, 6), {"stride": (1, 1, 1)}, "stride"),
    ((2, 4, 8, 8), (6, 1, 3, 3), (2, 6, 6, 6), {"groups": 3}, "groups = 3"),
    ((2, 4, 8, 8), (6, 1, 3, 3), (2, 6, 6, 6), {"groups": 0}, "groups = 0"),
])
def test_bad_shapes_raise_naming_the_parameter(x_shape, w_shape, d_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sb.sparse_conv2d_backward(torch.zeros(x_shape), torch.zeros(w_shape), torch.zeros(d_shape), **kwargs)


def test_bad_tensors_raise():
    x, w, d_o = torch.zeros(1, 2, 5, 5), torch.zeros(3, 2, 3, 3), torch.zeros(1, 3, 3, 3)
    with pytest.raises(ValueError, match="dtype"):
        sb.sparse_conv2d_backward(x, w.double(), d_o)
    with pytest.raises(ValueError, match="grad_output"):
        sb.sparse_conv2d_backward(x, w, d_o.to_sparse())
    with pytest.raises(ValueError, match="input"):
        sb.sparse_conv2d_backward(x.long(), w, d_o)


def _pruned_captures(name: str, salt: int) -> list[sb.ConvCapture]:
    """Real pruned gradients: a few steps of the golden model's pruned training (FIFO depth 1)."""
    gen = generator_for(salt)
    torch.manual_seed(int(torch.randint(0, 1 << 30, (1,), generator=gen)))
    model = build_model(name, in_channels=1, width_mult=0.125, prune=PruneConfig(p=0.99, n_f=1, seed=SEED % 1000))
    split = fashion_mnist("train", samples=24, input_size=32, subset_seed=SEED % 1000)
    return sb.capture_conv_gradients(model, split.batches(8, generator=gen), steps=3)


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "mobilenet"])
def test_real_pruned_gradients_equal_dense_backward(name):
    captures = _pruned_captures(name, {"alexnet": 1, "resnet18": 2, "mobilenet": 3}[name])
    assert len(captures) >= 5
    # the pruning really made dO sparse (p = 0.99 keeps well under half of the entries)
    assert sum(c.density for c in captures) / len(captures) < 0.5
    kinds = {(c.stride[0], c.groups > 1) for c in captures}
    if name == "resnet18":
        assert (2, False) in kinds  # stride-2 layers are covered
    if name == "mobilenet":
        assert (1, True) in kinds and (2, True) in kinds  # depthwise, both strides
    for cap in captures:
        x, w, d_o = cap.inp.double(), cap.weight.double(), cap.grad_output.double()
        ref_i, ref_w, _ = autograd_reference(x, w, None, d_o, cap.stride, cap.padding, cap.groups, cap.dilation)
        for backward in (sb.sparse_conv2d_backward, sb.direct_conv2d_backward):
            got = backward(x, w, d_o, cap.stride, cap.padding, cap.dilation, cap.groups)
            torch.testing.assert_close(got.grad_input, ref_i, rtol=1e-9, atol=1e-12, msg=cap.name)
            torch.testing.assert_close(got.grad_weight, ref_w, rtol=1e-9, atol=1e-12, msg=cap.name)


class _Net(nn.Module):
    """Ordinary, strided-with-bias, depthwise and 1x1 convs, so every drop-in path is trained."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.c3 = nn.Conv2d(8, 12, 1)
        self.block = nn.Sequential(nn.Conv2d(12, 6, 3, stride=2, padding=(1, 2)), nn.ReLU())
        self.fc = nn.Linear(6 * 3 * 5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.relu(self.c3(F.relu(self.c2(x))))
        return self.fc(self.block(x).flatten(1))


def test_drop_in_module_gives_the_same_training_steps():
    gen = generator_for(11)
    torch.manual_seed(int(torch.randint(0, 1 << 30, (1,), generator=gen)))
    dense = _Net().double()
    sparse = copy.deepcopy(dense)
    conv_before = [m for m in sparse.modules() if isinstance(m, nn.Conv2d)]
    weights_before = [m.weight for m in conv_before]
    assert sb.convert_model(sparse) is sparse
    convs = [m for m in sparse.modules() if isinstance(m, nn.Conv2d)]
    assert convs == conv_before and all(type(m) is sb.SparseBackwardConv2d for m in convs)
    assert [m.weight for m in convs] == weights_before  # same Parameter objects: optimizers stay valid
    assert [(m.stride, m.padding, m.groups, m.bias is None) for m in convs] == [
        (m.stride, m.padding, m.groups, m.bias is None) for m in dense.modules() if isinstance(m, nn.Conv2d)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (dense, sparse)]
    for step in range(3):
        x = torch.randn(4, 3, 12, 14, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 5, (4,), generator=gen)
        outs = []
        for model, opt in zip((dense, sparse), opts):
            opt.zero_grad()
            out = model(x)
            F.cross_entropy(out, y).backward()
            outs.append(out.detach())
            opt.step()
        if step == 0:  # same parameters: the forward is F.conv2d itself, so bit-identical
            assert torch.equal(outs[0], outs[1])
        else:  # later the parameters differ by the rounding of the two backward passes
            torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)
        for (name, p_dense), p_sparse in zip(dense.named_parameters(), sparse.parameters()):
            torch.testing.assert_close(p_sparse, p_dense, rtol=1e-10, atol=1e-12, msg=name)
    assert any(torch.count_nonzero(p.grad) for p in sparse.parameters())


def test_convert_model_swaps_the_model_itself_and_rejects_unsupported_padding():
    conv = nn.Conv2d(2, 2, 3)
    assert sb.convert_model(conv) is conv and type(conv) is sb.SparseBackwardConv2d
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding_mode"):
        sb.convert_model(model)
    assert type(model[0]) is nn.Conv2d  # nothing changed before the error
    with pytest.raises(ValueError, match="padding"):
        sb.convert_model(nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")))


def test_input_without_grad_skips_the_input_gradient():
    conv = sb.convert_model(nn.Conv2d(2, 3, 3, bias=True))
    x = torch.randn(2, 2, 6, 6)
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.bias.grad is not None
    torch.testing.assert_close(conv.bias.grad, torch.full((3,), 2.0 * 4 * 4))
