"""A 2-D convolution layer and both its gradients as 1-D row operations (docs/architecture.md s. 8).

``layer_row_ops`` is the decomposition: the list of row operations (SRC, MSRC, OSRC) that the
hardware issues for one training step of one layer. Two implementations run over that same
list:

* float64 (``forward_f64``, ``grad_input_f64``, ``grad_weight_f64``): each row operation by its
  mathematical definition in numpy; equal to ``torch.nn.functional.conv2d`` and its autograd
  gradients to rounding error.
* bit-accurate integer (``forward_int``, ``grad_input_int``, ``grad_weight_int``,
  ``grad_bias_int``): each row operation through ``golden.bitexact.rowops`` (the PE reference), the
  beats summed into row accumulators with saturating ``ACC_W`` adds (the PPU), then
  requantised (section 2). This is what the RTL is compared with bit for bit.

``quantized_layer`` quantises float tensors with the scale rule of section 2, runs the
integer path and returns every result with its frac bits and its element-wise error bound.
Every row operation reports the cycles of the timing contract (``sparsetrain.arch.timing``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ...arch.fixedpoint import (FRAC_MAX, FRAC_MIN, SparseRow, check_acc_w, check_param, choose_frac_bits,
                                quantize, requantize, sat, sat_limit)
from ...arch.steps import Step
from ...arch.timing import Mode, entries, pe_cycles
from . import rowops

K_LIMIT = 16        # largest K of the contract (K_MAX range, section 1)
W_LIMIT = 4096      # longest row of the contract (W_MAX range, section 1)


@dataclass(frozen=True)
class ConvShape:
    """Geometry of one conv layer: I is (batch, in_channels, height, width), W is
    (out_channels, in_channels/groups, kernel, kernel), O and dO are (batch, out_channels,
    out_height, out_width). ``groups`` is 1 (ordinary) or in_channels (depthwise)."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int
    stride: int = 1
    pad: int = 0
    groups: int = 1

    def __post_init__(self) -> None:
        check_param("batch", self.batch, 1, 1 << 20)
        check_param("in_channels", self.in_channels, 1, 1 << 16)
        check_param("out_channels", self.out_channels, 1, 1 << 16)
        check_param("height", self.height, 1, W_LIMIT)
        check_param("width", self.width, 1, W_LIMIT)
        check_param("K", self.kernel, 1, K_LIMIT)
        check_param("stride", self.stride)
        check_param("pad", self.pad, 0, self.kernel - 1)
        smallest = min(self.height, self.width) + 2 * self.pad
        check_param("K", self.kernel, 1, smallest,
                    allowed=f"1 .. {smallest} (the padded {self.height} x {self.width} input)")
        if self.groups not in (1, self.in_channels):
            raise ValueError(f"groups = {self.groups} is out of range; allowed: 1 or in_channels "
                             f"({self.in_channels})")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels = {self.out_channels} is out of range; allowed: a multiple "
                             f"of groups ({self.groups})")

    @classmethod
    def from_tensors(cls, input_shape: tuple[int, ...], weight_shape: tuple[int, ...], *, stride: int = 1,
                     pad: int = 0, groups: int = 1) -> "ConvShape":
        input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
        _check_ndim("I", input_shape, "(N, C, H, W)")
        _check_ndim("W", weight_shape, "(F, C/groups, K, K)")
        f, cg, kh, kw = weight_shape
        if kh != kw:
            raise ValueError(f"W shape = {weight_shape} is out of range; allowed: a square kernel "
                             f"(K, K), got {kh} x {kw}")
        n, c, h, w = input_shape
        shape = cls(n, c, f, h, w, kh, stride, pad, groups)
        if cg != shape.in_per_group:
            raise ValueError(f"W shape = {weight_shape} does not match the layer; allowed: "
                             f"{shape.weight_shape}")
        return shape

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_per_group, self.kernel, self.kernel)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    def in_channels_of(self, f: int) -> range:
        g = f // self.out_per_group
        return range(g * self.in_per_group, (g + 1) * self.in_per_group)

    def out_channels_of(self, c: int) -> range:
        g = c // self.in_per_group
        return range(g * self.out_per_group, (g + 1) * self.out_per_group)

    def weight_channel(self, c: int) -> int:
        """Index of input channel c along W's second axis."""
        return c % self.in_per_group

    def terms(self, step: Step) -> int:
        """Largest number of products summed into one result of the step (section 2)."""
        if step is Step.FORWARD:
            return self.in_per_group * self.kernel * self.kernel
        if step is Step.GTA:
            return self.out_per_group * self.kernel * self.kernel
        return self.batch * self.out_height * self.out_width


def _check_ndim(name: str, shape: tuple[int, ...], allowed: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"{name} shape = {shape} is out of range; allowed: 4 dimensions {allowed}")


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} shape = {tuple(array.shape)} does not match the layer; allowed: {expected}")


@dataclass(frozen=True)
class RowOp:
    """One PE operation of a layer step.

    FORWARD (SRC): O[n, f, out_row, :] += SRC(I[n, c, in_row, :], W[f, wc, kr, :])
    GTA (MSRC):    dI[n, c, in_row, :] += MSRC(dO[n, f, out_row, :], W[f, wc, kr, :], mask[n, c, in_row, :])
    GTW (OSRC):    dW[f, wc, kr, :]     += OSRC(I[n, c, in_row, :], dO[n, f, out_row, :])
    with wc = ConvShape.weight_channel(c) and in_row = out_row * stride + kr - pad.
    """

    step: Step
    n: int
    f: int
    c: int
    kr: int
    in_row: int
    out_row: int

    @property
    def mode(self) -> Mode:
        return self.step.mode


@functools.lru_cache(maxsize=2)
def layer_row_ops_tuple(shape: ConvShape, step: Step) -> tuple[RowOp, ...]:
    """``layer_row_ops`` as a tuple, kept for the last two (shape, step): the compiler and the
    schedule of a check walk the same ops several times (read-only)."""
    return tuple(layer_row_ops(shape, step))


def layer_row_ops(shape: ConvShape, step: Step) -> Iterator[RowOp]:
    """The row operations of one step, grouped by the row they accumulate into.

    FORWARD per output row (n, f, y), GTA per input-gradient row (n, c, r), GTW per kernel
    row (f, c, kr); kernel rows whose input row is zero padding are not issued.
    """
    s, p, k, h = shape.stride, shape.pad, shape.kernel, shape.height
    if step is Step.FORWARD:
        for n in range(shape.batch):
            for f in range(shape.out_channels):
                for y in range(shape.out_height):
                    for c in shape.in_channels_of(f):
                        for kr in range(k):
                            r = y * s + kr - p
                            if 0 <= r < h:
                                yield RowOp(step, n, f, c, kr, r, y)
    elif step is Step.GTA:
        for n in range(shape.batch):
            for c in range(shape.in_channels):
                for r in range(h):
                    for f in shape.out_channels_of(c):
                        for kr in range(k):
                            t = r + p - kr
                            if t % s == 0 and 0 <= t // s < shape.out_height:
                                yield RowOp(step, n, f, c, kr, r, t // s)
    elif step is Step.GTW:
        for f in range(shape.out_channels):
            for c in shape.in_channels_of(f):
                for kr in range(k):
                    for n in range(shape.batch):
                        for y in range(shape.out_height):
                            r = y * s + kr - p
                            if 0 <= r < h:
                                yield RowOp(step, n, f, c, kr, r, y)
    else:
        raise ValueError(f"step = {step!r} is out of range; allowed: {[m.value for m in Step]}")


def row_op_cycles(op: RowOp, shape: ConvShape, port1_nnz: int, port2_nnz: int = 0) -> int:
    """Timing-contract cycles of one row operation given the non-zeros of its sparse rows.

    port1_nnz: non-zeros of the I row (SRC, OSRC) or of the dO row (MSRC); port2_nnz: of the
    dO row (OSRC only; SRC/MSRC load the K weights as a dense row).
    """
    if op.mode is Mode.OSRC:
        return pe_cycles(Mode.OSRC, shape.kernel, entries(port1_nnz), entries(port2_nnz))
    return pe_cycles(op.mode, shape.kernel, entries(port1_nnz))


@dataclass
class StepResult:
    """Result of one step over its row operations.

    value: float64 (float path) or requantised int64 (integer path, with ``frac``);
    ops / op_cycles: the row operations in ``layer_row_ops`` order and the cycles of each;
    macs: multiplies the PE performs (integer path; None for the float path, which models
    no hardware).
    """

    step: Step
    value: np.ndarray
    ops: list[RowOp]
    op_cycles: list[int]
    frac: int | None = None
    macs: int | None = None

    @property
    def cycles(self) -> int:
        return int(sum(self.op_cycles))


# ---------------------------------------------------------------- float64 row operations

def src_f64(weights: np.ndarray, row: np.ndarray, *, stride: int, pad: int, out_len: int) -> np.ndarray:
    """out[x] = sum_k w[k] * in[x*S + k - P]."""
    k = weights.size
    padded = np.pad(row, pad)
    windows = np.lib.stride_tricks.sliding_window_view(padded, k)[::stride][:out_len]
    return windows @ weights


def msrc_f64(weights: np.ndarray, grad: np.ndarray, mask: np.ndarray, *, stride: int, pad: int) -> np.ndarray:
    """dI[x] = mask[x] * sum_{y,k: y*S + k - P = x} w[k] * dO[y]."""
    k, out_len = weights.size, mask.size
    buf = np.zeros(out_len + 2 * pad + k, dtype=np.float64)
    span = stride * (grad.size - 1) + 1
    for kk in range(k):
        buf[kk:kk + span:stride] += weights[kk] * grad
    return buf[pad:pad + out_len] * mask


def osrc_f64(row: np.ndarray, grad: np.ndarray, k: int, *, stride: int, pad: int) -> np.ndarray:
    """dW[k] = sum_x dO[x] * in[x*S + k - P]."""
    padded = np.pad(row, pad)
    windows = np.lib.stride_tricks.sliding_window_view(padded, k)[::stride][:grad.size]
    return grad @ windows


# ---------------------------------------------------------------- float64 layer steps

def _as_f64(name: str, x: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    _check_shape(name, x, expected)
    return x


def _mask(mask: np.ndarray | None, shape: ConvShape) -> np.ndarray:
    if mask is None:
        return np.ones(shape.input_shape, dtype=bool)
    m = np.asarray(mask)
    _check_shape("mask", m, shape.input_shape)
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("mask values are out of range; allowed: 0 or 1 (bool)")
    return m.astype(bool)


def forward_f64(shape: ConvShape, inputs: np.ndarray, weights: np.ndarray,
                bias: np.ndarray | None = None) -> StepResult:
    """O = conv(I, W) + b as the SRC row operations of ``layer_row_ops(shape, FORWARD)``."""
    x = _as_f64("I", inputs, shape.input_shape)
    w = _as_f64("W", weights, shape.weight_shape)
    out = np.zeros(shape.output_shape)
    if bias is not None:
        out += _as_f64("b", bias, (shape.out_channels,))[None, :, None, None]
    nnz = np.count_nonzero(x, axis=-1)
    ops = list(layer_row_ops(shape, Step.FORWARD))
    cycles = []
    for op in ops:
        out[op.n, op.f, op.out_row] += src_f64(w[op.f, shape.weight_channel(op.c), op.kr],
                                               x[op.n, op.c, op.in_row], stride=shape.stride,
                                               pad=shape.pad, out_len=shape.out_width)
        cycles.append(row_op_cycles(op, shape, int(nnz[op.n, op.c, op.in_row])))
    return StepResult(Step.FORWARD, out, ops, cycles)


def grad_input_f64(shape: ConvShape, grad_output: np.ndarray, weights: np.ndarray,
                   mask: np.ndarray | None = None) -> StepResult:
    """dI = mask * conv_transpose(dO, W) as the MSRC row operations (mask all-ones if None)."""
    g = _as_f64("dO", grad_output, shape.output_shape)
    w = _as_f64("W", weights, shape.weight_shape)
    m = _mask(mask, shape).astype(np.float64)
    out = np.zeros(shape.input_shape)
    nnz = np.count_nonzero(g, axis=-1)
    ops = list(layer_row_ops(shape, Step.GTA))
    cycles = []
    for op in ops:
        out[op.n, op.c, op.in_row] += msrc_f64(w[op.f, shape.weight_channel(op.c), op.kr],
                                               g[op.n, op.f, op.out_row], m[op.n, op.c, op.in_row],
                                               stride=shape.stride, pad=shape.pad)
        cycles.append(row_op_cycles(op, shape, int(nnz[op.n, op.f, op.out_row])))
    return StepResult(Step.GTA, out, ops, cycles)


def grad_weight_f64(shape: ConvShape, inputs: np.ndarray, grad_output: np.ndarray) -> StepResult:
    """dW as the OSRC row operations (K-long results summed over batch and output rows)."""
    x = _as_f64("I", inputs, shape.input_shape)
    g = _as_f64("dO", grad_output, shape.output_shape)
    out = np.zeros(shape.weight_shape)
    nnz_x, nnz_g = np.count_nonzero(x, axis=-1), np.count_nonzero(g, axis=-1)
    ops = list(layer_row_ops(shape, Step.GTW))
    cycles = []
    for op in ops:
        out[op.f, shape.weight_channel(op.c), op.kr] += osrc_f64(
            x[op.n, op.c, op.in_row], g[op.n, op.f, op.out_row], shape.kernel, stride=shape.stride, pad=shape.pad)
        cycles.append(row_op_cycles(op, shape, int(nnz_x[op.n, op.c, op.in_row]),
                                    int(nnz_g[op.n, op.f, op.out_row])))
    return StepResult(Step.GTW, out, ops, cycles)


def grad_bias_f64(shape: ConvShape, grad_output: np.ndarray) -> np.ndarray:
    """db[f] = sum over n, y, x of dO[n, f, y, x]."""
    return _as_f64("dO", grad_output, shape.output_shape).sum(axis=(0, 2, 3))


class _StepCycles:
    """Cycle totals of a layer result with a ``steps`` mapping (float and integer paths alike)."""

    steps: dict

    @property
    def cycles(self) -> dict[Step, int]:
        return {step: res.cycles for step, res in self.steps.items()}

    @property
    def total_cycles(self) -> int:
        return sum(self.cycles.values())


@dataclass
class FloatLayer(_StepCycles):
    """All steps of a layer in float64: per-step results, db, and the cycles of each step."""

    shape: ConvShape
    steps: dict[Step, StepResult]
    grad_bias: np.ndarray | None



def float_layer(inputs: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None,
                grad_output: np.ndarray | None = None, mask: np.ndarray | None = None, *, stride: int = 1,
                pad: int = 0, groups: int = 1) -> FloatLayer:
    """Forward, and GTA, GTW and db when grad_output is given, over the row decomposition."""
    shape = ConvShape.from_tensors(np.shape(inputs), np.shape(weights), stride=stride, pad=pad, groups=groups)
    steps = {Step.FORWARD: forward_f64(shape, inputs, weights, bias)}
    db = None
    if grad_output is not None:
        steps[Step.GTA] = grad_input_f64(shape, grad_output, weights, mask)
        steps[Step.GTW] = grad_weight_f64(shape, inputs, grad_output)
        db = grad_bias_f64(shape, grad_output)
    return FloatLayer(shape, steps, db)


# ---------------------------------------------------------------- bit-accurate integer steps

def _as_int(name: str, q: np.ndarray, expected: tuple[int, ...], dw: int) -> np.ndarray:
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"{name} dtype = {q.dtype} is out of range; allowed: an integer dtype")
    q = q.astype(np.int64)
    _check_shape(name, q, expected)
    lim = sat_limit(dw)
    if q.size and int(np.max(np.abs(q))) > lim:
        raise ValueError(f"{name} value = {int(np.max(np.abs(q)))} is out of range; allowed: "
                         f"-{lim} .. {lim} (DW = {dw})")
    return q


def _sat_add(acc: np.ndarray, values, acc_w: int) -> np.ndarray:
    """sat_ACC_W(acc + values) without int64 overflow for ACC_W up to 64."""
    if acc_w <= 62:
        return sat(acc + np.asarray(values, dtype=np.int64), acc_w)
    lim = sat_limit(acc_w)
    return np.array([max(-lim, min(lim, int(a) + int(v))) for a, v in zip(acc.tolist(), list(values))],
                    dtype=np.int64)


def _accumulate_beats(acc: np.ndarray, beats: list[rowops.Beat], acc_w: int) -> None:
    """The PPU: add each beat's lanes into its columns of the row accumulator (saturating)."""
    for beat in beats:
        if beat.count:
            sl = slice(beat.base, beat.base + beat.count)
            acc[sl] = _sat_add(acc[sl], beat.lanes, acc_w)


def _requantize_step(acc: np.ndarray, frac_in: int, frac_out: int, dw: int, acc_w: int) -> np.ndarray:
    check_param("frac_out", frac_out, max(FRAC_MIN, frac_in - (acc_w - 1)), min(FRAC_MAX, frac_in),
                allowed=f"{max(FRAC_MIN, frac_in - (acc_w - 1))} .. {min(FRAC_MAX, frac_in)} "
                        f"(shift 0 .. ACC_W-1 below the accumulator's {frac_in} frac bits)")
    return requantize(acc, frac_in - frac_out, dw)


def _check_widths(dw: int, acc_w: int) -> None:
    check_param("DW", dw)
    check_acc_w(acc_w, dw)


def bias_preload(bias_q: np.ndarray, frac_bias: int, frac_acc: int, acc_w: int) -> np.ndarray:
    """The accumulator's start value for a bias with frac_bias <= frac_acc: exact left shift."""
    check_param("frac_bias", frac_bias, FRAC_MIN, frac_acc,
                allowed=f"{FRAC_MIN} .. {frac_acc} (at most the accumulator's frac bits)")
    shift = frac_acc - frac_bias
    return np.array([sat(int(b) << shift, acc_w) for b in np.asarray(bias_q).tolist()], dtype=np.int64)


def forward_int(shape: ConvShape, inputs_q: np.ndarray, weights_q: np.ndarray, *, frac_in: int,
                frac_w: int, frac_out: int, bias_q: np.ndarray | None = None, frac_bias: int | None = None,
                dw: int = 16, acc_w: int = 40) -> StepResult:
    """Bit-accurate O: SRC per row op (golden.bitexact.rowops), saturating row accumulation, requantise.

    The accumulator holds frac_in + frac_w frac bits; a bias is preloaded (shifted up exactly
    from frac_bias); the result is sat_DW(rne_shift(acc, frac_in + frac_w - frac_out)).
    """
    _check_widths(dw, acc_w)
    x = _as_int("I", inputs_q, shape.input_shape, dw)
    w = _as_int("W", weights_q, shape.weight_shape, dw)
    frac_acc = frac_in + frac_w
    acc = np.zeros(shape.output_shape, dtype=np.int64)
    if bias_q is not None:
        if frac_bias is None:
            raise ValueError("frac_bias = None is out of range; allowed: an integer when bias_q is given")
        b = _as_int("b", bias_q, (shape.out_channels,), dw)
        acc += bias_preload(b, frac_bias, frac_acc, acc_w)[None, :, None, None]
    rows = _sparse_rows(x)
    ops = list(layer_row_ops(shape, Step.FORWARD))
    cycles, macs = [], 0
    for op in ops:
        res = rowops.src(w[op.f, shape.weight_channel(op.c), op.kr].tolist(), rows[op.n, op.c, op.in_row],
                         stride=shape.stride, pad=shape.pad, out_len=shape.out_width, acc_w=acc_w)
        _accumulate_beats(acc[op.n, op.f, op.out_row], res.beats, acc_w)
        cycles.append(res.cycles)
        macs += res.macs
    out = _requantize_step(acc, frac_acc, frac_out, dw, acc_w)
    return StepResult(Step.FORWARD, out, ops, cycles, frac_out, macs)


def grad_input_int(shape: ConvShape, grad_output_q: np.ndarray, weights_q: np.ndarray, *, frac_grad: int,
                   frac_w: int, frac_out: int, mask: np.ndarray | None = None, dw: int = 16,
                   acc_w: int = 40) -> StepResult:
    """Bit-accurate dI: MSRC per row op with the ReLU mask, saturating accumulation, requantise."""
    _check_widths(dw, acc_w)
    g = _as_int("dO", grad_output_q, shape.output_shape, dw)
    w = _as_int("W", weights_q, shape.weight_shape, dw)
    m = _mask(mask, shape)
    acc = np.zeros(shape.input_shape, dtype=np.int64)
    rows = _sparse_rows(g)
    ops = list(layer_row_ops(shape, Step.GTA))
    cycles, macs = [], 0
    for op in ops:
        res = rowops.msrc(w[op.f, shape.weight_channel(op.c), op.kr].tolist(), rows[op.n, op.f, op.out_row],
                          m[op.n, op.c, op.in_row], stride=shape.stride, pad=shape.pad, acc_w=acc_w)
        _accumulate_beats(acc[op.n, op.c, op.in_row], res.beats, acc_w)
        cycles.append(res.cycles)
        macs += res.macs
    out = _requantize_step(acc, frac_grad + frac_w, frac_out, dw, acc_w)
    return StepResult(Step.GTA, out, ops, cycles, frac_out, macs)


def grad_weight_int(shape: ConvShape, inputs_q: np.ndarray, grad_output_q: np.ndarray, *, frac_in: int,
                    frac_grad: int, frac_out: int, dw: int = 16, acc_w: int = 40) -> StepResult:
    """Bit-accurate dW: OSRC per row op, K-long results accumulated (saturating), requantise."""
    _check_widths(dw, acc_w)
    x = _as_int("I", inputs_q, shape.input_shape, dw)
    g = _as_int("dO", grad_output_q, shape.output_shape, dw)
    acc = np.zeros(shape.weight_shape, dtype=np.int64)
    rows_x, rows_g = _sparse_rows(x), _sparse_rows(g)
    ops = list(layer_row_ops(shape, Step.GTW))
    cycles, macs = [], 0
    for op in ops:
        res = rowops.osrc(rows_x[op.n, op.c, op.in_row], rows_g[op.n, op.f, op.out_row], shape.kernel,
                          stride=shape.stride, pad=shape.pad, acc_w=acc_w)
        _accumulate_beats(acc[op.f, shape.weight_channel(op.c), op.kr], res.beats, acc_w)
        cycles.append(res.cycles)
        macs += res.macs
    out = _requantize_step(acc, frac_in + frac_grad, frac_out, dw, acc_w)
    return StepResult(Step.GTW, out, ops, cycles, frac_out, macs)


def grad_bias_int(shape: ConvShape, grad_output_q: np.ndarray, *, frac_grad: int, frac_out: int,
                  dw: int = 16, acc_w: int = 40) -> np.ndarray:
    """Bit-accurate db: saturating ACC_W sum of the dO rows per channel, then requantise."""
    _check_widths(dw, acc_w)
    g = _as_int("dO", grad_output_q, shape.output_shape, dw)
    acc = np.zeros(shape.out_channels, dtype=np.int64)
    for n in range(shape.batch):
        for y in range(shape.out_height):
            for xx in range(shape.out_width):
                acc = _sat_add(acc, g[n, :, y, xx], acc_w)
    return _requantize_step(acc, frac_grad, frac_out, dw, acc_w)


def _sparse_rows(q: np.ndarray) -> np.ndarray:
    """Every row of a 4-D integer tensor in the sparse row format (non-zeros only, section 3)."""
    rows = np.empty(q.shape[:-1], dtype=object)
    for idx in np.ndindex(*q.shape[:-1]):
        rows[idx] = SparseRow.from_dense(q[idx])
    return rows


# ---------------------------------------------------------------- quantised layer with error bound

@dataclass
class QuantizedOutput:
    """An integer result with its frac bits, the float64 reference and the error bound."""

    name: str
    q: np.ndarray
    frac: int
    reference: np.ndarray
    bound: np.ndarray

    @property
    def value(self) -> np.ndarray:
        return self.q.astype(np.float64) * 2.0 ** -self.frac

    @property
    def error(self) -> np.ndarray:
        return np.abs(self.value - self.reference)


@dataclass
class QuantizedLayer(_StepCycles):
    """Everything ``quantized_layer`` computes: inputs' frac bits, outputs, per-step results."""

    shape: ConvShape
    dw: int
    acc_w: int
    input_frac: dict[str, int]
    outputs: dict[str, QuantizedOutput]
    steps: dict[Step, StepResult] = field(default_factory=dict)



def required_acc_w(shape: ConvShape, dw: int, steps: list[Step], max_preload: int = 0) -> int:
    """Smallest ACC_W with which no partial sum of these steps can saturate.

    Every partial sum is at most terms * (2**(DW-1) - 1)**2 (+ the bias preload), which
    needs that many bits plus a sign bit; section 2's compiler rule
    2*DW + ceil(log2(terms)) + 1 is never below this.
    """
    lim = sat_limit(dw)
    worst = max([shape.terms(s) * lim * lim + (max_preload if s is Step.FORWARD else 0) for s in steps]
                + [shape.batch * shape.out_height * shape.out_width * lim])  # the db sum
    return worst.bit_length() + 1


def error_bound(sum_abs_b: np.ndarray, sum_abs_a: np.ndarray, n_terms: np.ndarray, frac_a: int, frac_b: int,
                frac_out: int) -> np.ndarray:
    """Section 2: 2**-(fa+1)*sum|b| + 2**-(fb+1)*sum|a| + n*2**-(fa+fb+2) + 2**-(fout+1)."""
    return (2.0 ** -(frac_a + 1) * sum_abs_b + 2.0 ** -(frac_b + 1) * sum_abs_a
            + n_terms * 2.0 ** -(frac_a + frac_b + 2) + 2.0 ** -(frac_out + 1))


def _out_frac(reference: np.ndarray, frac_acc: int, dw: int, acc_w: int) -> int:
    """Scale rule on the float result, limited to a requantisation shift of 0 .. ACC_W-1."""
    return max(frac_acc - (acc_w - 1), min(choose_frac_bits(reference, dw), frac_acc))


def quantized_layer(inputs: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None,
                    grad_output: np.ndarray | None = None, mask: np.ndarray | None = None, *,
                    stride: int = 1, pad: int = 0, groups: int = 1, dw: int = 16,
                    acc_w: int | None = None) -> QuantizedLayer:
    """Quantise float tensors (scale rule of section 2), run the integer path of every step that
    the given tensors allow (forward; GTA, GTW and db when grad_output is given) and return each
    result with its frac bits, its float64 reference and its element-wise error bound.

    acc_w defaults to 2*DW + 8 or, if that could saturate for this layer, the smallest width
    that cannot; an explicit acc_w below that raises ValueError.
    """
    check_param("DW", dw)
    shape = ConvShape.from_tensors(np.shape(inputs), np.shape(weights), stride=stride, pad=pad, groups=groups)
    x = _as_f64("I", inputs, shape.input_shape)
    w = _as_f64("W", weights, shape.weight_shape)
    frac = {"I": choose_frac_bits(x, dw), "W": choose_frac_bits(w, dw)}
    xq, wq = quantize(x, frac["I"], dw), quantize(w, frac["W"], dw)
    frac_fwd = frac["I"] + frac["W"]
    steps = [Step.FORWARD]
    b = bq = None
    max_preload = 0
    if bias is not None:
        b = _as_f64("b", bias, (shape.out_channels,))
        frac["b"] = min(choose_frac_bits(b, dw), frac_fwd)
        bq = quantize(b, frac["b"], dw)
        max_preload = int(np.max(np.abs(bq))) << (frac_fwd - frac["b"])
    g = None
    if grad_output is not None:
        g = _as_f64("dO", grad_output, shape.output_shape)
        frac["dO"] = choose_frac_bits(g, dw)
        steps += [Step.GTA, Step.GTW]
    need = required_acc_w(shape, dw, steps, max_preload)
    if acc_w is None:
        acc_w = max(min(64, 2 * dw + 8), need)
    if need > 64 or acc_w < need:
        raise ValueError(f"ACC_W = {acc_w} is out of range; allowed: {need} .. 64 (no saturation for this "
                         f"layer at DW = {dw})")
    check_acc_w(acc_w, dw)

    outputs: dict[str, QuantizedOutput] = {}
    results: dict[Step, StepResult] = {}
    ones_x, ones_w = np.ones_like(x), np.ones_like(w)  # for the sums of |a|, |b| and n in the bound

    ref = forward_f64(shape, x, w, b).value
    fo = _out_frac(ref, frac_fwd, dw, acc_w)
    res = forward_int(shape, xq, wq, frac_in=frac["I"], frac_w=frac["W"], frac_out=fo, bias_q=bq,
                      frac_bias=frac.get("b"), dw=dw, acc_w=acc_w)
    bound = error_bound(forward_f64(shape, ones_x, np.abs(w)).value, forward_f64(shape, np.abs(x), ones_w).value,
                        forward_f64(shape, ones_x, ones_w).value, frac["I"], frac["W"], fo)
    if b is not None:
        bound = bound + 2.0 ** -(frac["b"] + 1)  # the bias' own quantisation; its preload is exact
    outputs["O"] = QuantizedOutput("O", res.value, fo, ref, bound)
    results[Step.FORWARD] = res

    if g is not None:
        gq = quantize(g, frac["dO"], dw)
        ones_g = np.ones_like(g)
        m = _mask(mask, shape)
        ref = grad_input_f64(shape, g, w, m).value
        fo = _out_frac(ref, frac["dO"] + frac["W"], dw, acc_w)
        res = grad_input_int(shape, gq, wq, frac_grad=frac["dO"], frac_w=frac["W"], frac_out=fo, mask=m,
                             dw=dw, acc_w=acc_w)
        bound = error_bound(grad_input_f64(shape, ones_g, np.abs(w), m).value,
                            grad_input_f64(shape, np.abs(g), ones_w, m).value,
                            grad_input_f64(shape, ones_g, ones_w, m).value, frac["dO"], frac["W"], fo)
        outputs["dI"] = QuantizedOutput("dI", res.value, fo, ref, bound)
        results[Step.GTA] = res

        ref = grad_weight_f64(shape, x, g).value
        fo = _out_frac(ref, frac["I"] + frac["dO"], dw, acc_w)
        res = grad_weight_int(shape, xq, gq, frac_in=frac["I"], frac_grad=frac["dO"], frac_out=fo, dw=dw,
                              acc_w=acc_w)
        bound = error_bound(grad_weight_f64(shape, ones_x, np.abs(g)).value,
                            grad_weight_f64(shape, np.abs(x), ones_g).value,
                            grad_weight_f64(shape, ones_x, ones_g).value, frac["I"], frac["dO"], fo)
        outputs["dW"] = QuantizedOutput("dW", res.value, fo, ref, bound)
        results[Step.GTW] = res

        ref = grad_bias_f64(shape, g)
        fo = max(frac["dO"] - (acc_w - 1), min(choose_frac_bits(ref, dw), frac["dO"]))
        dbq = grad_bias_int(shape, gq, frac_grad=frac["dO"], frac_out=fo, dw=dw, acc_w=acc_w)
        n_db = shape.batch * shape.out_height * shape.out_width
        outputs["db"] = QuantizedOutput("db", dbq, fo, ref,
                                        np.full(shape.out_channels, n_db * 2.0 ** -(frac["dO"] + 1)
                                                + 2.0 ** -(fo + 1)))
    return QuantizedLayer(shape, dw, acc_w, frac, outputs, results)


__all__ = [
    "ConvShape", "RowOp", "StepResult", "layer_row_ops", "row_op_cycles",
    "src_f64", "msrc_f64", "osrc_f64", "forward_f64", "grad_input_f64", "grad_weight_f64", "grad_bias_f64",
    "FloatLayer", "float_layer", "forward_int", "grad_input_int", "grad_weight_int", "grad_bias_int", "bias_preload",
    "QuantizedOutput", "QuantizedLayer", "quantized_layer", "required_acc_w", "error_bound",
]
