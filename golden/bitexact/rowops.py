"""Bit-accurate reference of the PE's row operations (docs/architecture.md sections 4 to 6).

``src``, ``msrc`` and ``osrc`` return the output beats exactly as the PE emits them, the
dense result row they encode, the number of multiplies performed and the cycle count of
the timing contract. The testbenches compare the RTL with these, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...arch.fixedpoint import SparseRow, check_param, sat
from ...arch.timing import Mode, entries, msrc_skips, pe_cycles


@dataclass(frozen=True)
class Beat:
    base: int
    count: int
    lanes: tuple[int, ...]  # count values; lanes >= count are 0 on the wire
    last: bool


@dataclass
class RowOpResult:
    mode: Mode
    beats: list[Beat]
    dense: np.ndarray  # the result row (W_out long for SRC/MSRC, K long for OSRC)
    macs: int          # multiplies actually performed
    cycles: int        # timing contract, no stalls


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def check_row_op(k: int, stride: int, pad: int, in_len: int, out_len: int, k_max: int = 16,
                 w_max: int = 4096) -> None:
    check_param("K", k, 1, k_max)
    check_param("stride", stride)
    check_param("pad", pad, 0, k - 1)
    check_param("in_len", in_len, 1, w_max)
    check_param("out_len", out_len, 1, w_max)


def conv_out_len(in_len: int, k: int, stride: int, pad: int) -> int:
    n = in_len + 2 * pad - k
    if n < 0:
        raise ValueError(f"K = {k} is out of range for a row of {in_len} with padding {pad}; "
                         f"allowed: 1 .. {in_len + 2 * pad}")
    return n // stride + 1


class _Window:
    """Reg-2 as a window of K partial sums over output columns base .. base+K-1."""

    def __init__(self, k: int, out_len: int, acc_w: int):
        self.k, self.out_len, self.acc_w = k, out_len, acc_w
        self.base = 0
        self.slots = [0] * k
        self.beats: list[Beat] = []

    def advance(self, lo: int) -> None:
        new_base = max(self.base, lo)
        hi = min(new_base, self.base + self.k, self.out_len)
        if hi > self.base:
            n = hi - self.base
            self.beats.append(Beat(self.base, n, tuple(self.slots[:n]), False))
        d = min(new_base - self.base, self.k)
        self.slots = self.slots[d:] + [0] * d
        self.base = new_base

    def add(self, x: int, value: int) -> None:
        slot = x - self.base
        assert 0 <= slot < self.k, (x, self.base)
        self.slots[slot] = sat(self.slots[slot] + value, self.acc_w)

    def finish(self) -> None:
        n = max(0, min(self.base + self.k, self.out_len) - self.base)
        self.beats.append(Beat(self.base, n, tuple(self.slots[:n]), True))

    def dense(self) -> np.ndarray:
        out = np.zeros(self.out_len, dtype=np.int64)
        for b in self.beats:
            out[b.base:b.base + b.count] = b.lanes
        return out


def src(weights: Sequence[int], row: SparseRow, *, stride: int = 1, pad: int = 0,
        out_len: int | None = None, acc_w: int = 40) -> RowOpResult:
    """SRC: out[x] = sum_k w[k] * in[x*S + k - P] (forward)."""
    k = len(weights)
    if out_len is None:
        out_len = conv_out_len(row.length, k, stride, pad)
    check_row_op(k, stride, pad, row.length, out_len)
    win = _Window(k, out_len, acc_w)
    macs = 0
    for c, v in zip(row.offsets.tolist(), row.values.tolist()):
        u = c + pad
        win.advance(_ceil_div(u - k + 1, stride))
        for kk in range(k):
            t = u - kk
            if t % stride == 0 and 0 <= t // stride < out_len:
                win.add(t // stride, int(weights[kk]) * v)
                macs += 1
    win.finish()
    return RowOpResult(Mode.SRC, win.beats, win.dense(), macs, pe_cycles(Mode.SRC, k, row.entries))


def msrc(weights: Sequence[int], grad: SparseRow, mask: Sequence[int] | np.ndarray, *, stride: int = 1,
         pad: int = 0, acc_w: int = 40, lookahead: int = 1) -> RowOpResult:
    """MSRC: dI[x] = mask[x] * sum_{y*S + k - P = x} w[k] * dO[y] (gradient to activations).

    lookahead 2 (section 6.1): skip entries (every target masked off or out of range) do not
    step the window, so they retire no columns; the dense result is the same, the beats are
    those of the row without its skip entries."""
    k = len(weights)
    mask = np.asarray(mask, dtype=bool)
    out_len = int(mask.size)
    check_row_op(k, stride, pad, grad.length, out_len)
    expect = conv_out_len(out_len, k, stride, pad)
    if grad.length != expect:
        raise ValueError(f"dO row length = {grad.length} does not match the dI row of {out_len} "
                         f"(K={k}, stride={stride}, pad={pad}); allowed: {expect}")
    if lookahead not in (1, 2):
        raise ValueError(f"lookahead = {lookahead} is out of range; allowed: 1, 2")
    win = _Window(k, out_len, acc_w)
    macs = 0
    skips = msrc_skips(grad.offsets.tolist(), mask.tolist(), k, stride, pad) if lookahead == 2 else None
    for i, (y, v) in enumerate(zip(grad.offsets.tolist(), grad.values.tolist())):
        if skips is not None and skips[i]:
            continue
        lo = y * stride - pad
        win.advance(lo)
        for kk in range(k):
            x = lo + kk
            if 0 <= x < out_len and mask[x]:
                win.add(x, int(weights[kk]) * v)
                macs += 1
    win.finish()
    return RowOpResult(Mode.MSRC, win.beats, win.dense(), macs, pe_cycles(Mode.MSRC, k, grad.entries))


def osrc(row: SparseRow, grad: SparseRow, k: int, *, stride: int = 1, pad: int = 0,
         acc_w: int = 40) -> RowOpResult:
    """OSRC: dW[k] = sum_x dO[x] * in[x*S + k - P] (gradient to weights, K results)."""
    check_row_op(k, stride, pad, row.length, grad.length)
    expect = conv_out_len(row.length, k, stride, pad)
    if grad.length != expect:
        raise ValueError(f"dO row length = {grad.length} does not match the input row of {row.length} "
                         f"(K={k}, stride={stride}, pad={pad}); allowed: {expect}")
    dgrad = dict(zip(grad.offsets.tolist(), grad.values.tolist()))
    acc = [0] * k
    macs = 0
    for c, v in zip(row.offsets.tolist(), row.values.tolist()):
        u = c + pad
        for kk in range(k):
            t = u - kk
            if t % stride == 0 and (t // stride) in dgrad:
                acc[kk] = sat(acc[kk] + v * dgrad[t // stride], acc_w)
                macs += 1
    beats = [Beat(0, k, tuple(acc), True)]
    return RowOpResult(Mode.OSRC, beats, np.asarray(acc, dtype=np.int64), macs,
                       pe_cycles(Mode.OSRC, k, row.entries, grad.entries))


def dense_row(values: Sequence[float] | np.ndarray) -> SparseRow:
    """Every column present (the dense row in the sparse format)."""
    return SparseRow.from_dense(np.asarray(values, dtype=np.int64), keep_zeros=True)


__all__ = ["Beat", "RowOpResult", "src", "msrc", "osrc", "conv_out_len", "dense_row", "entries"]
