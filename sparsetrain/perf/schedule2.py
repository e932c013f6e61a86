"""Event-level layer schedule of the second generation (docs/architecture.md section 12).

Units to groups, ops to PEs through their cfg queues (12.2), skipped ops (D, 12.4) and the
ping-pong PPU accumulators (C, 12.3), with every op's cycles from ``microarch.op_times``.
With every switch off it is the section 10 schedule exactly (tested against
``schedule.schedule_units``).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..arch.microarch import MicroArch, OpTimes, op_times
from ..arch.ppu import N_PE
from ..arch.schedule import ArchParams, Schedule
from .ops2 import UnitOps


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


def _queue_free(g: _Group, pe: int, t0: int) -> int:
    p = g.prev[pe]
    return t0 + 1 if p is None else max(t0 + 1, p.queue_free)


def run_unit(g: _Group, ops: UnitOps, finish: int, micro: MicroArch) -> tuple[int, list[int], int]:
    """Run one unit on a group from its take time; returns (unit end, op cfg cycles, busy PE-cycles)."""
    t0 = g.take
    starts, f_max, a_last, busy = [], t0, t0, 0
    scan = micro.op_scan
    for i in range(len(ops.issued)):
        if not ops.issued[i]:
            continue
        # 12.2: the op goes to the PE whose queue frees first (ties: lowest PE)
        pe = min(range(N_PE), key=lambda j: (_queue_free(g, j, t0), j))
        a = _queue_free(g, pe, t0)
        if scan:  # 12.4: the op reader examines `scan` OP words per cycle, from cycle t0 + 1
            a = max(a, t0 + 1 + i // scan)
        t = op_times(g.prev[pe], a, ops.mode, int(ops.load[i]), int(ops.compute[i]), micro.prefetch)
        busy += t.f - max(t.a - 1, g.busy_until[pe])       # PE-cycles with an op on the PE (A, S or Q)
        g.busy_until[pe] = t.f
        g.prev[pe] = t
        starts.append(a)
        f_max, a_last = max(f_max, t.f), max(a_last, a)
    if scan:  # every OP word of the unit is examined, issued or not
        read_end = t0 + -(-len(ops.issued) // scan)
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


def schedule_units2(units, rules: list[UnitOps], arch: ArchParams, micro: MicroArch) -> Schedule2:
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
