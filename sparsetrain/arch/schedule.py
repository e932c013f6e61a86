"""The layer schedule of docs/architecture.md section 10: units over groups, ops over PEs.

``schedule_units`` is the exact event-level schedule (what the controller RTL implements);
``expected_makespan`` is its closed form for units of known expected op cycles, used by the
analytic model. Both follow section 10.2 literally.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from .fixedpoint import check_param

PES_PER_GROUP = 3


@dataclass(frozen=True)
class ArchParams:
    """Architecture parameters of the model (defaults: the paper's 56 groups x 3 PEs, 386 KB)."""

    groups: int = 56
    buffer_kb: float = 386.0
    buffer_bw: float | None = None  # entries per cycle the buffer delivers in total; None = one port per PE port
    dram_bw: float | None = None    # bytes per cycle to DRAM; None = spills cost energy, not time
    dw: int = 16
    w_max: int = 256
    ppu_latency: int = 3            # PPU finish pipeline depth (section 10.3)

    def __post_init__(self) -> None:
        check_param("groups", self.groups, 1, 4096)
        check_param("DW", self.dw)
        check_param("W_MAX", self.w_max)
        check_param("ppu_latency", self.ppu_latency, 0, 64)
        if not (self.buffer_kb > 0):
            raise ValueError(f"buffer_kb = {self.buffer_kb} is out of range; allowed: > 0")
        for nm in ("buffer_bw", "dram_bw"):
            v = getattr(self, nm)
            if v is not None and not v > 0:
                raise ValueError(f"{nm} = {v} is out of range; allowed: > 0 or None (unlimited)")

    @property
    def pes(self) -> int:
        return self.groups * PES_PER_GROUP

    @property
    def off_w(self) -> int:
        return (self.w_max + 1).bit_length()

    def ppu_finish(self, row_len: int) -> int:
        """Cycles the PPU needs to finish one result row (section 10.3)."""
        return int(row_len) + self.ppu_latency

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Schedule:
    cycles: int          # end of the last unit (first cfg at cycle 1)
    busy: int            # PE-cycles spent in operations
    unit_end: list[int]  # end cycle of every unit, in issue order
    op_start: list[list[int]]  # start cycle (cfg accepted) of every op, per unit


def unit_time(op_cycles, finish: int, pes: int = PES_PER_GROUP) -> tuple[int, list[int]]:
    """Ops in issue order, each to the earliest-free PE (ties: lowest PE); then the PPU finish."""
    cycles = np.asarray(op_cycles, dtype=np.int64).tolist()
    if pes == 3:  # the usual group, unrolled (the same choice: first free, ties lowest)
        f0 = f1 = f2 = 0
        starts = []
        for c in cycles:
            if f0 <= f1 and f0 <= f2:
                starts.append(f0 + 1)
                f0 += c
            elif f1 <= f2:
                starts.append(f1 + 1)
                f1 += c
            else:
                starts.append(f2 + 1)
                f2 += c
        return max(f0, f1, f2) + finish, starts
    free = [0] * pes
    starts = []
    for c in cycles:
        j = min(range(pes), key=lambda i: (free[i], i))
        starts.append(free[j] + 1)
        free[j] += c
    return max(free) + finish, starts


def schedule_units(units, arch: ArchParams) -> Schedule:
    """Units in issue order, each to the earliest-free group (ties: lowest group)."""
    heap = [(0, g) for g in range(arch.groups)]
    ends, starts, busy, last = [], [], 0, 0
    for u in units:
        t0, g = heapq.heappop(heap)
        dt, st = unit_time(u.cycles, arch.ppu_finish(u.row_len))
        heapq.heappush(heap, (t0 + dt, g))
        ends.append(t0 + dt)
        starts.append([t0 + s for s in st])
        busy += int(np.sum(u.cycles))
        last = max(last, t0 + dt)
    return Schedule(last, busy, ends, starts)


def expected_unit_time(n_ops: np.ndarray, op_cycles: float, finish: float) -> np.ndarray:
    """Expected time of units of n_ops equal-expectation ops: full waves of 3, the last wave, the finish."""
    n_ops = np.asarray(n_ops, dtype=np.float64)
    return np.ceil(n_ops / PES_PER_GROUP) * op_cycles + finish


def expected_makespan(unit_counts: np.ndarray, unit_times: np.ndarray, groups: int) -> float:
    """Units of a few classes (count, expected time) dispatched to ``groups`` groups (section 10.2).

    With U units of mean time T the dispatch runs ceil(U/G) waves; a layer never takes less
    than its longest unit.
    """
    counts = np.asarray(unit_counts, dtype=np.float64)
    times = np.asarray(unit_times, dtype=np.float64)
    keep = counts > 0
    if not keep.any():
        return 0.0
    counts, times = counts[keep], times[keep]
    n_units = counts.sum()
    total = float(np.dot(counts, times))
    return max(float(times.max()), math.ceil(n_units / groups) * total / n_units)
