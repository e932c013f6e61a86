"""Area in NAND2-equivalents from Yosys gate-level cell counts, using the table in unit_area.json.

The table (and its citation) lives in ``unit_area.json`` next to this module: the X1 cell
areas of the Nangate 45nm Open Cell Library, and for each Yosys internal cell the library
cells that implement it. An unknown cell type raises ValueError instead of being priced at
zero, so a new Yosys cell can never silently shrink an estimate.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

TABLE_PATH = Path(__file__).with_name("unit_area.json")


@dataclass(frozen=True)
class UnitAreaTable:
    name: str
    source: str
    reference_cell: str
    library_um2: dict[str, float]
    combinational: dict[str, tuple[str, ...]]
    sequential: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]

    @property
    def reference_um2(self) -> float:
        return self.library_um2[self.reference_cell]

    def cells_for(self, cell_type: str) -> tuple[tuple[str, ...], bool]:
        """Library cells implementing ``cell_type`` and whether it is sequential."""
        if cell_type in self.combinational:
            return self.combinational[cell_type], False
        for pattern, cells in self.sequential:
            if pattern.match(cell_type):
                return cells, True
        known = ", ".join(sorted(self.combinational)) + ", and flip-flops/latches matching " + \
            ", ".join(p.pattern for p, _ in self.sequential)
        raise ValueError(f"cell type = {cell_type!r} is out of range; allowed: {known}")

    def um2(self, cell_type: str) -> float:
        cells, _ = self.cells_for(cell_type)
        return sum(self.library_um2[c] for c in cells)


@lru_cache(maxsize=None)
def load_table(path: Path = TABLE_PATH) -> UnitAreaTable:
    raw = json.loads(Path(path).read_text())
    cells = raw["yosys_cells"]
    table = UnitAreaTable(
        name=raw["name"],
        source=raw["source"],
        reference_cell=raw["reference_cell"],
        library_um2={k: float(v) for k, v in raw["library_cells_um2"].items()},
        combinational={k: tuple(v) for k, v in cells["combinational"].items()},
        sequential=tuple((re.compile(p), tuple(c)) for p, c in cells["sequential"]["patterns"]),
    )
    used = {c for cs in table.combinational.values() for c in cs} | \
        {c for _, cs in table.sequential for c in cs} | {table.reference_cell}
    missing = sorted(used - set(table.library_um2))
    if missing:
        raise ValueError(f"unit-area table {path}: library cells {missing} have no area")
    return table


def is_flip_flop(cell_type: str) -> bool:
    """Edge-triggered storage cells of Yosys' fine-grained library (latches excluded)."""
    return bool(re.match(r"^\$_(S?DFF|ALDFF)", cell_type))


def is_latch(cell_type: str) -> bool:
    return cell_type.startswith("$_DLATCH")


@dataclass(frozen=True)
class AreaEstimate:
    um2: float
    nand2_eq: float
    combinational_nand2_eq: float
    sequential_nand2_eq: float


def estimate_area(cells_by_type: Mapping[str, int], table: UnitAreaTable | None = None) -> AreaEstimate:
    """Sum of unit areas over a gate-level cell count (Yosys `stat` after `synth`)."""
    table = table or load_table()
    comb = seq = 0.0
    for cell_type, count in cells_by_type.items():
        cells, sequential = table.cells_for(cell_type)
        area = count * sum(table.library_um2[c] for c in cells)
        if sequential:
            seq += area
        else:
            comb += area
    ref = table.reference_um2
    return AreaEstimate(um2=comb + seq, nand2_eq=(comb + seq) / ref,
                        combinational_nand2_eq=comb / ref, sequential_nand2_eq=seq / ref)
