"""`sparsetrain check` as a plain API: one layer step of a golden run on the RTL, checked two ways.

1. RTL against the bit-accurate model (``golden.bitexact.core_vec.run_program_fast``, equal to the scalar
   ``golden.bitexact.core_model.run_program``, of the same program):
   every result element, the per-step counters and the error status, bit for bit; the first
   differing element is named (tensor, n, channel, row, column, RTL value, model value).
2. The model against the float64 result of the golden float tensors: within the element-wise
   bound of section 2 (``golden.bitexact.rowconv.error_bound``). Pruned GTA rows are checked where the
   PPU kept the value; a pruned element must have been below the threshold (within the bound).

Cycles: the RTL's counter, the model's, the section 10 schedule and the dense baseline of the
same layer (section 10.5, same groups; ``cycles``). The simulated core is ``simconfig``'s; the
report and its text are ``report``'s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..arch.isa import CoreParams
from ..arch.ppu import N_PE
from ..arch.steps import Step
from ..compiler.compile import CompiledStep, LayerData, compile_step
from ..compiler.emit import PRUNE_SLOT
from ..golden.bitexact.core_model import CoreRun
from ..golden.bitexact.core_vec import run_program_fast
from ..golden.bitexact.ppu_model import PPUThresholdFIFO
from .cycles import schedule_cycles, weight_saved_cycles
from .functions import bias_check, fifo_entries, threshold_check
from .report import CheckReport, Mismatch
from .simconfig import TIMEOUT_CODE, sim_params



def check_layer(run_dir: str | Path, layer: str, step: str, *, sim: str = "verilator", samples: int | None = None,
                params: CoreParams | None = None) -> CheckReport:
    """Compile ``layer``'s ``step`` from the golden run, run it on the RTL and the model, compare."""
    from ..golden.training.tensors import load_golden
    if step not in tuple(s.value for s in Step):
        raise ValueError(f"step = {step!r} is out of range; allowed: forward, gta, gtw")
    run = load_golden(run_dir)
    data = LayerData.from_golden(run, layer)
    return check_compiled(compile_step(data, step, params or sim_params(), samples=samples), data, sim=sim)


def check_compiled(c: CompiledStep, data: LayerData, *, sim: str = "verilator") -> CheckReport:
    """Run every program chunk of ``c`` on the model and the RTL; compare and report.

    Watchdog: each RTL run stops after 4x the model's cycles (+ 100k), so a wrong or hung core
    ends as a failed check, never a hang."""
    from ..sim_tb.core_batch import CoreJob, run_core_programs
    p = c.params
    # every group's PPU status of the pruned slot, once per FIFO entry index (the whole FIFO)
    status_of = [(g, PRUNE_SLOT, i) for g in range(p.groups) for i in range(p.n_f)]
    bias_chunks = c.bias.chunks if c.bias is not None else []
    # a pruned GTA's programs run one after the other without a reset: the batch's sum|g| and the FIFO
    # carry over to the END_BATCH at the end of the last one (compiler.emit.continuation_header)
    carry = bool(c.threshold.get("end_batch"))
    t0 = time.time()
    models: list[CoreRun] = []
    for ch in c.chunks:   # = run_program, vectorised
        models.append(run_program_fast(ch.program, ch.buffer_image, p, masks=ch.masks,
                                       directory=ch.directory or None,
                                       ppus=models[-1].ppus if carry and models else None))
    db_models = [run_program_fast(b.chunk.program, b.chunk.buffer_image, p, directory=b.chunk.directory or None)
                 for b in bias_chunks]
    t1 = time.time()
    # every chunk in one simulator start, memories loaded and read back by backdoor
    jobs = [CoreJob(ch.program, ch.buffer_image, ch.masks, dir_count=len(ch.results),
                    watchdog_cycles=4 * max(m.cycles, 1000) + 100_000, keep_state=carry, directory=ch.directory)
            for ch, m in zip(c.chunks, models)]
    jobs += [CoreJob(b.chunk.program, b.chunk.buffer_image, dir_count=0, db_count=len(b.channels),
                     directory=b.chunk.directory,
                     watchdog_cycles=4 * max(m.total_cycles, 1000) + 100_000) for b, m in zip(bias_chunks, db_models)]
    all_rtl = run_core_programs(jobs, p, sim=sim, ppu_status=status_of)
    rtls, db_rtls = all_rtl[:len(c.chunks)], all_rtl[len(c.chunks):]
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
    counters = counters and all(r.ppu_status[k].as_dict() == m.ppus[g].status(PRUNE_SLOT, i).as_dict()
                                for r, m in zip(rtls, models) for k, (g, _, i) in enumerate(status_of)
                                if not rtl_err)
    bound_info = _bound(c, model_q, models[0]) if model_q is not None else dict(
        within=False, max_error=float("nan"), max_bound=float("nan"), ratio=float("inf"), checked=0)
    sched, dense = schedule_cycles(c)
    golden_err = _golden_error(c, data, model_q) if model_q is not None else None
    threshold: dict[str, Any] = {}
    if c.step is Step.GTA and c.threshold and data.pruned and not rtl_err:
        # the hardware's FIFOs after the step's last program (the restored entries, the pushed tau_batch)
        n_f = p.n_f
        fifos = [fifo_entries(rtls[-1].ppu_status[g * n_f:(g + 1) * n_f], n_f) for g in range(p.groups)]
        threshold = threshold_check(c, data, fifos)
    db: dict[str, Any] = {}
    if c.bias_refused:
        db = dict(ok=True, note=f"not compiled: {c.bias_refused}")
    if c.bias is not None:
        db_err = any(r.error or r.timed_out or not r.done for r in db_rtls)
        rtl_db, model_db = [0] * len(c.bias.reference), [0] * len(c.bias.reference)
        for b, r, m in zip(bias_chunks, db_rtls, db_models):
            for i, f in enumerate(b.channels):
                rtl_db[f] = r.db[i] if i < len(r.db) else 0
                model_db[f] = m.db_read(i, p)
        db = bias_check(c.bias, rtl_db, model_db, data, complete=c.samples == data.require("I").shape[0])
        db.update(rtl_cycles=int(sum(r.total_cycles for r in db_rtls)),
                  model_cycles=int(sum(m.total_cycles for m in db_models)),
                  cycles_equal=[r.total_cycles for r in db_rtls] == [m.total_cycles for m in db_models],
                  programs=len(bias_chunks), units=sum(len(b.chunk.results) for b in bias_chunks))
        db["ok"] = bool(db["ok"] and db["cycles_equal"] and not db_err)
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
        wall_s={"model": round(t_model, 2), "rtl": round(t_rtl, 2)}, threshold=threshold, db=db,
        skipped_ops=c.skipped_ops, skipped_units=c.skipped_units, weight_saved_cycles=weight_saved_cycles(c),
        run_cycles_per_s=sum(r.total_cycles for r in rtls) / max(1e-9, sum(r.sim_seconds for r in rtls)),
        pe_busy_cycles=int(sum(m.pe_busy_cycles for m in models)),
        pe_useful_cycles=useful_cycles(c), pes=p.groups * N_PE)


def useful_cycles(c: CompiledStep) -> int:
    """Useful PE-cycles (architecture 12.7) of every program chunk the RTL runs, from its operand rows."""
    from ..golden.bitexact.utilisation import program_useful
    return int(sum(sum(program_useful(ch.program, ch.buffer_image, c.params, ch.masks)) for ch in c.chunks))


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
        tau = restored_tau_pred(c.threshold["fifo"], c.params.n_f)
        # The PPU changes only values with |g| < tau: those must come from a reference below tau.
        touched = np.abs(q) <= tau
        ok = np.where(touched, np.abs(t.reference) <= tau * scale + t.bound, ok)
        check = ~touched
    ratio = float(np.max(np.where(check, err / np.maximum(t.bound, 1e-300), 0.0))) if q.size else 0.0
    return dict(within=bool(np.all(ok)), max_error=float(np.max(np.where(check, err, 0.0))) if q.size else 0.0,
                max_bound=float(np.max(t.bound)) if q.size else 0.0, ratio=ratio, checked=int(np.count_nonzero(check)))


def restored_tau_pred(fifo: list[int], n_f: int) -> int:
    """The predicted threshold the step pruned with: the mean of the restored FIFO (section 7; read
    from the program's record, since the step's own END_BATCH has pushed a new entry since)."""
    f = PPUThresholdFIFO(n_f)
    for v in fifo:
        f.push(v)
    return f.mean()


def _golden_error(c: CompiledStep, data: LayerData, q: np.ndarray) -> float | None:
    """Max |model - stored golden float32 tensor| for an unpruned complete result (reported only)."""
    if c.samples != data.require("I").shape[0] or (c.step is Step.GTA and c.threshold.get("fifo_full")):
        return None
    name = {Step.FORWARD: "O", Step.GTA: "dI", Step.GTW: "dW"}[c.step]
    if name not in data.arrays:
        return None
    ref = np.asarray(data.arrays[name], np.float64)
    if c.step is Step.FORWARD and data.kind == "conv_relu":
        ref = np.maximum(ref, 0.0)
    if c.step is Step.GTA:
        ref = ref * c.tensors.mask
    return float(np.max(np.abs(q * 2.0 ** -c.tensors.frac[c.result_name] - ref)))
