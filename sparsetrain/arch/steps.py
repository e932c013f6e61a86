"""The three training steps of a layer (docs/architecture.md section 8) and the PE mode of each."""
from __future__ import annotations

from enum import Enum

from .timing import Mode


class Step(Enum):
    """The three training steps of a layer, each carried by one PE mode."""

    FORWARD = "forward"  # O  from I and W: SRC
    GTA = "gta"          # dI from dO and W (masked): MSRC
    GTW = "gtw"          # dW from I and dO: OSRC

    @property
    def mode(self) -> Mode:
        return {Step.FORWARD: Mode.SRC, Step.GTA: Mode.MSRC, Step.GTW: Mode.OSRC}[self]
