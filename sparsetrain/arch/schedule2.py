"""Event-level layer schedule of the second generation (docs/architecture.md section 12).

Units to groups, ops to PEs through their cfg queues (12.2), skipped ops (D, 12.4) and the
ping-pong PPU accumulators (C, 12.3), with every op's cycles from ``microarch.op_times``.
With every switch off it is the section 10 schedule exactly (tested against
``schedule.schedule_units``). The performance model (``perf.schedule2``) and the bit-accurate
core model (``CoreRun.cycles_contract``) both use it.

A unit's ops (``UnitOps``-like: ``issued``, ``load``, ``compute``, ``useful`` arrays and ``mode``)
come in issue order, issued or not.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .microarch import MicroArch, OpTimes, op_times
from .ppu import N_PE
from .schedule import ArchParams, Schedule


@dataclass
class _Group:
    take: int = 0                    # the group can take its next unit at this time (first cfg at take + 1)
    ppu_free: int = 0                # the finish pipeline is free after this cycle
    acc_free: list[int] = field(default_factory=lambda: [0, 0])  # free time of each accumulator
    units: int = 0                   # units taken so far (accumulator = units mod 2)
    prev: list[OpTimes | None] = field(default_factory=lambda: [None] * N_PE)
    busy_until: list[int] = field(default_factory=lambda: [0] * N_PE)


@dataclass
class Schedule2(Schedule):
    useful: int = 0                  # useful PE-cycles (section 12.7)
    issued: int = 0                  # ops issued (D leaves out the others)


def _cfg_free(g: _Group, pe: int, t0: int) -> int:
    """First cycle PE ``pe`` takes a cfg of the unit taken at ``t0`` (12.2)."""
    p = g.prev[pe]
    return t0 + 1 if p is None else max(t0 + 1, p.dispatch_free)


def examined(t0: int, i: int, op_scan: int) -> int:
    """Cycle the ``i``-th OP word of a unit taken at ``t0`` is examined (12.4): OP words from
    cycle t0 + 1 without a finite op reader; with one, OP_SCAN words a cycle whose directory
    entries are read in the next cycle, so block floor(i / op_scan) in t0 + 2 + floor(i / op_scan)."""
    return t0 + 2 + i // op_scan if op_scan else t0 + 1


def run_unit(g: _Group, ops, finish: int, micro: MicroArch) -> tuple[int, list[int], int]:
    """Run one unit on a group from its take time; returns (unit end, op cfg cycles, busy PE-cycles)."""
    t0 = g.take
    starts, f_max, a_last, busy = [], t0, t0, 0
    scan = micro.op_scan if micro.skip_empty else 0   # the op reader of D (the plain reader without D)
    for i in range(len(ops.issued)):
        if not ops.issued[i]:
            continue
        # 12.2: the op goes to the PE that can take it first (ties: lowest PE), in the cycle
        # it is examined (12.4) at the earliest
        x = examined(t0, i, scan)
        pe = min(range(N_PE), key=lambda j: (max(_cfg_free(g, j, t0), x), j))
        a = max(_cfg_free(g, pe, t0), x)
        t = op_times(g.prev[pe], a, ops.mode, int(ops.load[i]), int(ops.compute[i]), micro.prefetch)
        busy += t.f - max(t.a - 1, g.busy_until[pe])       # PE-cycles with an op on the PE (A, S or Q)
        g.busy_until[pe] = t.f
        g.prev[pe] = t
        starts.append(a)
        f_max, a_last = max(f_max, t.f), max(a_last, a)
    if scan:  # every OP word of the unit is examined, issued or not
        read_end = examined(t0, len(ops.issued) - 1, scan) if len(ops.issued) else t0
        f_max, a_last = max(f_max, read_end), max(a_last, read_end)
    acc = g.units % 2
    end = max(f_max, g.ppu_free) + finish    # 12.3: the finish starts after the unit's last final beat
    g.ppu_free = end
    g.units += 1
    if micro.pingpong:
        g.acc_free[acc] = end
        # the next unit uses the other accumulator; it is taken once this unit's ops are all handed out
        g.take = max(a_last, g.acc_free[1 - acc])
    else:
        g.take = end
    return end, starts, busy


def schedule_units2(units, rules: list, arch: ArchParams, micro: MicroArch) -> Schedule2:
    """Units in issue order, each to the group that can take a unit first (ties: lowest group)."""
    groups = [_Group() for _ in range(arch.groups)]
    heap = [(0, g) for g in range(arch.groups)]
    ends, starts, busy, useful, issued, last = [], [], 0, 0, 0, 0
    for u, r in zip(units, rules):
        _, gi = heapq.heappop(heap)
        g = groups[gi]
        end, st, b = run_unit(g, r, arch.ppu_finish(u.row_len), micro)
        heapq.heappush(heap, (g.take, gi))
        ends.append(end)
        starts.append(st)
        busy += b
        useful += int(r.useful.sum())
        issued += int(r.issued.sum())
        last = max(last, end)
    return Schedule2(last, busy, ends, starts, useful, issued)
