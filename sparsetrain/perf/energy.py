"""Per-access energies and the energy estimate of a layer step (docs/performance.md, "Energy").

Defaults (pJ, 16-bit words), replaceable with a JSON file of the same keys:
* mac_pj 0.9: a 16-bit integer multiply plus a 32-bit add. Horowitz, "Computing's energy
  problem", ISSCC 2014 (45 nm): 8-bit multiply 0.2 pJ, 32-bit multiply 3.1 pJ (so about
  0.8 pJ at 16 bits, multiplier energy growing with the square of the width), 32-bit add 0.1 pJ.
* reg_pj 0.9, buffer_pj 5.4, dram_pj 180: Eyeriss' normalised access costs (Chen, Emer, Sze,
  ISCA 2016, Fig. 2 / Table: register file 1x, global buffer 6x, DRAM 200x of one MAC).
* add_pj 0.1: a 32-bit add (Horowitz 2014), for the PPU's accumulations and finish.
Buffer and DRAM energies scale with the bits moved (a sparse entry is DW + OFF_W bits).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class EnergyTable:
    mac_pj: float = 0.9
    reg_pj: float = 0.9
    buffer_pj: float = 5.4     # per 16-bit word
    dram_pj: float = 180.0     # per 16-bit word
    add_pj: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{f.name} = {v!r} is out of range; allowed: a finite number >= 0 (pJ)")

    @classmethod
    def load(cls, path: str | Path) -> "EnergyTable":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"energy = {str(path)!r} is not a file; allowed: a JSON file of per-access energies")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"energy: {path}: not JSON ({(str(exc).splitlines() or [''])[0]})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ValueError(f"energy: {path}: a JSON {type(data).__name__}; allowed: an object of "
                             f"{', '.join(sorted(known))}")
        extra = set(data) - known
        if extra:
            raise ValueError(f"energy: {path}: key = {sorted(extra)[0]!r} is out of range; allowed: "
                             f"{', '.join(sorted(known))}")
        out = {}
        for k, v in data.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"energy: {path}: {k} = {v!r} is not a number")
            out[k] = float(v)
        return cls(**out)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Accesses:
    """What one layer step does, counted in the units the energy table prices."""

    buffer_bits: float = 0.0   # bits read from and written to the buffer
    dram_bits: float = 0.0
    reg: float = 0.0           # register (Reg-1 / Reg-2) accesses
    macs: float = 0.0
    adds: float = 0.0          # PPU accumulations and finish operations

    def __add__(self, o: "Accesses") -> "Accesses":
        return Accesses(*(getattr(self, f.name) + getattr(o, f.name) for f in fields(self)))

    def energy(self, t: EnergyTable) -> dict[str, float]:
        """pJ per component (buffer, dram, reg, mac, ppu) and the on-chip total (without DRAM)."""
        e = {"buffer": self.buffer_bits / 16.0 * t.buffer_pj, "reg": self.reg * t.reg_pj,
             "mac": self.macs * t.mac_pj, "ppu": self.adds * t.add_pj, "dram": self.dram_bits / 16.0 * t.dram_pj}
        e["on_chip"] = e["buffer"] + e["reg"] + e["mac"] + e["ppu"]
        return e

    def as_dict(self) -> dict:
        return asdict(self)
