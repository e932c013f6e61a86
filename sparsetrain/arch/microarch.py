"""Second-generation microarchitecture switches (issue 15) and the PE timing rules they change.

``MicroArch`` holds the five switches of docs/architecture.md section 12; its default is the
first generation exactly. This module owns the rules that the event-level schedule
(``perf.schedule2``) and the closed form (``perf.analytic2``) both use:

* ``op_times``: the PE recurrence of change A (section 12.1), one op at a time;
* ``window_cycles``: the look-ahead rule of B (MSRC, Port-1 entries) and E (OSRC, merge actions);
* ``expected_window_cycles``: its expectation for i.i.d. skip flags (closed form only).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .timing import Mode

MAX_WINDOW = 8
# The group's issue queue with a finite op reader (section 12.4, hw/dispatch.py): ops examined
# and kept but not yet taken by a PE; the reader waits while it has no room for a block.
ISSUE_QUEUE = 4


@dataclass(frozen=True)
class MicroArch:
    """Switches of the second generation; the default is the first generation exactly.

    prefetch (A): shadow Reg-1 + one-deep cfg/mask queue (section 12.1).
    lookahead (B): Port-1 entries an MSRC compute cycle examines (1 = off, 2 = the paper's PE; 12.5).
    pingpong (C): two PPU accumulators, a unit's finish overlaps the next unit (12.3).
    skip_empty (D): ops whose sparse operand row is empty are not issued (12.4).
    op_scan: OP words the op reader examines per cycle (0 = unlimited: D's skips cost nothing).
    osrc_window (E): merge actions an OSRC cycle examines (1 = off; 12.6).
    unit_rate (F): UNITs the controller hands out per cycle (0 = unlimited, the section 10
        contract; the RTL's ``UNIT_RATE``, 1 in the first generation; 12.9).
    """

    prefetch: bool = False
    lookahead: int = 1
    pingpong: bool = False
    skip_empty: bool = False
    osrc_window: int = 1
    op_scan: int = 0        # D: OP words the group's op reader examines per cycle (0 = unlimited, 12.4)
    unit_rate: int = 0      # F: UNITs the controller hands out per cycle (0 = unlimited, 12.9)

    def __post_init__(self) -> None:
        if not isinstance(self.op_scan, (int, np.integer)) or isinstance(self.op_scan, bool) or \
                not 0 <= self.op_scan <= 64:
            raise ValueError(f"op_scan = {self.op_scan!r} is out of range; allowed: 0 (unlimited) .. 64")
        if not isinstance(self.unit_rate, (int, np.integer)) or isinstance(self.unit_rate, bool) or \
                not 0 <= self.unit_rate <= 64:
            raise ValueError(f"unit_rate = {self.unit_rate!r} is out of range; allowed: 0 (unlimited) .. 64")
        for nm in ("lookahead", "osrc_window"):
            v = getattr(self, nm)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= MAX_WINDOW:
                raise ValueError(f"{nm} = {v!r} is out of range; allowed: 1 .. {MAX_WINDOW} (1 = off)")

    @property
    def is_gen1(self) -> bool:
        return self == MicroArch()

    def dense_baseline(self) -> "MicroArch":
        """The baseline gets every change that does not depend on zeros: A and C (not B, D, E)."""
        return MicroArch(prefetch=self.prefetch, pingpong=self.pingpong, op_scan=self.op_scan,
                         unit_rate=self.unit_rate)

    @property
    def name(self) -> str:
        letters = [c for c, on in (("A", self.prefetch), ("B", self.lookahead > 1), ("C", self.pingpong),
                                   ("D", self.skip_empty), ("E", self.osrc_window > 1)) if on]
        s = "+".join(letters) or "gen1"
        s = s.replace("B", f"B{self.lookahead}" if self.lookahead > 2 else "B").replace(
            "E", f"E{self.osrc_window}" if self.osrc_window > 2 else "E")
        return s + (f" (op reader {self.op_scan}/cycle)" if self.op_scan else "") + \
            (f" ({self.unit_rate} units/cycle)" if self.unit_rate else "")

    @classmethod
    def parse(cls, text: str) -> "MicroArch":
        """'gen1', 'gen2' (= A+B+C+D, unlimited op reader and unit rate), 'built' (= A+B+C+D4+U8, the RTL's set), or
        letters joined by '+', e.g. 'A+D+E';
        B and E take an optional window after the letter (default 2), e.g. 'A+B+C+D+E4'; D an optional
        op-reader rate (OP words per cycle; default unlimited), e.g. 'A+C+D2'; U<n> the controller's
        unit rate (UNITs per cycle, 12.9; default unlimited), e.g. 'A+B+C+D4+U4'."""
        t = text.strip().upper()
        if t in PRESETS:
            return PRESETS[t]
        kw: dict = {}
        for part in filter(None, t.replace(",", "+").split("+")):
            letter, num = part[:1], part[1:]
            if letter not in "ABCDEU" or not letter or (num and (letter not in "BDEU" or not num.isdigit())) or \
                    (letter == "U" and not num):
                raise ValueError(f"microarch = {text!r} is out of range; allowed: gen1, gen2, built, or letters A..E "
                                 f"joined by '+' (e.g. A+D; B and E may take a window, e.g. E4, D an op-reader rate, "
                                 f"e.g. D2) and U<n> a unit rate (e.g. U4)")
            if letter == "A":
                kw["prefetch"] = True
            elif letter == "B":
                kw["lookahead"] = int(num or 2)
            elif letter == "C":
                kw["pingpong"] = True
            elif letter == "D":
                kw["skip_empty"] = True
                if num:
                    kw["op_scan"] = int(num)
            elif letter == "U":
                kw["unit_rate"] = int(num)
            else:
                kw["osrc_window"] = int(num or 2)
        return cls(**kw)

    def with_(self, **kw) -> "MicroArch":
        return replace(self, **kw)


GEN1 = MicroArch()
GEN2 = MicroArch(prefetch=True, lookahead=2, pingpong=True, skip_empty=True)  # A+B+C+D, the contract's unlimited op reader
# The set the RTL core is built with: A+B+C+D+E with the RTL's op reader (OP_SCAN = 4 OP words per
# cycle, section 12.4), E's window of 2 (OSRC_WINDOW, 12.6) and the controller's unit rate
# (UNIT_RATE units per cycle, 12.9): at G = 56, 3.13x average and 4.56x on AlexNet CIFAR-10; without
# E 8 units per cycle keep the 2.7x average (2.72x) but no rate up to 8 reaches 4.5x on AlexNet
# CIFAR-10 with the op reader of 4 (docs/performance.md). `sparsetrain perf` and `make perf`
# default to it; the check's simulated core is it (`check.simconfig.SIM_PARAMS`); `--microarch
# gen1` is the first design.
BUILT_OP_SCAN = 4
BUILT_OSRC_WINDOW = 2
BUILT_UNIT_RATE = 8
BUILT = GEN2.with_(op_scan=BUILT_OP_SCAN, osrc_window=BUILT_OSRC_WINDOW, unit_rate=BUILT_UNIT_RATE)
PRESETS = {"GEN1": GEN1, "GEN2": GEN2, "BUILT": BUILT}


def of_params(params) -> MicroArch:
    """The switches a core or group was elaborated with (``CoreParams`` fields ``prefetch``,
    ``lookahead``, ``pingpong``, ``skip_empty``, ``op_scan``, ``osrc_window``, ``unit_rate``); a parameter set without a field is
    the first generation in that switch (the elaboration defaults). A parameter set that says
    its switches itself (``params.microarch()``) is taken at its word."""
    if callable(getattr(params, "microarch", None)):
        return params.microarch()
    skip = bool(getattr(params, "skip_empty", False))
    return MicroArch(prefetch=bool(getattr(params, "prefetch", False)), lookahead=int(getattr(params, "lookahead", 1)),
                     pingpong=bool(getattr(params, "pingpong", False)), skip_empty=skip,
                     op_scan=int(getattr(params, "op_scan", 0)) if skip else 0,
                     osrc_window=int(getattr(params, "osrc_window", 1)), unit_rate=int(getattr(params, "unit_rate", 0)))
# the what-if table of docs/performance.md, in order
WHAT_IF = ("gen1", "A", "D", "A+D", "A+C+D", "A+B+C+D", "A+B+C+D+E")


@dataclass(frozen=True)
class OpTimes:
    """Cycles of one op on its PE (absolute cycle numbers; section 12.1)."""

    a: int   # cfg accepted
    e: int   # first load cycle (Port-2 weights; the MSRC mask with it under A)
    s: int   # first compute cycle (Port-1 entries / OSRC merge actions)
    f: int   # final (last) beat
    p2: int  # first cycle Port-2 is no longer used by this op
    prefetch: bool

    @property
    def queue_free(self) -> int:
        """First cycle the PE can accept the next cfg. With A: the queue frees in the cycle its op
        moves on to S at the end of it (the cycle before this op's first load, e - 1), and one cfg
        is accepted per cycle (section 6.1: a_i = max(a_{i-1} + 1, e_{i-1} - 1)). Without A: the
        cycle after this op's final beat."""
        return max(self.a + 1, self.e - 1) if self.prefetch else self.f + 1

    @property
    def dispatch_free(self) -> int:
        """First cycle a group hands the PE its next cfg (section 12.2). With A: max(a + 2, e),
        one cycle after the queue frees: the PE's cfg.ready depends on cfg.valid (the queue), so
        the dispatcher offers a cfg only to a PE that was ready in the previous cycle and got
        none then. Without A: the cycle after this op's final beat (= ``queue_free``)."""
        return max(self.a + 2, self.e) if self.prefetch else self.f + 1


def op_times(prev: OpTimes | None, a: int, mode: Mode | int, load: int, compute: int,
             prefetch: bool) -> OpTimes:
    """The PE recurrence of section 12.1 (change A) for one op, no stalls.

    prev: the same PE's previous op (None: the PE has had none); a: the cycle the cfg is
    accepted (the caller picks it >= prev.queue_free); load: L (K weights on Port-2 for
    SRC/MSRC, 0 for OSRC); compute: C (Port-1 cycles for SRC/MSRC, merge actions for OSRC).
    Without prefetch this is the first generation: cfg, (MSRC: mask), L loads, C, final beat.
    """
    mode = Mode(mode)
    if prev is not None and a < prev.queue_free:
        raise ValueError(f"a = {a} is out of range; allowed: >= {prev.queue_free} (the PE's queue is full)")
    if not prefetch:
        e = a + 1 + (1 if mode is Mode.MSRC else 0)   # the mask beat is its own cycle
        s = e + load
    else:
        e = a + 1
        if prev is not None:
            e = max(e, prev.s)                        # S frees when op i-1 starts computing
            if load > 0:
                e = max(e, prev.p2)                   # Port-2 still streaming op i-1's dO (OSRC)
        s = e + load
        if prev is not None:
            s = max(s, prev.f + 1)                    # Reg-2 / the output after op i-1's final beat
    f = s + compute
    p2 = s + compute if mode is Mode.OSRC else s
    return OpTimes(a, e, s, f, p2, prefetch)


def window_cycles(skip: Sequence[bool], window: int) -> int:
    """Cycles to consume a sequence of entries (B) or merge actions (E) with look-ahead ``window``.

    Each cycle looks at the first ``window`` pending items, discards the leading skip items
    among them and performs the first useful one if it is among them; so a cycle consumes 1 to
    ``window`` items. window = 1: one item per cycle (the first generation).
    """
    n, i, cycles = len(skip), 0, 0
    while i < n:
        lim = min(n, i + window)
        j = i
        while j < lim and skip[j]:
            j += 1
        i = j + 1 if j < lim else lim
        cycles += 1
    return cycles


def expected_window_cycles(n_max: int, q: float, window: int) -> np.ndarray:
    """E[window_cycles] of n = 0 .. n_max items, each a skip item independently with probability q."""
    e = np.zeros(n_max + 1)
    for n in range(1, n_max + 1):
        m = min(window, n)
        acc = 1.0
        for j in range(1, m):                       # item j of the window is the first useful one
            acc += q ** (j - 1) * (1.0 - q) * e[n - j]
        acc += q ** (m - 1) * e[n - m]              # the m-th item ends the cycle (useful or not)
        e[n] = acc
    return e
