"""Per-op quantities of the second generation from exact non-zero patterns (section 12).

For every op of every unit (``decompose.exact_units``): whether it is issued (D), its load
length L and compute length C (A, with B / E look-ahead), and its useful cycles (cycles in
which the PE consumes a non-zero operand that yields at least one product, section 12.7).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.microarch import MicroArch, window_cycles
from ..arch.utilisation import useful_columns
from ..arch.timing import Mode
from ..arch.steps import Step
from .decompose import Unit, tap_matrix


@dataclass
class UnitOps:
    """Second-generation view of one unit's ops, in issue order (all ops, issued or not)."""

    issued: np.ndarray   # bool: D keeps the op (always True without D)
    load: np.ndarray     # L: Port-2 weight loads (K for SRC/MSRC, 0 for OSRC)
    compute: np.ndarray  # C: compute cycles (Port-1 entries / merge actions, after look-ahead)
    useful: np.ndarray   # useful cycles of the op (0 for a skipped op's data too: it has no product)
    mode: Mode


def _skip_flags_msrc(g_row: np.ndarray, wanted_row: np.ndarray) -> list[bool]:
    """Port-1 entries of an MSRC op in order: True = every target column masked off / out of range."""
    ys = np.flatnonzero(g_row)
    if ys.size == 0:
        return [False]  # the empty-row marker: consumed in one cycle
    return (wanted_row[ys] == 0).tolist()


def _merge_skip_flags(i_row: np.ndarray, g_row: np.ndarray, tw: np.ndarray, stride: int, pad: int) -> list[bool]:
    """OSRC merge actions in the order of section 6 (dO load when x*S <= u, else input consume),
    True = the action has no partner (an input entry with no non-zero dO in its window, a dO
    entry with no non-zero input in its window). Empty-row markers are useful (one action)."""
    cs, xs = np.flatnonzero(i_row), np.flatnonzero(g_row)
    i_has = (g_row.astype(np.int64) @ tw)[cs] > 0 if cs.size else np.zeros(0, bool)
    g_has = (tw @ i_row.astype(np.int64))[xs] > 0 if xs.size else np.zeros(0, bool)
    acts = [(int(c) + pad, 1, not bool(h)) for c, h in zip(cs, i_has)]
    acts += [(int(x) * stride, 0, not bool(h)) for x, h in zip(xs, g_has)]
    acts.sort(key=lambda t: (t[0], t[1]))
    flags = [t[2] for t in acts]
    if cs.size == 0:
        flags.append(False)
    if xs.size == 0:
        flags.append(False)
    return flags


def unit_ops(step: str, shape, units: list[Unit], nz_in: np.ndarray, nz_grad: np.ndarray,
             mask: np.ndarray | None, micro: MicroArch, useful_from: dict | None = None) -> list[UnitOps]:
    """The UnitOps of every unit (same order). ``useful_from``: patterns ('in', 'grad', 'mask')
    to count useful cycles on when they differ from the ones that set the cycles (the dense
    baseline runs dense rows but does the useful work of the real data)."""
    s = shape
    nz_in, nz_grad = np.asarray(nz_in, bool), np.asarray(nz_grad, bool)
    mask = nz_in if mask is None else np.asarray(mask, bool)
    mode = Step(step).mode
    tw = tap_matrix(s.w_in, s.w_out, s.k, s.stride, s.pad)       # (W_out, W_in)
    wanted = mask.astype(np.int64) @ tw.T                        # (N, C, H_in, W_out)
    u_in, u_gr, u_mask = nz_in, nz_grad, mask
    if useful_from is not None:
        u_in, u_gr = np.asarray(useful_from["in"], bool), np.asarray(useful_from["grad"], bool)
        um = useful_from.get("mask")
        u_mask = u_in if um is None else np.asarray(um, bool)
    nnz_in, nnz_gr = nz_in.sum(axis=3), nz_grad.sum(axis=3)
    # useful cycles (section 12.7): the one definition, arch.utilisation.useful_columns
    geo = (s.k, s.stride, s.pad, s.w_in, s.w_out)
    if mode is Mode.SRC:
        u_nnz_in = (u_in & useful_columns(mode, *geo)).sum(axis=3)             # (N, C, H_in)
    elif mode is Mode.MSRC:
        u_want = useful_columns(mode, *geo, other=u_mask)                       # (N, C, H_in, W_out)
    else:
        u_partner = useful_columns(mode, *geo, other=u_gr)                      # (N, F, H_out, W_in)
    out = []
    for u in units:
        n_ops = len(u.ops)
        issued = np.ones(n_ops, bool)
        load = np.full(n_ops, 0 if mode is Mode.OSRC else s.k, np.int64)
        compute = np.zeros(n_ops, np.int64)
        useful = np.zeros(n_ops, np.int64)
        for i, o in enumerate(u.ops):
            if mode is Mode.SRC:
                nnz = int(nnz_in[o.n, o.c, o.in_row])
                issued[i] = nnz > 0
                compute[i] = max(1, nnz)
                useful[i] = int(u_nnz_in[o.n, o.c, o.in_row])
            elif mode is Mode.MSRC:
                nnz = int(nnz_gr[o.n, o.f, o.out_row])
                issued[i] = nnz > 0
                if micro.lookahead > 1:
                    compute[i] = window_cycles(_skip_flags_msrc(nz_grad[o.n, o.f, o.out_row],
                                                                wanted[o.n, o.c, o.in_row]), micro.lookahead)
                else:
                    compute[i] = max(1, nnz)
                useful[i] = int(np.count_nonzero(u_gr[o.n, o.f, o.out_row] & u_want[o.n, o.c, o.in_row]))
            else:
                i_row, g_row = nz_in[o.n, o.c, o.in_row], nz_grad[o.n, o.f, o.out_row]
                n1, n2 = int(nnz_in[o.n, o.c, o.in_row]), int(nnz_gr[o.n, o.f, o.out_row])
                issued[i] = n1 > 0 and n2 > 0
                if micro.osrc_window > 1:
                    compute[i] = window_cycles(_merge_skip_flags(i_row, g_row, tw, s.stride, s.pad),
                                               micro.osrc_window)
                else:
                    compute[i] = max(1, n1) + max(1, n2)
                useful[i] = int(np.count_nonzero(u_in[o.n, o.c, o.in_row] & u_partner[o.n, o.f, o.out_row]))
        if not micro.skip_empty:
            issued[:] = True
        out.append(UnitOps(issued, load, compute, useful, mode))
    return out


def total_useful(rules: list[UnitOps]) -> int:
    return int(sum(int(r.useful.sum()) for r in rules))
