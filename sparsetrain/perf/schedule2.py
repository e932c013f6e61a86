"""Event-level layer schedule of the second generation (docs/architecture.md section 12): the
one implementation lives in ``sparsetrain.arch.schedule2`` (the bit-accurate core model uses it
too); the performance model takes it from here."""
from __future__ import annotations

from ..arch.schedule2 import Schedule2, _Group, examined, run_unit, schedule_units2

__all__ = ["Schedule2", "_Group", "examined", "run_unit", "schedule_units2"]
