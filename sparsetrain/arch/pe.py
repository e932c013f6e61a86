"""Elaboration parameters of the PE (docs/architecture.md section 1).

The PE's cycle counts are ``arch.timing``; its payload layouts (section 4) are ``hw.layouts``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .fixedpoint import DatapathParams


def bits_for(n: int) -> int:
    """Bits of an unsigned field that holds 0 .. n."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class HwParams(DatapathParams):
    """Elaboration parameters of the PE (section 1), validated on creation."""

    @property
    def k_w(self) -> int:
        return bits_for(self.k_max)

    def as_dict(self) -> dict[str, int]:
        return {"DW": self.dw, "K_MAX": self.k_max, "W_MAX": self.w_max, "ACC_W": self.acc_w}
