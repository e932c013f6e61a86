"""The performance model: cycles, utilisation and energy of every conv layer and training step.

Two evaluations of the schedule of docs/architecture.md section 10:
* ``analytic_layer``: expected values over per-layer densities, closed form (no row loops),
  fast enough for ResNet-152 at 224x224 in well under a second;
* ``exact_layer``: the op list of exact non-zero patterns run through the event-level
  schedule, the same one the controller RTL implements (golden tensors, RTL comparison).
The dense baseline is the same schedule with every entry present (section 10.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..arch.geometry import ConvShape
from ..arch.microarch import MicroArch
from ..arch.schedule import ArchParams, expected_makespan, expected_unit_time, schedule_units
from ..arch.steps import STEP_NAMES, Step
from ..arch.timing import Mode
from ..arch.utilisation import useful_columns
from .decompose import (CycleLaw, exact_units, taps_per_input, taps_per_kernel_row,
                        taps_per_output)
from .densities import DENSE, DensityTable, LayerDensity, densities_of_patterns
from .energy import Accesses, EnergyTable


@dataclass
class StepCost:
    cycles: float        # layer step latency (schedule, or a bandwidth bound when that is higher)
    schedule_cycles: float
    busy: float          # PE-cycles spent in operations
    ops: float
    units: int
    macs: float
    entries_read: float
    acc: Accesses
    bound: str = "compute"   # compute | buffer | dram
    useful: float = 0.0      # PE-cycles consuming a non-zero operand that yields a product (section 12.7)

    def utilisation(self, pes: int) -> float:
        return self.busy / (pes * self.cycles) if self.cycles else 0.0

    def useful_utilisation(self, pes: int) -> float:
        return self.useful / (pes * self.cycles) if self.cycles else 0.0


@dataclass
class StepResult:
    step: str
    sparse: StepCost
    dense: StepCost
    energy: dict[str, float]
    dense_energy: dict[str, float]

    @property
    def speedup(self) -> float:
        return self.dense.cycles / self.sparse.cycles if self.sparse.cycles else 1.0


@dataclass
class LayerResult:
    shape: ConvShape
    density: LayerDensity
    steps: dict[str, StepResult] = field(default_factory=dict)

    def cycles(self, dense: bool = False) -> float:
        return sum((s.dense if dense else s.sparse).cycles for s in self.steps.values())

    @property
    def speedup(self) -> float:
        c = self.cycles()
        return self.cycles(dense=True) / c if c else 1.0


def expected_entries(length: int, density: float) -> float:
    """E[max(1, nnz)] of a row of ``length`` with i.i.d. non-zeros: the empty row is one marker."""
    return length * density + (1.0 - density) ** length


def layer_steps(shape: ConvShape) -> tuple[str, ...]:
    """The steps a layer runs: the first layer has no GTA (nobody needs the image's gradient)."""
    return ("forward", "gtw") if shape.first else STEP_NAMES


def _footprint_bits(step: str, s: ConvShape, d: LayerDensity, arch: ArchParams, dense: bool) -> float:
    """Bits a step keeps in the buffer: its operands and its result (compressed unless dense)."""
    e_bits = arch.dw if dense else arch.dw + arch.off_w
    dd = DENSE if dense else d
    act = s.c_in * s.h_in * s.w_in
    grad = s.c_out * s.h_out * s.w_out
    wts = s.c_out * s.c_per_group * s.k * s.k * arch.dw
    if step == "forward":
        return act * dd.act * e_bits + wts + grad * dd.out_act * e_bits
    if step == "gta":
        return grad * dd.grad * e_bits + wts + act + act * dd.out_grad_density * e_bits  # mask: 1 bit each
    return act * dd.act * e_bits + grad * dd.grad * e_bits + wts


def _finish_cost(cost: StepCost, step: str, s: ConvShape, d: LayerDensity, arch: ArchParams,
                 dense: bool) -> StepCost:
    """Apply the buffer-bandwidth and DRAM bounds (section 10.4) and count DRAM spills."""
    spill = max(0.0, _footprint_bits(step, s, d, arch, dense) - arch.buffer_kb * 8192.0)
    cost.acc.dram_bits = 2.0 * spill   # spilled data leaves once and comes back once
    cost.cycles = cost.schedule_cycles
    if arch.buffer_bw is not None and cost.entries_read / arch.buffer_bw > cost.cycles:
        cost.cycles, cost.bound = cost.entries_read / arch.buffer_bw, "buffer"
    if arch.dram_bw is not None and cost.acc.dram_bits / 8.0 / arch.dram_bw > cost.cycles:
        cost.cycles, cost.bound = cost.acc.dram_bits / 8.0 / arch.dram_bw, "dram"
    return cost


def analytic_step(step: str, s: ConvShape, d: LayerDensity, arch: ArchParams, dense: bool = False) -> StepCost:
    """Expected cost of one step of one sample, in closed form over unit classes."""
    dd = DENSE if dense else d
    e_bits = arch.dw if dense else arch.dw + arch.off_w
    k = s.k
    law = CycleLaw.of(Step(step).mode, k)
    # Campfire: the compiler skips ops (Forward, GTA; a unit keeps one) and units (GTW) of pruned kernel rows
    w_rows = 1.0 if dense else dd.weight_rows
    dense_macs = s.macs() * w_rows
    if step == "forward":
        n_ops = _kept_ops(s.c_per_group * taps_per_output(s.h_in, s.h_out, k, s.stride, s.pad), w_rows)
        counts = np.full(n_ops.shape, s.c_out)
        n1, n2, row_len = expected_entries(s.w_in, dd.act), k, s.w_out
        op_cycles = law(n1)
        macs = dense_macs * dd.act
        out_entries = max(1.0, s.w_out * dd.out_act) if not dense else s.w_out
        p2_bits = arch.dw
    elif step == "gta":
        n_ops = _kept_ops(s.f_per_group * taps_per_input(s.h_in, s.h_out, k, s.stride, s.pad), w_rows)
        counts = np.full(n_ops.shape, s.c_in)
        n1, n2, row_len = expected_entries(s.w_out, dd.grad), k, s.w_in
        op_cycles = law(n1)
        macs = dense_macs * dd.grad * (1.0 if dense else dd.mask_density)
        out_entries = s.w_in if dense else max(1.0, s.w_in * dd.out_grad_density)
        p2_bits = arch.dw
    elif step == "gtw":
        n_ops = taps_per_kernel_row(s.h_in, s.h_out, k, s.stride, s.pad)              # per unit, per kr
        counts = np.full(n_ops.shape, s.c_out * s.c_per_group * w_rows)
        n1, n2, row_len = expected_entries(s.w_in, dd.act), expected_entries(s.w_out, dd.grad), k
        op_cycles = law(n1, n2)
        macs = dense_macs * dd.act * dd.grad
        out_entries = k
        p2_bits = e_bits
    else:
        raise ValueError(f"step = {step!r} is out of range; allowed: {', '.join(STEP_NAMES)}")
    keep = n_ops > 0
    n_ops, counts = n_ops[keep], counts[keep]
    micro = _micro(arch, dense)
    if micro.is_gen1:
        unit_t = expected_unit_time(n_ops, op_cycles, arch.ppu_finish(row_len))
        makespan = expected_makespan(counts, unit_t, arch.groups)
        busy = float(np.dot(counts, n_ops)) * op_cycles
    else:
        from . import analytic2
        mode = Step(step).mode
        rows = analytic2.RowLaw(s.w_out, dd.grad) if step == "gta" else \
            analytic2.RowLaw(s.w_in, dd.act, s.w_out if step == "gtw" else 0, dd.grad if step == "gtw" else 0.0)
        law2 = analytic2.op_law(mode, k, s.stride, rows, 1.0 if dense else dd.mask_density, micro)
        makespan, issued = analytic2.makespan(counts, n_ops, arch.ppu_finish(row_len), law2, arch.groups,
                                              micro, runs=step == "gtw")
        busy = issued * law2.period
    ops = float(np.dot(counts, n_ops))
    units = int(counts.sum())
    entries = ops * (n1 + n2)
    mask_bits = ops * row_len if step == "gta" else 0.0
    out_bits = units * out_entries * (arch.dw if step == "gtw" else e_bits)
    reg1 = ops * (n2 if step == "gtw" else k)
    lanes = row_len if step == "gtw" or dense else min(row_len, n1 * k)
    acc = Accesses(buffer_bits=ops * (n1 * e_bits + n2 * p2_bits) + mask_bits + out_bits,
                   reg=reg1 + 3.0 * macs, macs=macs, adds=ops * lanes + units * row_len)
    cost = StepCost(0.0, makespan, busy, ops, units, macs, entries, acc, useful=_expected_useful(step, s, d))
    return _finish_cost(cost, step, s, d, arch, dense)


def _micro(arch: ArchParams, dense: bool) -> MicroArch:
    """The switches a run uses: the dense baseline gets only those that do not need zeros (A, C)."""
    return arch.micro.dense_baseline() if dense else arch.micro


def _expected_useful(step: str, s: ConvShape, d: LayerDensity) -> float:
    """Expected useful PE-cycles (section 12.7) of a step: a property of the data, so the dense
    baseline has the same count (it runs the same non-zero products, among its zeros)."""
    k = s.k
    if step == "forward":
        n = _kept_ops(s.c_per_group * taps_per_output(s.h_in, s.h_out, k, s.stride, s.pad), d.weight_rows)
        covered = int(useful_columns(Mode.SRC, k, s.stride, s.pad, s.w_in, s.w_out).sum())  # columns with a product
        return float(n.sum()) * s.c_out * covered * d.act
    if step == "gta":
        n = _kept_ops(s.f_per_group * taps_per_input(s.h_in, s.h_out, k, s.stride, s.pad), d.weight_rows)
        return float(n.sum()) * s.c_in * s.w_out * d.grad * (1.0 - (1.0 - d.mask_density) ** k)
    n = taps_per_kernel_row(s.h_in, s.h_out, k, s.stride, s.pad)
    return float(n.sum()) * s.c_out * s.c_per_group * d.weight_rows * s.w_in * d.act * \
        (1.0 - (1.0 - d.grad) ** math.ceil(k / s.stride))


def _kept_ops(n_ops: np.ndarray, w_rows: float) -> np.ndarray:
    """Expected ops per unit when a fraction ``w_rows`` of kernel rows is kept (at least one per unit)."""
    return n_ops if w_rows >= 1.0 else np.where(n_ops > 0, np.maximum(1.0, n_ops * w_rows), 0.0)


def _result(step: str, sparse: StepCost, dense: StepCost, energy: EnergyTable) -> StepResult:
    return StepResult(step, sparse, dense, sparse.acc.energy(energy), dense.acc.energy(energy))


def analytic_layer(s: ConvShape, d: LayerDensity, arch: ArchParams | None = None,
                   energy: EnergyTable | None = None) -> LayerResult:
    arch, energy = arch or ArchParams(), energy or EnergyTable()
    res = LayerResult(s, d)
    for step in layer_steps(s):
        res.steps[step] = _result(step, analytic_step(step, s, d, arch), analytic_step(step, s, d, arch, True),
                                  energy)
    return res


def exact_step(step: str, s: ConvShape, pats: dict[str, np.ndarray], arch: ArchParams,
               dense: bool = False) -> StepCost:
    """Cost of one step from exact non-zero patterns ('in', 'grad', optional 'out', 'out_grad', 'mask')."""
    nz_in, nz_grad = pats["in"], pats["grad"]
    if dense:
        nz_in, nz_grad = np.ones_like(nz_in, bool), np.ones_like(nz_grad, bool)
        mask, nz_out = np.ones_like(nz_in, bool), None
    else:
        mask = pats.get("mask")
        nz_out = pats.get("out") if step == "forward" else pats.get("out_grad") if step == "gta" else None
    live = None if dense else pats.get("gtw_rows" if step == "gtw" else "live_rows")
    units = exact_units(step, s, nz_in, nz_grad, nz_out, mask, live)
    from .ops2 import unit_ops
    micro = _micro(arch, dense)
    rules = unit_ops(step, s, units, nz_in, nz_grad, mask, micro,
                     useful_from=pats if dense else None)
    if micro.is_gen1:
        sched = schedule_units(units, replace(arch, micro=micro))  # the dense baseline of B/D/E runs gen1
    else:
        from .schedule2 import schedule_units2
        sched = schedule_units2(units, rules, arch, micro)
    useful = float(sum(int(r.useful.sum()) for r in rules))
    real_live = pats.get("gtw_rows" if step == "gtw" else "live_rows")
    if dense and real_live is not None:
        # the baseline runs the ops of zero kernel rows too, but their products are no useful work:
        # count the useful cycles of the ops the data needs (12.7), as the sparse run does
        real = exact_units(step, s, pats["in"], pats["grad"], None, pats.get("mask"), real_live)
        useful = float(sum(int(r.useful.sum()) for r in unit_ops(step, s, real, pats["in"], pats["grad"],
                                                                  pats.get("mask"), MicroArch())))
    e_bits = arch.dw if dense else arch.dw + arch.off_w
    n1 = float(sum(u.n1.sum() for u in units))
    n2 = float(sum(u.n2.sum() for u in units))
    ops = float(sum(len(u.cycles) for u in units))
    macs = float(sum(u.macs.sum() for u in units))
    p2_bits = e_bits if step == "gtw" else arch.dw
    out_bits = sum(u.out_nnz for u in units) * (arch.dw if step == "gtw" else e_bits)
    mask_bits = sum(len(u.cycles) * u.row_len for u in units) if step == "gta" else 0.0
    reg1 = n2 if step == "gtw" else ops * s.k
    if step == "gtw" or dense:
        lanes = sum(len(u.cycles) * u.row_len for u in units)
    else:
        lanes = sum(int(np.minimum(u.row_len, u.n1 * s.k).sum()) for u in units)
    acc = Accesses(buffer_bits=n1 * e_bits + n2 * p2_bits + mask_bits + out_bits, reg=reg1 + 3.0 * macs,
                   macs=macs, adds=lanes + sum(u.row_len for u in units))
    cost = StepCost(0.0, float(sched.cycles), float(sched.busy), ops, len(units), macs, n1 + n2, acc,
                    useful=useful)
    n_batch = nz_in.shape[0]
    d = densities_of_patterns(pats) if not dense else DENSE
    cost = _finish_cost(cost, step, s, d, arch, dense)
    if n_batch > 1:  # footprint is per sample; spills scale with the batch
        cost.acc.dram_bits *= n_batch
    return cost


def exact_layer(s: ConvShape, pats: dict[str, np.ndarray], arch: ArchParams | None = None,
                energy: EnergyTable | None = None) -> LayerResult:
    arch, energy = arch or ArchParams(), energy or EnergyTable()
    res = LayerResult(s, densities_of_patterns(pats))
    for step in layer_steps(s):
        res.steps[step] = _result(step, exact_step(step, s, pats, arch), exact_step(step, s, pats, arch, True),
                                  energy)
    return res


@dataclass
class NetworkResult:
    model: str
    input_kind: str
    arch: ArchParams
    layers: list[LayerResult]
    source: str
    notes: list[str]

    def step_cycles(self, step: str, dense: bool = False) -> float:
        return sum((l.steps[step].dense if dense else l.steps[step].sparse).cycles
                   for l in self.layers if step in l.steps)

    def cycles(self, dense: bool = False) -> float:
        return sum(l.cycles(dense) for l in self.layers)

    @property
    def speedup(self) -> float:
        c = self.cycles()
        return self.cycles(True) / c if c else 1.0

    def step_speedup(self, step: str) -> float:
        c = self.step_cycles(step)
        return self.step_cycles(step, True) / c if c else 1.0

    def energy(self, dense: bool = False, key: str = "on_chip") -> float:
        return sum((st.dense_energy if dense else st.energy)[key] for l in self.layers for st in l.steps.values())

    @property
    def energy_ratio(self) -> float:
        e = self.energy()
        return self.energy(True) / e if e else 1.0

    def utilisation(self, dense: bool = False) -> float:
        busy = sum((st.dense if dense else st.sparse).busy for l in self.layers for st in l.steps.values())
        cyc = self.cycles(dense)
        return busy / (self.arch.pes * cyc) if cyc else 0.0

    def useful_utilisation(self, dense: bool = False) -> float:
        """Useful PE-cycles (a non-zero operand consumed that yields a product) over PEs x cycles."""
        useful = sum((st.dense if dense else st.sparse).useful for l in self.layers for st in l.steps.values())
        cyc = self.cycles(dense)
        return useful / (self.arch.pes * cyc) if cyc else 0.0


def evaluate(shapes: list[ConvShape], densities, arch: ArchParams | None = None,
             energy: EnergyTable | None = None, model: str = "custom", input_kind: str = "custom") -> NetworkResult:
    """Analytic model of a whole network; ``densities`` is a DensityTable or one LayerDensity for all."""
    arch, energy = arch or ArchParams(), energy or EnergyTable()
    if isinstance(densities, LayerDensity):
        densities = DensityTable({}, densities, "given", ["one density for every layer (the image is dense)"])
    layers = [analytic_layer(s, d, arch, energy) for s, d in zip(shapes, densities.for_network(shapes))]
    source, notes = densities.source, list(densities.notes)
    return NetworkResult(model, input_kind, arch, layers, source, notes)
