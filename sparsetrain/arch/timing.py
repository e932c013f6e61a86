"""PE timing contract of docs/architecture.md section 6: the only source of PE cycle counts.

The performance model and the testbenches both call these functions; change them only
together with the doc and the RTL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from amaranth.lib.enum import IntEnum


class Mode(IntEnum, shape=2):
    """Row-operation mode of a PE op: the cfg / OP-word ``mode`` field (2 bits; 3 is refused)."""

    SRC = 0
    MSRC = 1
    OSRC = 2


CFG_CYCLES = 1    # the cfg beat
MASK_CYCLES = 1   # MSRC: the Port-3 mask beat
FINAL_CYCLES = 1  # the final (last) output beat


def pe_cycles(mode: Mode | int, k: int, n1: int, n2: int = 0) -> int:
    """Cycles of one PE operation with no stalls.

    n1, n2: entries on Port-1 and Port-2 (an empty row is one marker entry, so both >= 1
    where the port is used). For SRC and MSRC Port-2 carries the K weights and n2 is ignored.
    """
    mode = Mode(mode)
    if n1 < 1:
        raise ValueError(f"n1 = {n1} is out of range; allowed: >= 1 (an empty row is one marker entry)")
    if mode is Mode.SRC:
        return CFG_CYCLES + k + n1 + FINAL_CYCLES
    if mode is Mode.MSRC:
        return CFG_CYCLES + MASK_CYCLES + k + n1 + FINAL_CYCLES
    if n2 < 1:
        raise ValueError(f"n2 = {n2} is out of range; allowed: >= 1 (an empty row is one marker entry)")
    return CFG_CYCLES + n1 + n2 + FINAL_CYCLES


def entries(nnz: int) -> int:
    """Entries a row of nnz non-zeros occupies on a stream (the empty row has its marker)."""
    return max(1, int(nnz))


# ---- second generation (docs/architecture.md section 6.1): prefetch and look-ahead ------------

@dataclass(frozen=True)
class OpTiming:
    """One op as the schedule sees it (section 6.1).

    load: L, entries loaded on Port-2 before computing (SRC, MSRC: K; OSRC, refused: 0).
    compute: C, compute cycles (SRC: N1; MSRC: N1, or the look-ahead count; OSRC: N1 + N2, or
    with the OSRC window the look-ahead count; refused: 0). osrc: Port-2 is busy while the op computes. mask: MSRC (the first generation
    spends a separate cycle on the Port-3 mask beat).
    """

    load: int
    compute: int
    osrc: bool = False
    mask: bool = False


@dataclass(frozen=True)
class OpCycles:
    """Cycles of one op in a back-to-back sequence (cycle 1 = the first cfg accepted)."""

    cfg: int    # a_i: the cfg beat is accepted
    load: int   # e_i: first load cycle (prefetch); the op's first cycle after cfg (and mask) otherwise
    start: int  # s_i: first compute cycle
    final: int  # f_i: the final (last) beat

    @property
    def cycles(self) -> int:
        """cfg to final beat, inclusive."""
        return self.final - self.cfg + 1


def msrc_skips(offsets: Sequence[int], mask: Sequence[int], k: int, stride: int, pad: int) -> list[bool]:
    """Per Port-1 entry of an MSRC op: True when every one of its K target columns is masked
    off or out of range (a "skip" entry). The empty row's marker entry is never a skip."""
    out_len = len(mask)
    flags = []
    for y in offsets:
        lo = int(y) * stride - pad
        flags.append(not any(0 <= lo + j < out_len and mask[lo + j] for j in range(k)))
    return flags or [False]


def lookahead_cycles(skips: Sequence[bool], lookahead: int = 1) -> int:
    """Compute cycles of an MSRC op over its Port-1 entries (``skips`` as from msrc_skips).

    lookahead 1: one entry per cycle. lookahead 2: each cycle looks at the first two pending
    entries, discards leading skips among them and computes the first useful one if it is one
    of the two; so a cycle consumes two entries when the first is a skip and a second exists."""
    if lookahead not in (1, 2):
        raise ValueError(f"lookahead = {lookahead} is out of range; allowed: 1, 2")
    if lookahead == 1:
        return len(skips)
    i = cycles = 0
    while i < len(skips):
        cycles += 1
        i += 2 if skips[i] and i + 1 < len(skips) else 1
    return cycles


def osrc_skips(in_offsets: Sequence[int], do_offsets: Sequence[int], k: int, stride: int, pad: int) -> list[bool]:
    """The merge actions of an OSRC op in the order of section 6 (the dO entry at column x is
    loaded before the input entry at padded column u when x*S <= u), True = a skip: an input
    entry with no dO entry at x with 0 <= u - x*S <= K-1, a dO entry with no input entry at u in
    x*S .. x*S+K-1 (section 6.1, E). An empty row's marker is one action, never a skip, after
    the other row's actions (both empty: the dO marker first)."""
    us = [int(c) + pad for c in in_offsets]
    xs = [int(x) * stride for x in do_offsets]
    acts = [(u, 1, not any(0 <= u - xs_ <= k - 1 for xs_ in xs)) for u in us]
    acts += [(xs_, 0, not any(xs_ <= u <= xs_ + k - 1 for u in us)) for xs_ in xs]
    acts.sort(key=lambda a: (a[0], a[1]))
    flags = [a[2] for a in acts]
    if not xs:
        flags.append(False)
    if not us:
        flags.append(False)
    return flags


def op_timing(mode: Mode | int, k: int, n1: int, n2: int = 0, *, skips: Sequence[bool] | None = None,
              lookahead: int = 1, refused: bool = False, osrc_window: int = 1) -> OpTiming:
    """L and C of one op (section 6.1). ``skips``: the MSRC skip flags, needed for lookahead 2,
    or the OSRC merge actions' skip flags (``osrc_skips``), needed for osrc_window 2."""
    if refused:
        return OpTiming(0, 0)
    mode = Mode(mode)
    if n1 < 1:
        raise ValueError(f"n1 = {n1} is out of range; allowed: >= 1 (an empty row is one marker entry)")
    if mode is Mode.OSRC:
        if n2 < 1:
            raise ValueError(f"n2 = {n2} is out of range; allowed: >= 1 (an empty row is one marker entry)")
        if osrc_window not in (1, 2):
            raise ValueError(f"OSRC_WINDOW = {osrc_window} is out of range; allowed: 1 .. 2")
        if osrc_window == 1:
            return OpTiming(0, n1 + n2, osrc=True)
        if skips is None or len(skips) != n1 + n2:
            raise ValueError(f"skips = {skips!r} is out of range; allowed: one flag per merge action ({n1 + n2})")
        from .microarch import window_cycles  # (microarch imports this module: import at use)
        return OpTiming(0, window_cycles(skips, osrc_window), osrc=True)
    c = n1
    if mode is Mode.MSRC and lookahead != 1:
        if skips is None or len(skips) != n1:
            raise ValueError(f"skips = {skips!r} is out of range; allowed: one flag per Port-1 entry ({n1})")
        c = lookahead_cycles(skips, lookahead)
    return OpTiming(k, c, mask=mode is Mode.MSRC)


def schedule(ops: Sequence[OpTiming], prefetch: bool = False) -> list[OpCycles]:
    """Cycles of back-to-back ops with no stalls (cfg offered early, every port offering data,
    out.ready high): section 6 (prefetch off: one op at a time, the next cfg in the cycle after
    the final beat) or the section 6.1 recurrence (prefetch on)."""
    out: list[OpCycles] = []
    for op in ops:
        if not prefetch:
            a = out[-1].final + 1 if out else 1
            e = a + 1 + (MASK_CYCLES if op.mask and op.load else 0)
            s = e + op.load
            out.append(OpCycles(a, e, s, s + op.compute))
            continue
        if not out:
            a = 1
            e = a + 1
            s = e + op.load
        else:
            p = out[-1]
            prev = ops[len(out) - 1]
            # the cfg queue frees in the cycle its op moves on to the shadow stage (at e - 1)
            a = max(p.cfg + 1, p.load - 1)
            p2_free = p.start + prev.compute if prev.osrc else p.start
            e = max(a + 1, p.start, p2_free if op.load else 0)
            s = max(e + op.load, p.final + 1)
        out.append(OpCycles(a, e, s, s + op.compute))
    return out
