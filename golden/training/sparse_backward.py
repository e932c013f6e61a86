"""Convolution back-propagation that exploits sparse output gradients (Ye et al. 2019, section 5.2).

The pruned output gradient dO is the only sparse operand of the backward pass, and MKL (through
torch's sparse CSR matrix product) multiplies only `sparse x dense`. So both gradients are
written as a product whose left factor is dO:

* weights (WGC):       dW   = dO_mat @ im2col_trans(I)      dO_mat: (F, N*L), im2col_trans(I): (N*L, C/G*K*K)
* activations (AGBP):  dcol = dO_mat^T @ W_mat              dO_mat^T: (N*L, F), W_mat: (F, C/G*K*K)
                       dI   = col2im_trans(dcol)

(L = H_out * W_out.) The second line is the paper's trick: the textbook `W^T @ dO` would need
`dense x sparse`, its transpose `(dO^T W)^T` does not. Grouped and depthwise convolutions stay a
single product each: the groups are laid out block-diagonally in the sparse factor (block g
holds the rows / columns of the output channels of group g), so no zero block is ever
multiplied and the dense factor is not replicated.

The products use `torch.sparse.mm` on CSR tensors, chosen over scipy.sparse by measurement
(docs/performance.md, "Sparse back-propagation on the CPU"): torch's CSR product calls MKL's sparse BLAS and uses the torch thread
pool; scipy's is single-threaded and needs a float64/float32 copy across the numpy boundary.

That CSR path is kept as a reference and benchmark baseline. Training uses the direct sparse
kernel instead (`direct_conv2d_backward`, C++ in golden/training/csrc/, built by golden/training/sparse_conv_ext):
for every non-zero dO(n, f, y, x) it adds dO * W[f] to dI's window and dO * I's window to
dW[f], vectorised over channels, and it is faster than torch's native backward below a dO
density of about BREAK_EVEN_DENSITY (docs/performance.md, "Sparse back-propagation on the CPU").

Public API: `direct_conv2d_backward` / `direct_conv2d_backward_ex` (the direct kernel, with a
fallback to the native backward above `max_density`), `sparse_conv2d_backward` (the CSR path),
`dense_conv2d_backward` (the same im2col formulation with dense GEMMs, the paper's baseline),
`native_conv2d_backward` (torch's own), `SparseBackwardConv2d` (a drop-in nn.Conv2d running the
direct kernel with a per-layer fallback) and `convert_model`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sparsetrain.arch.fixedpoint import check_param

Pair = tuple[int, int]

# torch flags all CSR use as "beta"; the operations used here (to_sparse_csr, sparse.mm) are the
# long-standing MKL-backed ones and are checked against the dense backward by the tests.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything the backward pass needs to know about one convolution, validated once."""

    batch: int
    in_channels: int
    in_size: Pair
    out_channels: int
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    out_size: Pair

    @property
    def positions(self) -> int:
        """L = H_out * W_out, the number of sliding-window positions per image."""
        return self.out_size[0] * self.out_size[1]

    @property
    def col_width(self) -> int:
        """Columns of one group's im2col matrix: C/G * kh * kw."""
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]


def _pair(name: str, value: int | tuple[int, ...], low: int) -> Pair:
    items = (value, value) if isinstance(value, int) else tuple(value)
    if len(items) != 2:
        raise ValueError(f"{name} = {value!r} is out of range; allowed: an int or a pair of ints")
    return (check_param(name, items[0], low, 1 << 20, allowed=f">= {low}"),
            check_param(name, items[1], low, 1 << 20, allowed=f">= {low}"))


def conv_geometry(input_shape: tuple[int, ...] | torch.Size, weight_shape: tuple[int, ...] | torch.Size,
                  stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                  dilation: int | tuple[int, ...] = 1, groups: int = 1,
                  grad_output_shape: tuple[int, ...] | torch.Size | None = None) -> ConvGeometry:
    """Check the shapes of a conv2d (NCHW input, FCKK weight) and derive its output size.

    Raises ValueError naming the parameter whose value is wrong and what is allowed.
    """
    if len(input_shape) != 4:
        raise ValueError(f"input shape = {tuple(input_shape)} is out of range; allowed: 4-D (N, C, H, W)")
    if len(weight_shape) != 4:
        raise ValueError(f"weight shape = {tuple(weight_shape)} is out of range; allowed: 4-D (F, C/groups, kh, kw)")
    n, c, h, w = (int(s) for s in input_shape)
    f, c_per_group, kh, kw = (int(s) for s in weight_shape)
    stride_p = _pair("stride", stride, 1)
    padding_p = _pair("padding", padding, 0)
    dilation_p = _pair("dilation", dilation, 1)
    groups = check_param("groups", groups, 1, max(1, c), allowed=f"1 .. {c}, dividing C = {c} and F = {f}")
    if c % groups or f % groups:
        raise ValueError(f"groups = {groups} is out of range; allowed: a divisor of C = {c} and of F = {f}")
    if c_per_group != c // groups:
        raise ValueError(f"weight shape = {tuple(weight_shape)} is out of range; allowed: dimension 1 equal to "
                         f"C/groups = {c // groups}")
    if min(n, c, h, w, f, kh, kw) < 1:
        raise ValueError(f"input shape = {tuple(input_shape)}, weight shape = {tuple(weight_shape)} is out of "
                         "range; allowed: every dimension >= 1")
    out = []
    for axis, size, k in ((0, h, kh), (1, w, kw)):
        span = dilation_p[axis] * (k - 1) + 1
        padded = size + 2 * padding_p[axis]
        if span > padded:
            raise ValueError(f"kernel size = {(kh, kw)} is out of range; allowed: dilated kernel extent <= padded "
                             f"input size {padded} along axis {axis + 2}")
        out.append((padded - span) // stride_p[axis] + 1)
    geometry = ConvGeometry(n, c, (h, w), f, (kh, kw), stride_p, padding_p, dilation_p, groups, (out[0], out[1]))
    if grad_output_shape is not None:
        expected = (n, f, out[0], out[1])
        if tuple(int(s) for s in grad_output_shape) != expected:
            raise ValueError(f"grad_output shape = {tuple(grad_output_shape)} is out of range; allowed: {expected} "
                             "(N, F, H_out, W_out of this convolution)")
    return geometry


# ---------------------------------------------------------------------------------------------
# im2col / col2im in the transposed layout: rows are (group, image, position), columns are
# (channel within the group, kernel row, kernel column).

def im2col_trans(inp: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """(G*N*L, C/G*kh*kw): the transposed im2col matrix of every group, stacked by group."""
    cols = F.unfold(inp, g.kernel, dilation=g.dilation, padding=g.padding, stride=g.stride)  # (N, C*kk, L)
    cols = cols.view(g.batch, g.groups, g.col_width, g.positions)
    return cols.permute(1, 0, 3, 2).reshape(g.groups * g.batch * g.positions, g.col_width)


def col2im_trans(dcol: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """Inverse layout of im2col_trans, summing overlapping windows: (G*N*L, C/G*kh*kw) -> (N, C, H, W)."""
    cols = dcol.view(g.groups, g.batch, g.positions, g.col_width).permute(1, 0, 3, 2)
    cols = cols.reshape(g.batch, g.groups * g.col_width, g.positions)
    return F.fold(cols, g.in_size, g.kernel, dilation=g.dilation, padding=g.padding, stride=g.stride)


def _offset_columns(csr: torch.Tensor, row_block: int, column_step: int, shape: Pair) -> torch.Tensor:
    """Shift the column indices of rows in block b (rows b*row_block ..) by b*column_step.

    That turns G stacked (row_block x w) matrices into one block-diagonal CSR matrix.
    """
    crow, col = csr.crow_indices(), csr.col_indices()
    counts = crow[1:] - crow[:-1]
    block_of_row = torch.arange(counts.numel(), dtype=col.dtype) // row_block
    col = col + torch.repeat_interleave(block_of_row * column_step, counts)
    # the indices come from a valid CSR tensor and stay sorted within each row, so the (costly)
    # invariant check is skipped on purpose
    return torch.sparse_csr_tensor(crow, col, csr.values(), size=shape, check_invariants=False)


def _sparse_dO_by_channel(grad_output: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """dO as CSR (F, G*N*L): row f holds its N*L gradients in column block group(f)."""
    m = g.batch * g.positions
    dense = grad_output.transpose(0, 1).reshape(g.out_channels, m)
    csr = dense.to_sparse_csr()
    if g.groups == 1:
        return csr
    return _offset_columns(csr, g.out_channels // g.groups, m, (g.out_channels, g.groups * m))


def _sparse_dO_by_position(grad_output: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """dO^T as CSR (G*N*L, F): row (group, image, position) holds that group's F/G gradients."""
    m, f_per_group = g.batch * g.positions, g.out_channels // g.groups
    by_position = grad_output.view(g.batch, g.groups, f_per_group, g.positions)
    dense = by_position.permute(1, 0, 3, 2).reshape(g.groups * m, f_per_group)
    csr = dense.to_sparse_csr()
    if g.groups == 1:
        return csr
    return _offset_columns(csr, m, f_per_group, (g.groups * m, g.out_channels))


# ---------------------------------------------------------------------------------------------
# The backward passes.

@dataclass
class ConvGradients:
    """Gradients of a conv2d; a field is None when it was not asked for."""

    grad_input: torch.Tensor | None
    grad_weight: torch.Tensor | None
    grad_bias: torch.Tensor | None


def _prepare(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor, stride, padding, dilation,
             groups) -> ConvGeometry:
    for name, t in (("input", inp), ("weight", weight), ("grad_output", grad_output)):
        if t.layout != torch.strided or t.device.type != "cpu" or not t.is_floating_point():
            raise ValueError(f"{name} = {t.layout}/{t.device}/{t.dtype} tensor is out of range; allowed: a dense "
                             "floating-point CPU tensor")
    if not inp.dtype == weight.dtype == grad_output.dtype:
        raise ValueError(f"dtype = {inp.dtype}/{weight.dtype}/{grad_output.dtype} (input/weight/grad_output) is out of "
                         "range; allowed: one dtype for all three")
    return conv_geometry(inp.shape, weight.shape, stride, padding, dilation, groups, grad_output.shape)


# Images are processed in chunks whose im2col matrix is about this many elements. Like Caffe's
# per-image loop, that keeps the im2col/col2im buffers in cache and lets the allocator reuse them;
# whole-batch buffers (tens of MB) cost more in page faults and memory traffic than the products.
CHUNK_ELEMENTS = 1 << 19


def _chunk_size(g: ConvGeometry) -> int:
    per_image = g.groups * g.positions * g.col_width
    return max(1, min(g.batch, CHUNK_ELEMENTS // max(1, per_image)))


def _sparse_weight_product(d_o: torch.Tensor, inp: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    return torch.sparse.mm(_sparse_dO_by_channel(d_o, g), im2col_trans(inp, g))


def _sparse_column_product(d_o: torch.Tensor, w_mat: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    return torch.sparse.mm(_sparse_dO_by_position(d_o, g), w_mat)


def _dense_by_group(d_o: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """(G, F/G, N*L): the dense dO matrix of every group."""
    f_per_group = g.out_channels // g.groups
    return d_o.view(g.batch, g.groups, f_per_group, g.positions).permute(1, 2, 0, 3).reshape(
        g.groups, f_per_group, g.batch * g.positions)


def _dense_weight_product(d_o: torch.Tensor, inp: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    cols = im2col_trans(inp, g).view(g.groups, g.batch * g.positions, g.col_width)
    return torch.bmm(_dense_by_group(d_o, g), cols).view(g.out_channels, g.col_width)


def _dense_column_product(d_o: torch.Tensor, w_mat: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    w_groups = w_mat.view(g.groups, g.out_channels // g.groups, g.col_width)
    return torch.bmm(_dense_by_group(d_o, g).transpose(1, 2), w_groups).view(-1, g.col_width)


def _im2col_backward(inp, weight, grad_output, stride, padding, dilation, groups, need_input, need_weight,
                     need_bias, weight_product, column_product) -> ConvGradients:
    """The transposed-im2col backward pass, chunked over images, with the given matrix products."""
    g = _prepare(inp, weight, grad_output, stride, padding, dilation, groups)
    grad_output = grad_output.contiguous()
    w_mat = weight.reshape(g.out_channels, g.col_width)
    grad_input = torch.empty_like(inp) if need_input else None
    grad_weight = torch.zeros_like(w_mat) if need_weight else None
    step = _chunk_size(g)
    for first in range(0, g.batch, step):
        d_o, x = grad_output[first:first + step], inp[first:first + step]
        chunk = replace(g, batch=d_o.shape[0])
        if grad_weight is not None:
            grad_weight += weight_product(d_o, x, chunk)
        if grad_input is not None:
            grad_input[first:first + step] = col2im_trans(column_product(d_o, w_mat, chunk), chunk)
    grad_bias = grad_output.sum(dim=(0, 2, 3)) if need_bias else None
    return ConvGradients(grad_input, None if grad_weight is None else grad_weight.view(weight.shape), grad_bias)


def sparse_conv2d_backward(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                           stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                           dilation: int | tuple[int, ...] = 1, groups: int = 1,
                           need_input: bool = True, need_weight: bool = True,
                           need_bias: bool = False) -> ConvGradients:
    """dI, dW (and db) of `F.conv2d(inp, weight, stride=..., ...)` with sparse x dense products on dO.

    Equal to the dense backward within float rounding. An all-zero dO gives zero gradients.
    """
    return _im2col_backward(inp, weight, grad_output, stride, padding, dilation, groups, need_input, need_weight,
                            need_bias, _sparse_weight_product, _sparse_column_product)


def dense_conv2d_backward(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                          stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                          dilation: int | tuple[int, ...] = 1, groups: int = 1,
                          need_input: bool = True, need_weight: bool = True,
                          need_bias: bool = False) -> ConvGradients:
    """The same chunked im2col formulation with dense GEMMs: the paper's Caffe-style baseline."""
    return _im2col_backward(inp, weight, grad_output, stride, padding, dilation, groups, need_input, need_weight,
                            need_bias, _dense_weight_product, _dense_column_product)


def native_conv2d_backward(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                           stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                           dilation: int | tuple[int, ...] = 1, groups: int = 1,
                           need_input: bool = True, need_weight: bool = True,
                           need_bias: bool = False) -> ConvGradients:
    """torch's own dense convolution backward (oneDNN/MKL-DNN on CPU): the strongest dense baseline."""
    g = _prepare(inp, weight, grad_output, stride, padding, dilation, groups)
    grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output, inp, weight, [g.out_channels] if need_bias else None, list(g.stride), list(g.padding),
        list(g.dilation), False, [0, 0], g.groups, [need_input, need_weight, need_bias])
    return ConvGradients(grad_input, grad_weight, grad_bias)


# ---------------------------------------------------------------------------------------------
# The direct sparse backward (C++ extension, golden/training/csrc/).

# Above this dO density a layer's backward falls back to torch's native (oneDNN) one: the
# break-even density of the direct kernel against oneDNN from the benchmark's sweep
# (benchmarks/bench_sparse_backward.py; docs/performance.md, "CPU sparse back-propagation").
BREAK_EVEN_DENSITY = 0.3
# Grouped convolutions with fewer input channels per group than this (depthwise: 1) always use
# the native backward in SparseBackwardConv2d: the kernel vectorises over a group's channels, and
# on MobileNet-like depthwise layers it measured 2x to 10x slower than native at every density.
MIN_GROUP_CHANNELS = 8


@dataclass
class DirectResult:
    """What `direct_conv2d_backward` did: the gradients, dO's density, and whether the kernel ran."""

    gradients: ConvGradients
    density: float
    sparse: bool  # False: the density was above max_density and the native backward ran


def direct_conv2d_backward_ex(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                              stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                              dilation: int | tuple[int, ...] = 1, groups: int = 1,
                              need_input: bool = True, need_weight: bool = True, need_bias: bool = False,
                              max_density: float = 1.0) -> DirectResult:
    """The direct sparse backward, falling back to the native one when dO is denser than max_density.

    One pass over dO lists its non-zeros (and counts them); every non-zero dO(n, f, y, x) then
    adds dO * W[f] to dI's window and dO * I's window to dW[f], vectorised over channels
    (golden/training/csrc/sparse_conv_kernel.h). No im2col, no CSR tensors.
    """
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density = {max_density!r} is out of range; allowed: 0 <= max_density <= 1")
    g = _prepare(inp, weight, grad_output, stride, padding, dilation, groups)
    if inp.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype = {inp.dtype} is out of range; allowed: torch.float32, torch.float64")
    grad_bias = grad_output.sum(dim=(0, 2, 3)) if need_bias else None
    if not (need_input or need_weight):
        return DirectResult(ConvGradients(None, None, grad_bias), float("nan"), True)
    from .sparse_conv_ext import load

    grad_input, grad_weight, density = load().backward(inp, weight, grad_output, list(g.stride), list(g.padding),
                                                       list(g.dilation), g.groups, need_input, need_weight,
                                                       float(max_density))
    if density > max_density:
        dense = native_conv2d_backward(inp, weight, grad_output, stride, padding, dilation, groups,
                                       need_input=need_input, need_weight=need_weight)
        return DirectResult(ConvGradients(dense.grad_input, dense.grad_weight, grad_bias), density, False)
    return DirectResult(ConvGradients(grad_input, grad_weight, grad_bias), density, True)


def direct_conv2d_backward(inp: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                           stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                           dilation: int | tuple[int, ...] = 1, groups: int = 1,
                           need_input: bool = True, need_weight: bool = True,
                           need_bias: bool = False, max_density: float = 1.0) -> ConvGradients:
    """dI, dW (and db) of `F.conv2d` by the direct sparse kernel (no fallback unless max_density < 1)."""
    return direct_conv2d_backward_ex(inp, weight, grad_output, stride, padding, dilation, groups, need_input,
                                     need_weight, need_bias, max_density).gradients


# ---------------------------------------------------------------------------------------------
# Drop-in module.

class _SparseBackwardConv2dFunction(torch.autograd.Function):
    """Forward exactly as F.conv2d; backward through sparse_conv2d_backward."""

    @staticmethod
    def forward(ctx, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Pair,
                padding: Pair, dilation: Pair, groups: int, max_density: float,
                stats: "SparseBackwardStats") -> torch.Tensor:
        ctx.save_for_backward(inp, weight)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.max_density, ctx.module_stats = max_density, stats
        ctx.has_bias = bias is not None
        return F.conv2d(inp, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        inp, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        groups = ctx.conv_args[3]
        if groups > 1 and inp.shape[1] // groups < MIN_GROUP_CHANNELS:
            dense = native_conv2d_backward(inp, weight, grad_output, *ctx.conv_args, need_input=need_input,
                                           need_weight=need_weight, need_bias=need_bias and ctx.has_bias)
            result = DirectResult(dense, float("nan"), False)
        else:
            result = direct_conv2d_backward_ex(inp, weight, grad_output, *ctx.conv_args, need_input=need_input,
                                               need_weight=need_weight, need_bias=need_bias and ctx.has_bias,
                                               max_density=ctx.max_density)
        ctx.module_stats.record(result)
        grads = result.gradients
        return grads.grad_input, grads.grad_weight, grads.grad_bias, None, None, None, None, None, None


@dataclass
class SparseBackwardStats:
    """Per-layer counts of backward passes: how many ran the sparse kernel, how many fell back."""

    sparse_calls: int = 0
    dense_calls: int = 0
    last_density: float | None = None

    def record(self, result: DirectResult) -> None:
        if result.sparse:
            self.sparse_calls += 1
        else:
            self.dense_calls += 1
        self.last_density = result.density


class SparseBackwardConv2d(nn.Conv2d):
    """nn.Conv2d with the same parameters and forward, whose backward runs the direct sparse kernel.

    Per call, when dO is denser than `max_density` (default BREAK_EVEN_DENSITY) the layer uses
    torch's native backward instead; so do grouped layers with fewer than MIN_GROUP_CHANNELS
    input channels per group (depthwise), always. `convert_model` turns an existing nn.Conv2d into one in
    place; the two optional attributes below are created on first use.
    """

    max_density: float = BREAK_EVEN_DENSITY

    @property
    def sparse_stats(self) -> SparseBackwardStats:
        stats = self.__dict__.get("_sparse_stats")
        if stats is None:
            stats = self.__dict__["_sparse_stats"] = SparseBackwardStats()
        return stats

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        check_supported(self)
        if not torch.is_grad_enabled() or inp.dtype not in (torch.float32, torch.float64) or inp.device.type != "cpu":
            return F.conv2d(inp, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return _SparseBackwardConv2dFunction.apply(inp, self.weight, self.bias, self.stride, self.padding,
                                                   self.dilation, self.groups, self.max_density, self.sparse_stats)


def check_supported(conv: nn.Conv2d, name: str = "conv") -> None:
    """Raise ValueError unless the sparse backward handles this layer exactly."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"{name}.padding_mode = {conv.padding_mode!r} is out of range; allowed: 'zeros'")
    if isinstance(conv.padding, str):
        raise ValueError(f"{name}.padding = {conv.padding!r} is out of range; allowed: integers (explicit padding)")


def convert_model(model: nn.Module, max_density: float | None = None) -> nn.Module:
    """Make every nn.Conv2d of `model` (itself included) a SparseBackwardConv2d, in place; returns `model`.

    max_density: per-layer fallback to the native backward above this dO density (default
    BREAK_EVEN_DENSITY; 1.0 runs the sparse kernel always).

    The modules keep their identity, so weights, bias, stride, padding, groups, hooks, optimizer
    state and references held elsewhere (prune layers, conv_layers lists) all stay valid. Only
    exact nn.Conv2d instances change class; subclasses with their own forward are left alone.
    Raises ValueError (before changing anything) if a conv uses a mode the sparse backward lacks.
    """
    if max_density is not None and not (isinstance(max_density, (int, float)) and 0.0 <= max_density <= 1.0):
        raise ValueError(f"max_density = {max_density!r} is out of range; allowed: 0 <= max_density <= 1")
    targets = [(name or "model", m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    for name, conv in targets:
        check_supported(conv, name)
    for _name, conv in targets:
        conv.__class__ = SparseBackwardConv2d
        if max_density is not None:
            conv.max_density = float(max_density)
    return model


# ---------------------------------------------------------------------------------------------
# Real output gradients for checks and benchmarks.

@dataclass
class ConvCapture:
    """One conv layer's backward inputs from a training step: I, W, the dO it received, its geometry."""

    name: str
    inp: torch.Tensor
    weight: torch.Tensor
    grad_output: torch.Tensor
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int

    @property
    def density(self) -> float:
        return float(torch.count_nonzero(self.grad_output)) / max(1, self.grad_output.numel())


def capture_conv_gradients(model: nn.Module, batches, steps: int, lr: float = 0.01) -> list[ConvCapture]:
    """Train `model` (SGD, cross-entropy) for `steps` batches; return every conv's I, W, dO of the last one.

    With the golden model's pruning layers in `model`, dO is the pruned gradient exactly as
    training produced it. `batches` yields (images, labels); it must provide `steps` batches.
    """
    check_param("steps", steps, 1, 1 << 20)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    store: dict[str, dict[str, torch.Tensor]] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            store[name] = {"inp": inputs[0].detach().clone(), "weight": module.weight.detach().clone()}
            if output.requires_grad:
                output.register_hook(lambda grad: store[name].__setitem__("grad_output", grad.detach().clone()))
        return hook

    model.train()
    batch_iter = iter(batches)
    for step in range(steps):
        images, labels = next(batch_iter)
        handles = [m.register_forward_hook(hook_for(n)) for n, m in convs] if step == steps - 1 else []
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        for h in handles:
            h.remove()
        opt.step()
    return [ConvCapture(n, store[n]["inp"], store[n]["weight"], store[n]["grad_output"], m.stride, m.padding,
                        m.dilation, m.groups) for n, m in convs if "grad_output" in store.get(n, {})]
