"""A group's timing unit by unit, as the RTL runs it (docs/architecture.md sections 10.2, 11.4, 12.2-12.4).

One rule for the contract and the RTL: the group's dispatcher (``hw/dispatch.py``: ops to PEs
through their cfg queues, D's op reader with its issue queue) and unit sequencer (``hw/group.py``:
the PPU's ACCUM / FINISH, the ping-pong accumulators of C), cycle for cycle. The section 12
schedule (``arch.schedule2.schedule_units2``, the performance model's event level) and the
bit-accurate core model (``golden.bitexact.core_model``, whose ``cycles`` the RTL's counter
equals) both take a unit's end from here, so the contract equals the RTL by construction. The step
level, which group takes which unit when (the controller's hand-out, 12.9), is ``UnitHandout``,
also used by both.

A unit's ops come in issue order, issued or not, either as objects with ``issued``, ``mode``,
``load``, ``compute`` (``golden.bitexact.core_model.OpInfo``) or as one object with arrays
``issued``, ``load``, ``compute`` and one ``mode`` (``perf.ops2.UnitOps``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .microarch import ISSUE_QUEUE, MicroArch, OpTimes, op_times
from .ppu import N_PE, PPU_LAT
from .timing import Mode


def _micro(p) -> MicroArch:
    """A ``MicroArch``, or the switches of a parameter set that has them (``CoreParams.microarch()``)."""
    return p if isinstance(p, MicroArch) else p.microarch()


def op_columns(ops) -> tuple[list[bool], list[int], list[int], list]:
    """(issued, load, compute, mode) of every op of a unit, in issue order."""
    if hasattr(ops, "issued") and hasattr(ops, "compute"):           # arrays and one mode (perf.ops2.UnitOps)
        n = len(ops.issued)
        return ([bool(x) for x in ops.issued], [int(x) for x in ops.load], [int(x) for x in ops.compute],
                [ops.mode] * n)
    return ([bool(o.issued) for o in ops], [int(o.load) for o in ops], [int(o.compute) for o in ops],
            [o.mode for o in ops])


@dataclass
class PEState:
    """What the dispatcher knows of a group's PEs: each PE's last op (``OpTimes``) and the cycle
    of that op's final beat (None: the PE has had no op)."""

    prev: list = field(default_factory=lambda: [None] * N_PE)
    last_f: list = field(default_factory=lambda: [None] * N_PE)
    unit_f: int | None = None   # the last final beat of the ops the last ``dispatch_ops`` issued
    busy: int = 0               # busy PE-cycles (12.7): per PE, cycles from a cfg to its op's final beat, once
    unit_a: list = field(default_factory=list)  # cfg cycle of every op the last ``dispatch_ops`` issued


def dispatch_ops(ops, t0: int, state: PEState, p) -> int:
    """The group's dispatcher (hw/dispatch.py) for a unit taken at ``t0`` on PEs in ``state``
    (updated); ``p``: a ``MicroArch`` or a ``CoreParams``. An op goes, in order, to the lowest PE
    that can take a cfg in the earliest cycle (from ``t0 + 1`` and its previous op's
    ``dispatch_free``, 12.2). Without SKIP_EMPTY every op can be taken from cycle ``t0 + 1``.
    With it the op reader (12.4) examines block b (``op_scan`` OP words) in cycle ``t0 + 2 + b``
    at the earliest, drops the ops whose row is empty, offers the issue queue's ops and then the
    block's kept ones to the PEs that take a cfg in that cycle, and moves on to the next block
    only when the queue (``ISSUE_QUEUE`` ops) has room for what the PEs do not take. An
    unlimited reader (``op_scan = 0``, the contract's ideal, not buildable) examines every word
    in ``t0 + 1`` with no queue limit. Returns the cycle in which every op has been issued or
    skipped (``all_issued``, a_last of 12.3); ``t0`` for a unit with no issued op and no reader."""
    issued, load, compute, modes = op_columns(ops)
    return _dispatch(issued, load, compute, modes, t0, state, _micro(p))


def _dispatch(issued: list[bool], load: list[int], compute: list[int], modes: list, t0: int, state: PEState,
              micro: MicroArch) -> int:
    n = len(issued)
    state.unit_f, state.unit_a = None, []
    if n == 0:
        return t0
    prefetch = micro.prefetch
    prev = state.prev
    avail = [t0 + 1 if q is None else max(t0 + 1, q.dispatch_free) for q in prev]  # first cfg cycle

    def issue(i: int, j: int, a: int) -> None:
        t = op_times(prev[j], a, modes[i], load[i], compute[i], prefetch)
        # a PE holds up to three ops at once (A, S, Q): count each of its cycles once
        before = state.last_f[j]
        state.busy += t.f - (t.a if before is None else max(t.a, before + 1)) + 1
        prev[j], avail[j], state.last_f[j] = t, t.dispatch_free, t.f
        state.unit_f = t.f if state.unit_f is None else max(state.unit_f, t.f)
        state.unit_a.append(a)

    scan = micro.op_scan if micro.skip_empty else 0
    if not scan:
        # every op offered from t0 + 1 in order (no D: every op is issued; D with an unlimited
        # reader: the skipped ones cost nothing)
        t_all = t0 + 1 if not micro.skip_empty else t0
        lo = t0 + 1
        for i in range(n):
            if not issued[i]:
                continue
            a, j = min((max(avail[k], lo), k) for k in range(N_PE))
            issue(i, j, a)
            t_all = lo = a
        return t_all
    nb = -(-n // scan)
    t, bi, queue = t0 + 2, 0, []
    while True:
        ready = [j for j in range(N_PE) if avail[j] <= t]
        accept, kept = False, []
        if bi < nb:
            kept = [i for i in range(bi * scan, min(n, (bi + 1) * scan)) if issued[i]]
            total = len(queue) + len(kept)
            accept = total - min(len(ready), total) <= ISSUE_QUEUE
        cands = queue + kept if accept else queue
        taken = min(len(ready), len(cands))
        for r in range(taken):
            issue(cands[r], ready[r], t)
        queue = cands[taken:]
        bi += accept
        if bi == nb and not queue:
            return t
        if taken == 0 and not accept:
            # nothing moves until another PE can take a cfg: go straight to that cycle
            later = [avail[j] for j in range(N_PE) if avail[j] > t]
            if not later:
                raise ValueError(f"op_scan = {scan} is out of range for this unit; allowed: a block's kept ops "
                                 f"at most ISSUE_QUEUE + N_PE = {ISSUE_QUEUE + N_PE} (the reader would wait forever)")
            t = min(later)
        else:
            t += 1


def _closing(state: PEState, n: int, t0: int, t_all: int, bias_en: bool, micro: MicroArch) -> int:
    """Without C: the cycle the unit's ACCUM ends (12.4, RTL paragraph). It waits for a ``last`` beat
    from each of the unit's lowest ``min(n_ops, 3)`` PEs: its final op's final beat if that comes
    once every op is issued (``t_all``), else an empty beat then, in the PPU's ACCUM state at the
    earliest (from ``t0 + 2``, ``t0 + 3`` after a START). The unlimited reader (``op_scan = 0``
    with D) keeps the ideal of 12.4: skipped ops cost nothing, not even that ACCUM start."""
    ideal = micro.skip_empty and not micro.op_scan
    t_accum = t_all if ideal else t0 + 2 + (1 if bias_en else 0)
    closing = [f if f is not None and f >= t_all else max(t_all, t_accum) for f in state.last_f[:min(n, N_PE)]]
    return max(closing)


def unit_time(ops: Sequence, length: int, bias_en: bool, p, state: PEState | None = None,
              finish: int | None = None) -> int:
    """Cycles from a unit's dispatch (cycle 0) to its end, the cycle its last result entry is
    written, on a group whose PEs are idle (without C; ``state``: a fresh ``PEState``, updated):
    the group's dispatcher (``dispatch_ops``) and unit sequencer cycle by cycle. ``finish``: the
    PPU finish cycles (default ``length + PPU_LAT``, section 10.3). A unit with no op word:
    its START (with a bias), then the FINISH."""
    micro = _micro(p)
    finish = length + PPU_LAT if finish is None else finish
    issued, load, compute, modes = op_columns(ops)
    n = len(issued)
    if n == 0:
        return finish + (1 if bias_en else 0)
    state = PEState() if state is None else state
    t_all = _dispatch(issued, load, compute, modes, 0, state, micro)
    return _closing(state, n, 0, t_all, bias_en, micro) + finish


@dataclass
class GroupClock:
    """One group's timing across units: when it can take its next unit (``free_at``) and when it
    is idle for PPU commands, SYNC and END (``idle_at``). Without PINGPONG a unit occupies the
    group from its dispatch to its end (``unit_time``; sections 10.2, 11.4, 12.2, 12.4). With
    PINGPONG (section 12.3) the PEs keep their ops across units (``dispatch_ops`` on the group's
    ``PEState``), unit ``u``'s finish starts after ``max(F_u, P_{u-1})`` (``F_u``: its ops all
    issued and their final beats in; a unit with a bias and no issued op: its START, ``t0 + 1``)
    and ends at ``P_u``, the group takes unit ``u + 1`` at ``max(a_last(u), P_{u-1})`` and is
    idle after its last ``P``."""

    pingpong: bool = False
    free_at: int = 0
    idle_at: int = 0
    finish_end: int = 0                                   # P of the group's last unit
    pes: PEState = field(default_factory=PEState)
    busy_units: int = 0                                   # busy PE-cycles of units without PINGPONG
    units: int = 0                                        # units taken (PINGPONG: accumulator = units mod 2)
    starts: list = field(default_factory=list)            # cfg cycle of every issued op of the last unit

    @property
    def busy(self) -> int:
        """Busy PE-cycles (section 12.7) of the group's PEs so far."""
        return self.busy_units + self.pes.busy

    def unit(self, t0: int, ops, length: int, bias_en: bool, p, finish: int | None = None) -> int:
        """Take a unit at ``t0`` (its dispatch cycle); returns the cycle of its last result entry.
        ``p``: a ``MicroArch`` or ``CoreParams``; ``finish``: the PPU finish cycles (default
        ``length + PPU_LAT``)."""
        micro = _micro(p)
        finish = length + PPU_LAT if finish is None else finish
        self.units += 1
        if not self.pingpong:
            st = PEState()
            end = t0 + unit_time(ops, length, bias_en, micro, st, finish)
            self.busy_units += st.busy
            self.starts = [t0 + a for a in st.unit_a]
            self.free_at, self.idle_at = end, end + 1
            return end
        issued, load, compute, modes = op_columns(ops)
        a_last = _dispatch(issued, load, compute, modes, t0, self.pes, micro)
        self.starts = self.pes.unit_a
        f_last = a_last if self.pes.unit_f is None else max(a_last, self.pes.unit_f)
        if bias_en and not any(issued):
            f_last = max(f_last, t0 + 1)  # START(bias) takes the cycle before the FINISH
        end = max(f_last, self.finish_end) + finish
        self.free_at = max(a_last, self.finish_end)  # the next unit's accumulator frees at P_{u-1}
        self.finish_end, self.idle_at = end, end + 1
        return end


__all__ = ["GroupClock", "Mode", "OpTimes", "PEState", "dispatch_ops", "op_columns", "unit_time"]


@dataclass
class UnitHandout:
    """The controller's unit hand-out (sections 11.4, 12.9), for the contract and the core model:
    unit ``i`` in cycle ``c_i``, the earliest cycle no earlier than the controller reaches it (``t``)
    in which a group can take a unit (``GroupClock.free_at``) and fewer than ``rate`` (UNIT_RATE)
    units have been handed out; to the lowest-index such group. A group that takes a unit in cycle
    ``c`` takes its next no earlier than ``c + 1`` (``took``), so no group takes two units in one
    cycle. The core reaches a bare unit one cycle after the previous one (``c + 1``) and a block's
    units in the cycle of the previous one; a list of units (the contract) is one block from cycle
    0. ``rate = 0``: unlimited, the section 10 rule (each unit to the group that can take one
    first, ties to the lowest group)."""

    rate: int = 1
    cycle: int = -1        # the cycle of the last hand-out
    count: int = 0         # units handed out in that cycle

    def take(self, t: int, clocks: Sequence[GroupClock]) -> tuple[int, int]:
        """(cycle, group) of the next unit, reached by the controller in cycle ``t``."""
        first_free = min(k.free_at for k in clocks)
        c = max(t, first_free)
        if self.rate and c == self.cycle and self.count >= self.rate:
            c = max(c + 1, first_free)
        g = next(i for i, k in enumerate(clocks) if k.free_at <= c)
        self.count = self.count + 1 if c == self.cycle else 1
        self.cycle = c
        return c, g

    def took(self, clock: GroupClock, c: int) -> None:
        """``clock``'s group took a unit in cycle ``c`` (after ``GroupClock.unit``)."""
        if self.rate:
            clock.free_at = max(clock.free_at, c + 1)
