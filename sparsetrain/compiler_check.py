"""`sparsetrain check` as a plain API: one layer step of a golden run on the RTL, checked two ways.

1. RTL against the bit-accurate model (``golden.bitexact.core_vec.run_program_fast``, equal to the scalar
   ``golden.bitexact.core_model.run_program``, of the same program):
   every result element, the per-step counters and the error status, bit for bit; the first
   differing element is named (tensor, n, channel, row, column, RTL value, model value).
2. The model against the float64 result of the golden float tensors: within the element-wise
   bound of section 2 (``golden.bitexact.rowconv.error_bound``). Pruned GTA rows are checked where the
   PPU kept the value; a pruned element must have been below the threshold (within the bound).

Cycles: the RTL's counter, the model's, the section 10 schedule (``sparsetrain.arch.schedule``)
and the dense baseline of the same layer (section 10.5, same groups).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arch.isa import CoreParams
from .arch.steps import Step
from .compiler import PRUNE_SLOT, CompiledStep, LayerData, compile_step, result_units
from .golden.bitexact.core_model import CoreRun, batch_threshold
from .golden.bitexact.core_vec import run_program_fast

# The simulation configuration of check/demo: G = 2 groups (section 11.1's sim default), K_MAX = 5
# and W_MAX = 64 (every conv of the small networks), ACC_W = 52 so that section 2's accumulator
# rule holds for GTW sums over a whole batch (up to 2**19 products: a 32 x 32 first layer at
# batch 32 needs 49 bits), and memories of moderate depth: the Verilog and the
# Verilator build grow with them, and a larger layer is split into several programs.
TIMEOUT_CODE = 15  # reported as the RTL error code when the watchdog stopped a run
SIM_PARAMS = dict(dw=16, k_max=5, w_max=64, acc_w=52, groups=2, buf_depth=1 << 16, mask_depth=1 << 10,
                  imem_depth=1 << 13, dir_depth=1 << 11)


def sim_params(**overrides: int) -> CoreParams:
    return CoreParams(**{**SIM_PARAMS, **overrides})


@dataclass
class Mismatch:
    tensor: str
    index: tuple[int, ...]      # (n, channel, row, column) or (f, c, kr, k) for dW
    rtl: int
    model: int

    def __str__(self) -> str:
        names = ("f", "c", "kr", "k") if self.tensor == "dW" else ("n", "channel", "row", "column")
        where = ", ".join(f"{a} = {b}" for a, b in zip(names, self.index))
        return f"{self.tensor}[{where}]: RTL {self.rtl}, model {self.model}"


@dataclass
class CheckReport:
    layer: str
    step: str
    sim: str
    samples: int
    batch: int
    units: int
    ops: int
    programs: int                # program chunks the step was split into (memory limits)
    instructions: int
    buffer_words: int
    frac: dict[str, int]
    bit_exact: bool
    mismatches: int
    first_mismatch: str | None
    counters_equal: bool
    rtl_error: int
    model_error: int
    within_bound: bool
    max_error: float
    max_bound: float
    worst_ratio: float           # max of error / bound over the checked elements
    checked_elements: int
    golden_max_error: float | None  # model vs the stored float32 golden tensor (complete layers)
    rtl_cycles: int
    model_cycles: int
    schedule_cycles: int         # section 10 prediction (sparsetrain.arch.schedule)
    contract_cycles: int         # the model's own section 10 figure (golden.bitexact.core_model cycles_contract)
    dense_cycles: int            # dense baseline of the same layer step
    density: float               # non-zeros written / elements
    wall_s: dict[str, float] = field(default_factory=dict)
    run_cycles_per_s: float = 0.0  # the free-running core alone (core_driver's run time, no loads)
    threshold: dict[str, Any] = field(default_factory=dict)
    # Campfire weight sparsity: row ops / GTW units of zero or pruned kernel rows the compiler left
    # out, and the section 10 cycles that saves against the same step with every row
    skipped_ops: int = 0
    skipped_units: int = 0
    weight_saved_cycles: int = 0
    pe_busy_cycles: int = 0      # PE-cycles in operations (the model's units), for the utilisation

    @property
    def ok(self) -> bool:
        return self.bit_exact and self.counters_equal and self.within_bound and not self.rtl_error

    @property
    def speedup(self) -> float:
        return self.dense_cycles / self.rtl_cycles if self.rtl_cycles else 0.0

    @property
    def sim_rate(self) -> float:
        """Simulated cycles per wall second of the RTL run (load, run and read back)."""
        t = self.wall_s.get("rtl", 0.0)
        return self.rtl_cycles / t if t else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, speedup=self.speedup, sim_cycles_per_s=self.sim_rate)
        return d

    def text(self) -> str:
        verdict = "OK" if self.ok else "FAIL"
        lines = [
            f"{self.layer} {self.step} on {self.sim}: {verdict}",
            f"  program: {self.samples} of {self.batch} samples, {self.units} units, {self.ops} ops, "
            f"{self.instructions} instructions in {self.programs} program(s), up to {self.buffer_words} buffer words",
            "  RTL vs bit-accurate model: " + ("bit-exact" if self.bit_exact else "not compared" if self.mismatches < 0
                                                else f"{self.mismatches} elements differ; first {self.first_mismatch}")
            + ("; per-step counters or PPU status differ" if not self.counters_equal else "")
            + (f"; RTL error code {self.rtl_error}" + (" (watchdog)" if self.rtl_error == TIMEOUT_CODE else "")
               if self.rtl_error else ""),
            f"  model vs float64 golden: max error {self.max_error:.3g}, bound {self.max_bound:.3g}, worst "
            f"error/bound {self.worst_ratio:.3f} over {self.checked_elements} elements: "
            + ("within the bound" if self.within_bound else "OUTSIDE the bound"),
        ]
        if self.golden_max_error is not None:
            lines.append(f"  model vs stored float32 golden tensor: max error {self.golden_max_error:.3g}")
        lines.append(f"  cycles: RTL {self.rtl_cycles}, model {self.model_cycles}, schedule (section 10) "
                     f"{self.schedule_cycles}, dense baseline {self.dense_cycles} (speedup {self.speedup:.2f}x)")
        lines.append(f"  output density {self.density:.3f}; simulation: {self.run_cycles_per_s:,.0f} cycles/s free-running, "
                     f"{self.sim_rate:,.0f} cycles/s with loading and start-up (RTL {self.wall_s.get('rtl', 0):.1f} s, "
                     f"model {self.wall_s.get('model', 0):.1f} s)")
        if self.skipped_ops or self.skipped_units:
            what = (f"{self.skipped_units} GTW units ({self.skipped_ops} row ops) of pruned kernel rows"
                    if self.skipped_units else f"{self.skipped_ops} row ops of all-zero kernel rows")
            lines.append(f"  weight sparsity: {what} skipped, saving {self.weight_saved_cycles} cycles (section 10 "
                         f"schedule of the whole step with and without them)")
        if self.threshold:
            lines.append(f"  threshold: {self.threshold}")
        return "\n".join(lines)


def check_layer(run_dir: str | Path, layer: str, step: str, *, sim: str = "verilator", samples: int | None = None,
                params: CoreParams | None = None) -> CheckReport:
    """Compile ``layer``'s ``step`` from the golden run, run it on the RTL and the model, compare."""
    from .golden.training.tensors import load_golden
    if step not in tuple(s.value for s in Step):
        raise ValueError(f"step = {step!r} is out of range; allowed: forward, gta, gtw")
    run = load_golden(run_dir)
    data = LayerData.from_golden(run, layer)
    return check_compiled(compile_step(data, step, params or sim_params(), samples=samples), data, sim=sim)


def check_compiled(c: CompiledStep, data: LayerData, *, sim: str = "verilator") -> CheckReport:
    """Run every program chunk of ``c`` on the model and the RTL; compare and report.

    Watchdog: each RTL run stops after 4x the model's cycles (+ 100k), so a wrong or hung core
    ends as a failed check, never a hang."""
    from .sim_tb.core_batch import CoreJob, run_core_programs
    p = c.params
    status_of = [(g, PRUNE_SLOT) for g in range(p.groups)]
    t0 = time.time()
    models = [run_program_fast(ch.program, ch.buffer_image, p, masks=ch.masks)  # = run_program, vectorised
              for ch in c.chunks]
    t1 = time.time()
    # every chunk in one simulator start, memories loaded and read back by backdoor
    rtls = run_core_programs([CoreJob(ch.program, ch.buffer_image, ch.masks, dir_count=len(ch.results),
                                      watchdog_cycles=4 * max(m.cycles, 1000) + 100_000)
                              for ch, m in zip(c.chunks, models)], p, sim=sim, ppu_status=status_of)
    t_model, t_rtl = t1 - t0, time.time() - t1
    model_err = next((int(m.error) for m in models if m.error), 0)
    rtl_err = next((int(r.error_code) if r.error else TIMEOUT_CODE for r in rtls if r.error or r.timed_out
                    or not r.done), 0)
    model_q = None if model_err else c.decode(lambda r: models[r.chunk].row(r.dir, r.length, p))
    rtl_q = None if rtl_err else c.decode(lambda r: np.array(rtls[r.chunk].dense_row(r.dir, r.length, p.off_end)))
    mism = _first_mismatch(c.result_name, rtl_q, model_q)
    n_diff = -1 if rtl_q is None or model_q is None else int(np.count_nonzero(rtl_q != model_q))
    counters = all(list(getattr(r, k))[:3] == list(getattr(m, k))[:3]
                   for r, m in zip(rtls, models) for k in ("step_nnz", "step_rows", "step_elems"))
    # Every PPU's status (threshold FIFO, sum|g|, generator state, counters) as the host reads it.
    counters = counters and all(r.ppu_status[g].as_dict() == m.ppus[g].status(PRUNE_SLOT).as_dict()
                                for r, m in zip(rtls, models) for g in range(p.groups) if not rtl_err)
    bound_info = _bound(c, model_q, models[0]) if model_q is not None else dict(
        within=False, max_error=float("nan"), max_bound=float("nan"), ratio=float("inf"), checked=0)
    sched, dense = schedule_cycles(c)
    golden_err = _golden_error(c, data, model_q) if model_q is not None else None
    threshold: dict[str, Any] = {}
    if c.step is Step.GTA and c.threshold and not model_err:
        sums = [pp.status(0).abs_sum for m in models for pp in m.ppus]
        threshold = dict(c.threshold, tau_batch=batch_threshold(sums, c.threshold["c_m"], c.threshold["c_shift"], p))
    written = int(model_q.size) if model_q is not None else 1
    return CheckReport(
        layer=c.layer, step=c.step.value, sim=sim, samples=c.samples, batch=int(data.require("I").shape[0]),
        units=c.n_units, ops=c.n_ops, programs=len(c.chunks), instructions=c.instructions,
        buffer_words=c.buffer_words, frac=dict(c.tensors.frac),
        bit_exact=mism is None and rtl_q is not None and model_q is not None,
        mismatches=n_diff, first_mismatch=str(mism) if mism else None, counters_equal=counters,
        rtl_error=rtl_err, model_error=model_err, within_bound=bound_info["within"],
        max_error=bound_info["max_error"], max_bound=bound_info["max_bound"], worst_ratio=bound_info["ratio"],
        checked_elements=bound_info["checked"], golden_max_error=golden_err,
        rtl_cycles=int(sum(r.cycles for r in rtls)), model_cycles=int(sum(m.cycles for m in models)),
        schedule_cycles=int(sched), contract_cycles=int(sum(m.cycles_contract for m in models)),
        dense_cycles=int(dense), density=float(np.count_nonzero(model_q)) / written if model_q is not None else 0.0,
        wall_s={"model": round(t_model, 2), "rtl": round(t_rtl, 2)}, threshold=threshold,
        skipped_ops=c.skipped_ops, skipped_units=c.skipped_units, weight_saved_cycles=weight_saved_cycles(c),
        run_cycles_per_s=sum(r.total_cycles for r in rtls) / max(1e-9, sum(r.sim_seconds for r in rtls)),
        pe_busy_cycles=int(sum(sum(u.op_cycles) for m in models for u in m.units)))


def _first_mismatch(name: str, rtl: np.ndarray | None, model: np.ndarray | None) -> Mismatch | None:
    if rtl is None or model is None:
        return None
    diff = np.argwhere(rtl != model)
    if diff.size == 0:
        return None
    idx = tuple(int(i) for i in diff[0])
    return Mismatch(name, idx, int(rtl[idx]), int(model[idx]))


def _bound(c: CompiledStep, q: np.ndarray, model: CoreRun) -> dict[str, Any]:
    """Model vs float64 reference within the section 2 bound (pruned elements: below tau)."""
    t = c.tensors
    scale = 2.0 ** -t.frac[t.result_name]
    value = q.astype(np.float64) * scale
    err = np.abs(value - t.reference)
    check = np.ones(q.shape, dtype=bool)
    ok = err <= t.bound
    if c.step is Step.GTA and c.threshold.get("fifo_full") and c.threshold.get("fifo"):
        tau = int(model.ppus[0].status(0).tau_pred)
        # The PPU changes only values with |g| < tau: those must come from a reference below tau.
        touched = np.abs(q) <= tau
        ok = np.where(touched, np.abs(t.reference) <= tau * scale + t.bound, ok)
        check = ~touched
    ratio = float(np.max(np.where(check, err / np.maximum(t.bound, 1e-300), 0.0))) if q.size else 0.0
    return dict(within=bool(np.all(ok)), max_error=float(np.max(np.where(check, err, 0.0))) if q.size else 0.0,
                max_bound=float(np.max(t.bound)) if q.size else 0.0, ratio=ratio, checked=int(np.count_nonzero(check)))


def _golden_error(c: CompiledStep, data: LayerData, q: np.ndarray) -> float | None:
    """Max |model - stored golden float32 tensor| for an unpruned complete result (reported only)."""
    if c.samples != data.require("I").shape[0] or (c.step is Step.GTA and c.threshold.get("fifo_full")):
        return None
    name = {Step.FORWARD: "O", Step.GTA: "dI", Step.GTW: "dW"}[c.step]
    if name not in data.arrays:
        return None
    ref = np.asarray(data.arrays[name], np.float64)
    if c.step is Step.FORWARD and data.spec.kind == "conv_relu":
        ref = np.maximum(ref, 0.0)
    if c.step is Step.GTA:
        ref = ref * c.tensors.mask
    return float(np.max(np.abs(q * 2.0 ** -c.tensors.frac[c.result_name] - ref)))


def _step_patterns(c: CompiledStep):
    """(layer shape, I pattern, dO pattern, GTA mask, arch) of a compiled step for the exact schedule."""
    from .arch.schedule import ArchParams
    from .perf.shapes import LayerShape
    s = c.shape
    ls = LayerShape(c.layer, s.in_channels, s.out_channels, s.height, s.width, s.out_height, s.out_width, s.kernel,
                    s.stride, s.pad, s.groups)
    t = c.tensors
    if c.step is Step.FORWARD:
        nz_in, nz_grad, mask = t.q["I"] != 0, np.zeros(s.output_shape, bool), None
    elif c.step is Step.GTA:
        nz_in, nz_grad, mask = np.ones(s.input_shape, bool), t.q["dO"] != 0, t.mask
    else:
        nz_in, nz_grad, mask = t.q["I"] != 0, t.q["dO"] != 0, None
    arch = ArchParams(groups=c.params.groups, dw=c.params.dw, w_max=max(2, c.params.w_max))
    return ls, nz_in, nz_grad, mask, arch


def schedule_cycles(c: CompiledStep) -> tuple[int, int]:
    """(section 10 schedule of this step's rows, dense baseline), both on the same G groups and
    the same program chunks (each chunk is a step of its own, section 10.2). The schedule runs the
    kernel rows the program runs (``c.live_rows``); the dense baseline runs every row."""
    from .perf.decompose import exact_units
    from .arch.schedule import schedule_units
    s = c.shape
    ls, nz_in, nz_grad, mask, arch = _step_patterns(c)
    ones_i, ones_g = np.ones(s.input_shape, bool), np.ones(s.output_shape, bool)
    totals = []
    sparse = exact_units(c.step.value, ls, nz_in, nz_grad, None, mask, c.live_rows)
    total, at = 0, 0
    for ch in c.chunks:
        total += schedule_units(sparse[at:at + len(ch.results)], arch).cycles
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
    totals[1] = sum(schedule_units(part, arch).cycles for part in parts)
    return int(totals[0]), int(totals[1])


def weight_saved_cycles(c: CompiledStep) -> int:
    """Section 10 cycles the skipped kernel rows save: the step's schedule with every row minus
    with the program's rows (one schedule over the whole step, chunks ignored)."""
    if not (c.skipped_ops or c.skipped_units):
        return 0
    from .perf.decompose import exact_units
    from .arch.schedule import schedule_units
    ls, nz_in, nz_grad, mask, arch = _step_patterns(c)
    every, kept = (schedule_units(exact_units(c.step.value, ls, nz_in, nz_grad, None, mask, live), arch).cycles
                   for live in (None, c.live_rows))
    return int(every - kept)


def write_report(reports: list[CheckReport], path: str | Path) -> Path:
    from .outdir import atomic_write_text
    return atomic_write_text(path, json.dumps([r.as_dict() for r in reports], indent=1, default=float) + "\n")
