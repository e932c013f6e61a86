"""Event-level layer schedule of the second generation (docs/architecture.md section 12).

Units to groups at the controller's unit rate (F, 12.9), each unit on its group as the RTL runs
it (``arch.group_timing``: ops to PEs through their cfg queues (12.2), D's op reader with its
issue queue (12.4), the ping-pong PPU accumulators (C, 12.3)), with every op's cycles from
``microarch.op_times``. With every switch off and an unlimited unit rate it is the section 10
schedule exactly (tested against ``schedule.schedule_units``). The performance model
(``perf.schedule2``) and the bit-accurate core model (``CoreRun.cycles_contract``) both use it;
with ``unit_rate = 1`` (bare UNITs, one a cycle, 11.4) it is the core model's, hence the RTL's,
cycle count exactly.

A unit's ops (``UnitOps``-like: ``issued``, ``load``, ``compute``, ``useful`` arrays and ``mode``)
come in issue order, issued or not.
"""
from __future__ import annotations

from dataclasses import dataclass

from .group_timing import GroupClock, UnitHandout
from .microarch import MicroArch
from .schedule import ArchParams, Schedule

# a group's timing across units (the name the closed form's simulation uses)
_Group = GroupClock


@dataclass
class Schedule2(Schedule):
    useful: int = 0                  # useful PE-cycles (section 12.7)
    issued: int = 0                  # ops issued (D leaves out the others)


def examined(t0: int, i: int, op_scan: int) -> int:
    """Cycle the ``i``-th OP word of a unit taken at ``t0`` is examined at the earliest (12.4): OP
    words from cycle t0 + 1 without a finite op reader; with one, OP_SCAN words a cycle whose
    directory entries are read in the next cycle, so block floor(i / op_scan) in t0 + 2 +
    floor(i / op_scan) (later when the issue queue is full)."""
    return t0 + 2 + i // op_scan if op_scan else t0 + 1


def run_unit(g: GroupClock, ops, finish: int, micro: MicroArch, t0: int | None = None,
             bias_en: bool = False) -> tuple[int, list[int], int]:
    """Run one unit on a group, taken at ``t0`` (default: the first cycle the group can take it,
    ``g.free_at``); returns (unit end, op cfg cycles, busy PE-cycles of this unit)."""
    t0 = g.free_at if t0 is None else t0
    before = g.busy
    end = g.unit(t0, ops, finish, bias_en, micro, finish=finish)
    return end, list(g.starts), g.busy - before


def schedule_units2(units, rules: list, arch: ArchParams, micro: MicroArch) -> Schedule2:
    """Units in issue order, handed out at the unit rate as one block from cycle 0 (``UnitHandout``),
    each on its group as the RTL runs it (``GroupClock``). A unit may say ``bias_en`` (its START,
    12.4; default none)."""
    groups = [GroupClock(micro.pingpong) for _ in range(arch.groups)]
    handout = UnitHandout(micro.unit_rate)
    ends, starts, useful, issued, last, c = [], [], 0, 0, 0, 0
    for u, r in zip(units, rules):
        c, gi = handout.take(c, groups)
        end, st, _ = run_unit(groups[gi], r, arch.ppu_finish(u.row_len), micro, c,
                              bool(getattr(u, "bias_en", False)))
        handout.took(groups[gi], c)
        ends.append(end)
        starts.append(st)
        useful += int(r.useful.sum())
        issued += int(r.issued.sum())
        last = max(last, end)
    return Schedule2(last, sum(g.busy for g in groups), ends, starts, useful, issued)
