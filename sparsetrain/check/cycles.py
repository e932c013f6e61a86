"""Cycle predictions of a compiled step from the performance model (docs/architecture.md section 10).

``schedule_cycles`` gives the section 10 schedule of the step's program chunks and the dense
baseline (section 10.5) on the same groups; ``weight_saved_cycles`` what the kernel rows the
compiler left out save. The check reports them next to the RTL's and the model's counters.
"""
from __future__ import annotations

import numpy as np

from ..arch.microarch import MicroArch, of_params
from ..arch.schedule import ArchParams, schedule_units
from ..arch.steps import Step
from ..compiler.compile import CompiledStep, result_units
from ..perf.decompose import exact_units



def _step_patterns(c: CompiledStep):
    """(layer shape, I pattern, dO pattern, GTA mask, arch) of a compiled step for the exact schedule."""
    s = c.shape
    t = c.tensors
    if c.step is Step.FORWARD:
        nz_in, nz_grad, mask = t.q["I"] != 0, np.zeros(s.output_shape, bool), None
    elif c.step is Step.GTA:
        nz_in, nz_grad, mask = np.ones(s.input_shape, bool), t.q["dO"] != 0, t.mask
    else:
        nz_in, nz_grad, mask = t.q["I"] != 0, t.q["dO"] != 0, None
    arch = ArchParams(groups=c.params.groups, dw=c.params.dw, w_max=max(2, c.params.w_max))
    return s, nz_in, nz_grad, mask, arch


def _cycles(c: CompiledStep, units: list, pats: tuple, arch: ArchParams, micro: MicroArch) -> int:
    """Schedule of ``units`` with the switches ``micro``: section 10 (first generation) or 12."""
    if micro.is_gen1:
        return schedule_units(units, arch).cycles
    from ..perf.ops2 import unit_ops
    from ..perf.schedule2 import schedule_units2
    rules = unit_ops(c.step.value, c.shape, units, *pats, micro)
    return schedule_units2(units, rules, arch, micro).cycles


def schedule_cycles(c: CompiledStep) -> tuple[int, int]:
    """(section 10 schedule of this step's rows, dense baseline), both on the same G groups and
    the same program chunks (each chunk is a step of its own, section 10.2). The schedule runs the
    kernel rows the program runs (``c.live_rows``); the dense baseline runs every row. Both take the
    microarchitecture switches the core was built with (``microarch.of_params``; section 12: the
    baseline gets those that do not depend on zeros, 12.8)."""
    s = c.shape
    ls, nz_in, nz_grad, mask, arch = _step_patterns(c)
    micro = of_params(c.params)
    ones_i, ones_g = np.ones(s.input_shape, bool), np.ones(s.output_shape, bool)
    totals = []
    sparse = exact_units(c.step.value, ls, nz_in, nz_grad, None, mask, c.live_rows)
    total, at = 0, 0
    for ch in c.chunks:
        total += _cycles(c, sparse[at:at + len(ch.results)], (nz_in, nz_grad, mask), arch, micro)
        at += len(ch.results)
    totals = [total, 0]
    # The baseline runs every unit, skipped ones too: each goes with the chunk of the next kept unit.
    dense = exact_units(c.step.value, ls, ones_i, ones_g, None, ones_i)
    chunk_end = {ch.results[-1].index: i for i, ch in enumerate(c.chunks) if ch.results}
    parts: list[list] = [[] for _ in c.chunks] or [[]]
    at = 0
    for (key, _ops), unit in zip(result_units(c.shape, c.step), dense):
        parts[at].append(unit)
        if key in chunk_end and at < len(parts) - 1:
            at += 1
    totals[1] = sum(_cycles(c, part, (ones_i, ones_g, ones_i), arch, micro.dense_baseline()) for part in parts)
    return int(totals[0]), int(totals[1])


def weight_saved_cycles(c: CompiledStep) -> int:
    """Cycles the skipped kernel rows save: the step's schedule (with the core's switches and unit
    rate, as ``schedule_cycles``) with every row minus with the program's rows (one schedule over
    the whole step, chunks ignored)."""
    if not (c.skipped_ops or c.skipped_units):
        return 0
    ls, nz_in, nz_grad, mask, arch = _step_patterns(c)
    micro = of_params(c.params)
    every, kept = (_cycles(c, exact_units(c.step.value, ls, nz_in, nz_grad, None, mask, live),
                           (nz_in, nz_grad, mask), arch, micro) for live in (None, c.live_rows))
    return int(every - kept)
