"""PE timing contract of docs/architecture.md section 6: the only source of PE cycle counts.

The performance model and the testbenches both call these functions; change them only
together with the doc and the RTL.
"""
from __future__ import annotations

from enum import IntEnum


class Mode(IntEnum):
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
