"""Formal proofs of the PE, PPU, group and core with SymbiYosys (``sparsetrain formal``).

``CHECKS`` lists every check (block, property group, engine mode, depth); ``run_checks``
runs a selection and returns the results; ``mutation.run_mutation`` injects a known bug
into a copy of a block and shows that the proof then fails with a counterexample trace.
"""
from .suite import CHECKS, Check, CheckResult, run_check, run_checks, select

__all__ = ["CHECKS", "Check", "CheckResult", "run_check", "run_checks", "select"]
