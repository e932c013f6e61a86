"""PE stimulus: the directed cases of the issue and constrained-random operations (numpy only)."""
from __future__ import annotations

import numpy as np

from ..arch.fixedpoint import SparseRow, sat_limit
from ..arch.pe import HwParams
from ..arch.timing import Mode
from ..golden.bitexact.rowops import conv_out_len
from .pe_driver import PeOp

DENSITIES = (0.0, 0.05, 0.2, 0.5, 0.8, 1.0)


def _values(rng: np.random.Generator, n: int, dw: int, extreme: float) -> np.ndarray:
    """Random storage values; a fraction ``extreme`` is +-max magnitude (saturation paths)."""
    lim = sat_limit(dw)
    v = rng.integers(-lim, lim + 1, size=n)
    big = rng.random(n) < extreme
    v[big] = np.where(rng.random(int(big.sum())) < 0.5, lim, -lim)
    return v


def _sparse(rng: np.random.Generator, length: int, density: float, dw: int, extreme: float) -> SparseRow:
    keep = rng.random(length) < density
    offs = np.flatnonzero(keep)
    vals = _values(rng, offs.size, dw, extreme)
    vals[vals == 0] = 1  # the compressor writes non-zeros only
    return SparseRow(length, offs, vals)


def random_op(rng: np.random.Generator, p: HwParams, mode: Mode) -> PeOp:
    """One constrained-random op of ``mode``: K, stride, pad, lengths and density all random."""
    k = int(rng.integers(1, p.k_max + 1))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, k))
    extreme = float(rng.choice([0.0, 0.0, 0.5]))
    density = float(rng.choice(DENSITIES)) if rng.random() < 0.5 else float(rng.random())
    # input length: long enough for one output, short enough that in and out fit W_MAX
    lo = max(1, k - 2 * pad)
    in_len = int(rng.integers(lo, p.w_max + 1))
    while conv_out_len(in_len, k, stride, pad) > p.w_max:  # padding can make out longer than in
        in_len -= 1
    out_len = conv_out_len(in_len, k, stride, pad)
    w = _values(rng, k, p.dw, extreme)
    if mode is Mode.SRC:
        return PeOp.src(w, _sparse(rng, in_len, density, p.dw, extreme), stride, pad)
    if mode is Mode.MSRC:
        mask = (rng.random(in_len) < float(rng.choice([0.0, 0.3, 0.7, 1.0]))).astype(int)
        return PeOp.msrc(w, _sparse(rng, out_len, density, p.dw, extreme), mask, stride, pad)
    grad = _sparse(rng, out_len, float(rng.choice(DENSITIES)), p.dw, extreme)
    return PeOp.osrc(_sparse(rng, in_len, density, p.dw, extreme), grad, k, stride, pad)


def random_ops(seed: int, p: HwParams, modes: tuple[Mode, ...], n: int) -> list[PeOp]:
    rng = np.random.default_rng(seed)
    return [random_op(rng, p, modes[i % len(modes)]) for i in range(n)]


def directed_ops(p: HwParams) -> dict[str, list[PeOp]]:
    """The issue's directed cases, named, for every mode where they make sense."""
    lim = sat_limit(p.dw)
    w_len = min(p.w_max, 12)
    kmax = p.k_max
    empty = SparseRow(w_len)
    first = SparseRow(w_len, [0], [5])
    last_col = SparseRow(w_len, [w_len - 1], [-7])
    dense = SparseRow.from_dense(np.arange(1, w_len + 1) * (1 - 2 * (np.arange(w_len) % 2)), keep_zeros=True)
    maxed = SparseRow.from_dense(np.full(w_len, lim), keep_zeros=True)
    wk = [3, -1, 2, 5, -4, 1, 2, -3, 4, 1, -2, 3, 1, -1, 2, 2][:kmax]
    cases: dict[str, list[PeOp]] = {}

    def all_modes(name: str, row: SparseRow, k: int, stride: int = 1, pad: int = 0, weights=None, grad=None) -> None:
        ws = list(weights if weights is not None else wk[:k])
        out_len = conv_out_len(row.length, k, stride, pad)
        g = grad if grad is not None else SparseRow.from_dense(np.arange(1, out_len + 1), keep_zeros=True)
        dlen = conv_out_len(row.length, k, stride, pad)
        dO = SparseRow(dlen, row.offsets[row.offsets < dlen], row.values[row.offsets < dlen])
        cases[name] = [PeOp.src(ws, row, stride, pad),
                       PeOp.msrc(ws, dO, [1] * row.length, stride, pad),
                       PeOp.osrc(row, g, k, stride, pad)]

    k3 = min(3, kmax)
    all_modes("empty row", empty, k3)
    all_modes("one non-zero at the first column", first, k3, pad=min(1, k3 - 1))
    all_modes("one non-zero at the last column", last_col, k3, pad=min(1, k3 - 1))
    all_modes("fully dense row", dense, k3)
    all_modes("K = 1", dense, 1)
    all_modes("K = K_MAX", dense, kmax, pad=kmax - 1)
    all_modes("stride 2", dense, k3, stride=2, pad=min(1, k3 - 1))
    all_modes("stride 2, K = K_MAX", dense, kmax, stride=2, pad=kmax // 2)
    all_modes("maximum magnitude (saturation)", maxed, kmax, pad=kmax - 1, weights=[lim] * kmax,
              grad=SparseRow.from_dense(np.full(conv_out_len(w_len, kmax, 1, kmax - 1), -lim), keep_zeros=True))
    all_modes("empty dO row", dense, k3, grad=SparseRow(conv_out_len(w_len, k3, 1, 0)))
    dO = SparseRow.from_dense(np.arange(1, conv_out_len(w_len, k3, 1, 0) + 1), keep_zeros=True)
    cases["all outputs masked"] = [PeOp.msrc(wk[:k3], dO, [0] * w_len)]
    cases["every other output masked"] = [PeOp.msrc(wk[:k3], dO, [i % 2 for i in range(w_len)])]
    cases["refused cfg (out of range)"] = [
        PeOp.refused(mode=3, k=1, in_len=4, out_len=4),
        PeOp.refused(mode=0, k=0, in_len=4, out_len=4),
        PeOp.refused(mode=1, k=min(2, kmax), pad=min(2, kmax), in_len=4, out_len=4),
        PeOp.refused(mode=2, k=1, in_len=0, out_len=4),
        PeOp.refused(mode=0, k=1, in_len=4, out_len=p.w_max + 1),
    ] + ([PeOp.refused(mode=0, k=kmax + 1, in_len=4, out_len=4)] if kmax + 1 < (1 << p.k_w) else [])
    return cases
