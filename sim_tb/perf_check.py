"""Model vs RTL: run a layer's row operations on the PE RTL and compare the cycles.

Every op of every step of a layer (golden.bitexact.rowconv.layer_row_ops, the same list the model
schedules) runs back to back on Verilator through ``sim_tb.pe_driver.run_pe_ops``, which also
checks every output beat against the bit-accurate reference. The measured op cycles are
compared with the model's op by op, and per layer step after both go through the section 10
schedule. Whole layers on the core RTL replace the second comparison once the core exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.fixedpoint import SparseRow
from ..arch.schedule import ArchParams, schedule_units
from ..arch.steps import Step
from ..golden.bitexact.rowconv import layer_row_ops
from ..perf.decompose import STEPS, conv_shape, exact_units
from ..perf.shapes import LayerShape


@dataclass
class RtlRow:
    layer: str
    step: str
    ops: int
    op_max_error: float      # largest relative per-op difference
    model_cycles: int        # the step through the schedule, model op cycles
    rtl_cycles: int          # the same schedule, RTL-measured op cycles
    stalls: int

    @property
    def error(self) -> float:
        return abs(self.model_cycles - self.rtl_cycles) / self.rtl_cycles


def random_layer_tensors(shape: LayerShape, rng: np.random.Generator, d_in: float, d_grad: float,
                         vmax: int = 50) -> dict[str, np.ndarray]:
    """Integer I (ReLU-like: non-negative, sparse), W (dense) and dO (signed, sparse) of one sample."""
    i = rng.integers(1, vmax, (1, shape.c_in, shape.h_in, shape.w_in)) * (rng.random((1, shape.c_in, shape.h_in, shape.w_in)) < d_in)
    w = rng.integers(-vmax, vmax, (shape.c_out, shape.c_per_group, shape.k, shape.k))
    g = rng.integers(-vmax, vmax, (1, shape.c_out, shape.h_out, shape.w_out)) * (rng.random((1, shape.c_out, shape.h_out, shape.w_out)) < d_grad)
    return {"I": i.astype(np.int64), "W": w.astype(np.int64), "dO": g.astype(np.int64)}


def pe_ops_of_step(shape: LayerShape, t: dict[str, np.ndarray], step: str) -> list:
    """The PeOps of one step, in layer_row_ops order."""
    from .pe_driver import PeOp
    cs = conv_shape(shape, t["I"].shape[0])
    ops = []
    for op in layer_row_ops(cs, Step(step)):
        wrow = t["W"][op.f, cs.weight_channel(op.c), op.kr].tolist()
        irow = SparseRow.from_dense(t["I"][op.n, op.c, op.in_row])
        grow = SparseRow.from_dense(t["dO"][op.n, op.f, op.out_row])
        if step == "forward":
            ops.append(PeOp.src(wrow, irow, shape.stride, shape.pad, out_len=shape.w_out))
        elif step == "gta":
            ops.append(PeOp.msrc(wrow, grow, (t["I"][op.n, op.c, op.in_row] != 0).astype(int).tolist(),
                                 shape.stride, shape.pad))
        else:
            ops.append(PeOp.osrc(irow, grow, shape.k, shape.stride, shape.pad))
    return ops


def compare_with_rtl(layers: list[tuple[LayerShape, dict[str, np.ndarray]]], arch: ArchParams,
                     sim: str = "verilator", params=None) -> list[RtlRow]:
    """Run every op of every step of ``layers`` on the PE RTL; one RtlRow per layer step."""
    from ..arch.pe import HwParams
    from .pe_driver import run_pe_ops
    params = params or HwParams()
    plan, all_ops = [], []
    for shape, t in layers:
        pats = {"in": t["I"] != 0, "grad": t["dO"] != 0}
        for step in STEPS:
            ops = pe_ops_of_step(shape, t, step)
            units = exact_units(step, shape, pats["in"], pats["grad"])
            plan.append((shape, step, len(all_ops), len(ops), units))
            all_ops.extend(ops)
    measured = run_pe_ops(all_ops, params, sim)
    rows = []
    for shape, step, start, n, units in plan:
        res = measured[start:start + n]
        rtl = np.array([r.cycles for r in res], dtype=np.int64)
        model = np.concatenate([u.cycles for u in units])
        rtl_units, pos = [], 0
        for u in units:
            k = len(u.cycles)
            rtl_units.append(_with_cycles(u, rtl[pos:pos + k]))
            pos += k
        rows.append(RtlRow(shape.name, step, n, float(np.max(np.abs(model - rtl) / rtl)),
                           schedule_units(units, arch).cycles, schedule_units(rtl_units, arch).cycles,
                           int(sum(r.stalls for r in res))))
    return rows


def _with_cycles(unit, cycles: np.ndarray):
    from dataclasses import replace
    return replace(unit, cycles=np.asarray(cycles, dtype=np.int64))


def markdown_table(rows: list[RtlRow]) -> str:
    lines = ["| layer | step | ops | max per-op error | model cycles | RTL cycles | error |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.layer} | {r.step} | {r.ops} | {100 * r.op_max_error:.2f} % | {r.model_cycles} | "
                     f"{r.rtl_cycles} | {100 * r.error:.2f} % |")
    return "\n".join(lines)
