"""Row operations of a convolution layer (docs/architecture.md sections 8 and 10.1) and their cost.

Two views of the same decomposition:
* counts (how many ops each unit has, how long its rows are) for the analytic model;
* the exact op list of a layer from non-zero patterns, for golden tensors and the RTL check.

Op cycles come from ``sparsetrain.arch.timing.pe_cycles`` only. The contract is affine in the entry
counts, so ``CycleLaw`` reads its constant and slopes off ``pe_cycles`` (and checks that it
is affine), which lets the same law run on numpy arrays and on expected values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.timing import Mode, pe_cycles

STEPS = ("forward", "gta", "gtw")
STEP_MODE = {"forward": Mode.SRC, "gta": Mode.MSRC, "gtw": Mode.OSRC}


@dataclass(frozen=True)
class CycleLaw:
    """cycles = base + slope1 * (n1 - 1) + slope2 * (n2 - 1), read from pe_cycles."""

    base: int
    slope1: int
    slope2: int

    @classmethod
    def of(cls, mode: Mode, k: int) -> "CycleLaw":
        base = pe_cycles(mode, k, 1, 1)
        s1 = pe_cycles(mode, k, 2, 1) - base
        s2 = pe_cycles(mode, k, 1, 2) - base
        if pe_cycles(mode, k, 7, 5) != base + 6 * s1 + 4 * s2:  # the law below assumes this
            raise ValueError(f"pe_cycles({mode.name}, K={k}) is not affine in the entry counts")
        return cls(base, s1, s2)

    def __call__(self, n1, n2=1):
        return self.base + self.slope1 * (n1 - 1) + self.slope2 * (n2 - 1)


def tap_matrix(n_in: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """T[x, c] = number of kernel taps k with c = x*S + k - P (0 or 1), c a real input column."""
    t = np.zeros((n_out, n_in), dtype=np.int64)
    for x in range(n_out):
        for kk in range(k):
            c = x * stride + kk - pad
            if 0 <= c < n_in:
                t[x, c] += 1
    return t


def valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int) -> int:
    """Pairs (output index, kernel tap) that land on a real input index (not padding)."""
    x = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] - pad
    return int(np.count_nonzero((x >= 0) & (x < n_in)))


def taps_per_output(n_in: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """For each output row y: how many kernel rows kr read a real input row (forward ops per channel)."""
    x = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] - pad
    return np.count_nonzero((x >= 0) & (x < n_in), axis=1)


def taps_per_input(n_in: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """For each input row r: how many (y, kr) pairs have y*S + kr - P = r (GTA ops per filter)."""
    x = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] - pad
    x = x[(x >= 0) & (x < n_in)]
    return np.bincount(x, minlength=n_in)


def taps_per_kernel_row(n_in: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """For each kernel row kr: how many output rows y read a real input row (GTW ops per (f, c))."""
    x = np.arange(n_out)[:, None] * stride + np.arange(k)[None, :] - pad
    return np.count_nonzero((x >= 0) & (x < n_in), axis=0)


@dataclass
class Unit:
    """One result row of section 10.1: its ops (cycles and work) and the row the PPU finishes."""

    key: tuple
    cycles: np.ndarray   # per op, in issue order
    n1: np.ndarray       # Port-1 entries per op
    n2: np.ndarray       # Port-2 entries per op (K weights for SRC/MSRC)
    macs: np.ndarray     # multiplies per op
    row_len: int         # length of the result row (K for GTW)
    out_nnz: int         # non-zeros the PPU writes back (compressed; dense length for GTW)


def conv_shape(shape, batch: int = 1):
    """The shared decomposition's geometry (golden.bitexact.rowconv.ConvShape) of a LayerShape."""
    from ..golden.bitexact.rowconv import ConvShape
    return ConvShape(batch, shape.c_in, shape.c_out, shape.h_in, shape.w_in, shape.k, shape.stride,
                     shape.pad, shape.groups)


def exact_units(step: str, shape, nz_in: np.ndarray, nz_grad: np.ndarray,
                nz_out: np.ndarray | None = None, mask: np.ndarray | None = None,
                live_rows: np.ndarray | None = None) -> list[Unit]:
    """The units of one step in issue order, from boolean non-zero patterns.

    The op list is golden.bitexact.rowconv.layer_row_ops (the one decomposition of section 8); its
    consecutive ops that accumulate into the same row form a unit (section 10.1).
    nz_in: (N, C, H_in, W_in) non-zeros of I; nz_grad: (N, F, H_out, W_out) of dO (pruned);
    mask: (N, C, H_in, W_in) wanted dI columns (default: nz_in, the ReLU mask);
    nz_out: non-zeros of the written result (O for forward, dI pruned for GTA); default dense.
    live_rows: (F, C/g, K) kernel rows the core runs (golden.training.campfire.weight_row_ops, the
    compiler's rule): all-zero rows for Forward / GTA, mask-pruned rows for GTW; default all.
    """
    from ..golden.training.campfire import weight_row_ops
    from ..arch.steps import Step
    from ..golden.bitexact.rowconv import layer_row_ops_tuple
    if step not in STEPS:
        raise ValueError(f"step = {step!r} is out of range; allowed: {', '.join(STEPS)}")
    s = shape
    nz_in = np.asarray(nz_in, dtype=bool)
    nz_grad = np.asarray(nz_grad, dtype=bool)
    n_batch = nz_in.shape[0]
    want_in = (s.c_in, s.h_in, s.w_in)
    want_gr = (s.c_out, s.h_out, s.w_out)
    if nz_in.shape[1:] != want_in or nz_grad.shape[1:] != want_gr or nz_grad.shape[0] != n_batch:
        raise ValueError(f"{s.name}: pattern shapes {nz_in.shape}, {nz_grad.shape} do not match the layer "
                         f"(N, {want_in}) and (N, {want_gr})")
    mask = nz_in if mask is None else np.asarray(mask, dtype=bool)
    k = s.k
    ent_in = np.maximum(1, nz_in.sum(axis=3))     # (N, C, H_in) entries per input row
    ent_gr = np.maximum(1, nz_grad.sum(axis=3))   # (N, F, H_out)
    tw = tap_matrix(s.w_in, s.w_out, k, s.stride, s.pad)    # (W_out, W_in)
    law = CycleLaw.of(STEP_MODE[step], k)
    lanes = tw.sum(axis=0)                        # SRC products of one input column
    macs_src = nz_in.astype(np.int64) @ lanes     # (N, C, H_in)
    wanted = mask.astype(np.int64) @ tw.T         # (N, C, H_in, W_out): wanted targets per dO column
    gi, gg = nz_in.astype(np.int64), nz_grad.astype(np.int64)

    def unit_key(op) -> tuple:
        if step == "forward":
            return (op.n, op.f, op.out_row)
        if step == "gta":
            return (op.n, op.c, op.in_row)
        return (op.f, op.c, op.kr)

    units: list[Unit] = []
    groups: dict[tuple, list] = {}
    for op in layer_row_ops_tuple(conv_shape(s, n_batch), Step(step)):
        groups.setdefault(unit_key(op), []).append(op)  # ops of a unit are consecutive; dict keeps order
    cs = conv_shape(s, n_batch)
    for key, ops in groups.items():
        ops = weight_row_ops(step, ops, live_rows, cs.weight_channel)
        if not ops:
            continue
        if step == "forward":
            n1 = np.array([ent_in[o.n, o.c, o.in_row] for o in ops], dtype=np.int64)
            n2 = np.full(len(ops), k, dtype=np.int64)
            macs = np.array([macs_src[o.n, o.c, o.in_row] for o in ops], dtype=np.int64)
            n, f, y = key
            row_len = s.w_out
            out = row_len if nz_out is None else int(np.count_nonzero(nz_out[n, f, y]))
        elif step == "gta":
            n1 = np.array([ent_gr[o.n, o.f, o.out_row] for o in ops], dtype=np.int64)
            n2 = np.full(len(ops), k, dtype=np.int64)
            macs = np.array([int(gg[o.n, o.f, o.out_row] @ wanted[o.n, o.c, o.in_row]) for o in ops],
                            dtype=np.int64)
            n, c, r = key
            row_len = s.w_in
            out = row_len if nz_out is None else int(np.count_nonzero(nz_out[n, c, r]))
        else:
            n1 = np.array([ent_in[o.n, o.c, o.in_row] for o in ops], dtype=np.int64)
            n2 = np.array([ent_gr[o.n, o.f, o.out_row] for o in ops], dtype=np.int64)
            macs = np.array([int(gg[o.n, o.f, o.out_row] @ tw @ gi[o.n, o.c, o.in_row]) for o in ops],
                            dtype=np.int64)
            row_len = out = k
        units.append(Unit((step, *key), law(n1, n2), n1, n2, macs, row_len, out))
    return units
