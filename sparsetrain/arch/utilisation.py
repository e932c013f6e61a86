"""Useful PE-cycles of a row operation (docs/architecture.md section 12.7): the one definition.

A *useful* cycle is one in which a PE consumes a non-zero Port-1 operand that yields at least one
product:

* SRC: a non-zero input entry at a column that reaches at least one output column;
* MSRC: a non-zero dO entry with at least one wanted (mask bit set), in-range dI target column;
* OSRC: a non-zero input entry with at least one non-zero dO partner in its window.

The performance model (``perf.ops2``, from whole-layer non-zero patterns) and the check of a
program the RTL ran (``golden.bitexact.utilisation``, from the program's operand rows) both count
with ``useful_columns``. Columns are in layer terms: ``w_in`` input (I / dI) columns, ``w_out``
output (O / dO) columns, whatever port a row arrives on.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .timing import Mode


@lru_cache(maxsize=512)
def tap_matrix(w_in: int, w_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """T[x, c] = True when input column c = x*S + kk - P for a tap kk in 0 .. K-1 (read-only)."""
    x = np.arange(w_out)[:, None]
    c = np.arange(w_in)[None, :]
    d = c - x * stride + pad
    t = (d >= 0) & (d < k)
    t.flags.writeable = False
    return t


def useful_columns(mode: Mode | int, k: int, stride: int, pad: int, w_in: int, w_out: int,
                   other: np.ndarray | None = None) -> np.ndarray:
    """Columns of the op's Port-1 row at which a non-zero entry is a useful cycle.

    SRC: over the ``w_in`` input columns (``other`` unused); MSRC: over the ``w_out`` dO columns,
    ``other`` the dI mask (..., w_in); OSRC: over the ``w_in`` input columns, ``other`` the dO
    non-zeros (..., w_out). Leading dimensions of ``other`` broadcast (whole layers at once).
    """
    mode = Mode(mode)
    t = tap_matrix(w_in, w_out, k, stride, pad)
    if mode is Mode.SRC:
        return t.any(axis=0)
    if other is None:
        raise ValueError(f"other = None is out of range for {mode.name}; allowed: the "
                         f"{'dI mask' if mode is Mode.MSRC else 'dO non-zeros'} of the op")
    o = np.asarray(other, dtype=bool)
    want = w_in if mode is Mode.MSRC else w_out
    if o.shape[-1] != want:
        raise ValueError(f"other has {o.shape[-1]} columns; allowed: {want} for {mode.name} "
                         f"(w_in = {w_in}, w_out = {w_out})")
    ti = t.astype(np.int32)
    if mode is Mode.MSRC:
        return (o.astype(np.int32) @ ti.T) > 0     # dO column x has a wanted target
    return (o.astype(np.int32) @ ti) > 0           # input column c has a non-zero dO partner


def useful_cycles(mode: Mode | int, k: int, stride: int, pad: int, w_in: int, w_out: int,
                  port1: np.ndarray, other: np.ndarray | None = None) -> int:
    """Useful cycles of one op: non-zero Port-1 entries (``port1``, a boolean row: SRC and OSRC over
    ``w_in``, MSRC over ``w_out``) at useful columns (``useful_columns``)."""
    p1 = np.asarray(port1, dtype=bool)
    cols = useful_columns(mode, k, stride, pad, w_in, w_out, other)
    if p1.shape != cols.shape:
        raise ValueError(f"port1 has shape {p1.shape}; allowed: {cols.shape} for {Mode(mode).name}")
    return int(np.count_nonzero(p1 & cols))
