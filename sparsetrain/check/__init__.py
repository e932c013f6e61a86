"""`sparsetrain check` as a plain API: a compiled layer step run on the RTL and on the bit-accurate
model and compared with the float reference.

Modules by job: ``harness`` (run and compare: RTL vs model vs float), ``cycles`` (the section 10
predictions of the same step), ``report`` (the report, its text and JSON), ``simconfig`` (the
simulated core's parameters). It sits above the compiler, the golden model and the testbenches
(``sim_tb``), which it drives.
"""
from __future__ import annotations

from .harness import check_compiled, check_layer
from .report import CheckReport, Mismatch, write_report
from .simconfig import SIM_PARAMS, TIMEOUT_CODE, sim_params


__all__ = ["check_compiled", "check_layer", "CheckReport", "Mismatch", "write_report", "SIM_PARAMS", "TIMEOUT_CODE",
           "sim_params"]
