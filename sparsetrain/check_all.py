"""`sparsetrain check RUN_DIR --all` as a plain API: every conv layer and step of a golden run on the RTL.

``check_all(run_dir)`` runs ``check.harness.check_layer`` for every (layer, step) of the run's
golden tensors (or the ``layers`` / ``steps`` given), the whole batch by default, as
independent jobs: in this process (``jobs=1``), in ``jobs`` worker processes, or as Ray tasks
on the cluster at ``ray_address``. Every worker uses the same Verilator build cache (one core
build, guarded by a file lock). A (layer, step) the core cannot run (kernel, stride, row
length, memory or accumulator limits: ``compiler.geometry``) is listed with the compiler's reason.
``write_summary`` writes the table as markdown and JSON and plots the speedup per layer/step.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import outdir
from .arch.ppu import N_PE
from .arch.steps import STEP_NAMES


@dataclass
class StepResult:
    """One row of the summary: a (layer, step) checked, or not run and why."""

    layer: str
    step: str
    status: str                    # "bit-exact", "MISMATCH", "FAIL" (bound / counters / error) or "not run"
    reason: str = ""               # why not run / what failed (first mismatch)
    rtl_cycles: int = 0
    model_cycles: int = 0
    dense_cycles: int = 0
    speedup: float = 0.0
    utilisation: float = 0.0       # PE-cycles in operations / (PEs x RTL cycles)
    sim_cycles_per_s: float = 0.0  # simulated cycles per wall second of the RTL part (loads, start-up, run)
    run_cycles_per_s: float = 0.0  # the free-running core alone
    bare_cycles_per_s: float = 0.0  # the same programs on the bare-Verilator harness (--bare), else 0
    samples: int = 0
    programs: int = 0
    wall_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)  # check.report.CheckReport.as_dict()
    useful_utilisation: float = 0.0  # useful PE-cycles (architecture 12.7) / (PEs x RTL cycles)

    @property
    def ok(self) -> bool:
        return self.status in ("bit-exact", "not run")


@dataclass
class Summary:
    run_dir: str
    results: list[StepResult]
    wall_s: float
    jobs: int
    backend: str

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and any(r.status == "bit-exact" for r in self.results)

    def verdicts(self) -> dict[tuple[str, str], str]:
        return {(r.layer, r.step): r.status for r in self.results}

    def as_dict(self) -> dict[str, Any]:
        return dict(run_dir=self.run_dir, wall_s=self.wall_s, jobs=self.jobs, backend=self.backend, ok=self.ok,
                    results=[asdict(r) for r in self.results])

    def markdown(self) -> str:
        checked = [r for r in self.results if r.status != "not run"]
        rtl = sum(r.rtl_cycles for r in checked)
        lines = [f"# check --all: {self.run_dir}", "",
                 f"{len(checked)} layer steps on the core RTL, {sum(r.status == 'bit-exact' for r in checked)} "
                 f"bit-exact; {len(self.results) - len(checked)} not run; {rtl:,} RTL cycles; {self.wall_s:.0f} s wall "
                 f"({self.backend}, {self.jobs} job(s))", "",
                 "| layer | step | verdict | RTL cycles | model cycles | dense cycles | speedup | busy utilisation "
                 "| useful utilisation "
                 "| cycles/s (with loading) | cycles/s (free run) | bare Verilator cycles/s (free run / bare) "
                 "| samples | programs | wall s |",
                 "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.results:
            if r.status == "not run":
                lines.append(f"| {r.layer} | {r.step} | not run: {r.reason} | | | | | | | | | | | | |")
                continue
            verdict = r.status + (f": {r.reason}" if r.reason else "")
            bare_col = (f"{r.bare_cycles_per_s:,.0f} ({r.run_cycles_per_s / r.bare_cycles_per_s:.2f})"
                        if r.bare_cycles_per_s else "")
            lines.append(f"| {r.layer} | {r.step} | {verdict} | {r.rtl_cycles:,} | {r.model_cycles:,} | "
                         f"{r.dense_cycles:,} | {r.speedup:.2f} | {r.utilisation:.3f} | {r.useful_utilisation:.3f} | "
                         f"{r.sim_cycles_per_s:,.0f} | "
                         f"{r.run_cycles_per_s:,.0f} | {bare_col} | {r.samples} | {r.programs} | {r.wall_s:.1f} |")
        return "\n".join(lines) + "\n"


def plan(run_dir: str | Path, layers: Sequence[str] | None = None,
         steps: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(layer, step) jobs: the run's golden conv layers in manifest order times the steps."""
    from .golden.training.tensors import load_golden
    steps = list(steps or STEP_NAMES)
    for s in steps:
        if s not in STEP_NAMES:
            raise ValueError(f"steps = {s!r} is out of range; allowed: {', '.join(STEP_NAMES)}")
    names = list(load_golden(run_dir).manifest.get("layers", {}))
    if not names:
        raise ValueError(f"run_dir = {str(run_dir)!r} has no golden layers; allowed: a run trained with "
                         "--dump-tensors (or its golden dir)")
    if layers:
        unknown = [x for x in layers if x not in names]
        if unknown:
            raise ValueError(f"layers = {', '.join(unknown)} not in the run; allowed: {', '.join(names)}")
        names = [x for x in names if x in layers]
    return [(layer, step) for layer in names for step in steps]


def check_one(run_dir: str, layer: str, step: str, samples: int | None, params: dict[str, int],
              sim: str = "verilator", bare: bool = False) -> StepResult:
    """One (layer, step): compile, run on the model and the RTL, compare; never raises for a
    layer the core cannot run (the result says why). ``bare``: also run the same programs on
    the bare-Verilator harness (``sim_tb.bare``) for its free-running rate. A plain function:
    a process pool or a Ray task runs it as it is."""
    from .compiler import LayerData, compile_step
    from .arch.isa import CoreParams
    from .check import check_compiled
    from .golden.training.tensors import load_golden
    t0 = time.time()
    try:
        data = LayerData.from_golden(load_golden(run_dir), layer)
        c = compile_step(data, step, CoreParams(**params), samples=samples)
        rep = check_compiled(c, data, sim=sim)
    except ValueError as e:  # the compiler's refusal names the limit
        return StepResult(layer, step, "not run", reason=str(e), wall_s=time.time() - t0)
    bare_rate = _bare_rate(c) if bare and rep.ok else 0.0
    d = rep.as_dict()
    if rep.ok:
        status, reason = "bit-exact", ""
    elif not rep.bit_exact and rep.first_mismatch:
        status, reason = "MISMATCH", f"{rep.mismatches} elements differ; first {rep.first_mismatch}"
    else:
        status = "FAIL"
        reason = "; ".join(x for x in (
            "" if rep.counters_equal else "counters or PPU status differ",
            "" if rep.within_bound else "model outside the float bound",
            f"RTL error code {rep.rtl_error}" if rep.rtl_error else "",
            "" if rep.threshold.get("ok", True) else "batch threshold (FIFO / tau_batch) outside its bound",
            "" if rep.db.get("ok", True) else "bias gradient db differs or outside its bound") if x)
    pes = N_PE * CoreParams(**params).groups
    return StepResult(layer, step, status, reason, rep.rtl_cycles, rep.model_cycles, rep.dense_cycles,
                      rep.speedup, rep.pe_busy_cycles / (pes * rep.rtl_cycles) if rep.rtl_cycles else 0.0,
                      rep.sim_rate, rep.run_cycles_per_s, bare_rate, rep.samples, rep.programs, time.time() - t0, d,
                      useful_utilisation=rep.useful_utilisation)


def _bare_rate(c) -> float:
    """Free-running cycles per second of the bare-Verilator harness on the step's programs."""
    from .sim_tb.bare import rates
    from .sim_tb.core_batch import CoreJob
    cycles, secs = rates([CoreJob(ch.program, ch.buffer_image, ch.masks, dir_count=len(ch.results), directory=ch.directory)
                          for ch in c.chunks], c.params)
    return cycles / secs if secs > 0 else 0.0  # cycles: the same core and programs as the cocotb run


def _progress(total: int, enabled: bool) -> Callable[[StepResult], None]:
    from tqdm import tqdm
    bar = tqdm(total=total, desc="check --all", unit="step", disable=not enabled, file=sys.stderr)

    def done(r: StepResult) -> None:
        bar.set_postfix_str(f"{r.layer} {r.step}: {r.status}")
        bar.update(1)
        if bar.n == total:
            bar.close()
    return done


def check_all(run_dir: str | Path, *, layers: Sequence[str] | None = None, steps: Sequence[str] | None = None,
              samples: int | None = None, params: Any = None, sim: str = "verilator", jobs: int = 1,
              ray_address: str | None = None, progress: bool = True, bare: bool = False) -> Summary:
    """Every (layer, step) of the run on the RTL; ``jobs`` processes here, or Ray tasks on ``ray_address``."""
    from .check.simconfig import sim_params
    from .sim_tb.runner import build_root
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs = {jobs!r} is out of range; allowed: an integer >= 1")
    run_dir = str(Path(run_dir).resolve())
    todo = plan(run_dir, layers, steps)
    pdict = (params or sim_params()).as_dict()
    done = _progress(len(todo), progress)
    t0 = time.time()
    results: dict[tuple[str, str], StepResult] = {}
    if ray_address:
        backend = f"ray {ray_address}"
        for r in _run_ray(ray_address, todo, run_dir, samples, pdict, sim, str(build_root().parent), jobs, bare):
            results[(r.layer, r.step)] = r
            done(r)
    elif jobs == 1:
        backend = "local"
        for layer, step in todo:
            r = check_one(run_dir, layer, step, samples, pdict, sim, bare)
            results[(layer, step)] = r
            done(r)
    else:
        backend = "local processes"
        _prebuild(pdict, sim, bare)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # spawn, not fork: a forked copy of a process with torch's (or Ray's) threads can hang
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = [pool.submit(check_one, run_dir, layer, step, samples, pdict, sim, bare) for layer, step in todo]
            for f in as_completed(futs):
                r = f.result()
                results[(r.layer, r.step)] = r
                done(r)
    ordered = [results[k] for k in todo]
    return Summary(run_dir, ordered, time.time() - t0, jobs, backend)


def _prebuild(pdict: dict[str, int], sim: str, bare: bool = False) -> None:
    """Build the core once before workers start (they would wait on the build lock anyway, each
    first generating the Verilog only to find the build there)."""
    from .arch.isa import CoreParams
    from .sim_tb.core_driver import build_core
    build_core(CoreParams(**pdict), sim, backdoor=True)
    if bare:
        from .sim_tb.bare import build_bare
        build_bare(CoreParams(**pdict))


def _run_ray(address: str, todo: list[tuple[str, str]], run_dir: str, samples: int | None,
             pdict: dict[str, int], sim: str, build_dir: str, jobs: int, bare: bool = False):
    """Each (layer, step) as a Ray task; every worker uses the same build cache (``build_dir``,
    a shared folder on a real cluster) and reads the run from ``run_dir`` (shared too).
    ``address`` "local" starts a cluster on this machine (``jobs`` CPUs when jobs > 1); a Ray
    session this process already joined is used as it is."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray; allowed: install it with `pip install 'sparsetrain[ray]'` "
                         "(make setup does)") from None
    env = {"env_vars": {"SPARSETRAIN_BUILD_DIR": build_dir}}
    started = not ray.is_initialized()
    if started:
        extra = {"num_cpus": jobs} if address == "local" and jobs > 1 else {}
        ray.init(address=address, runtime_env=env, log_to_driver=False, **extra)
    try:
        task = ray.remote(num_cpus=1)(check_one)
        _prebuild(pdict, sim, bare)
        pending = [task.remote(run_dir, layer, step, samples, pdict, sim, bare) for layer, step in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


SUMMARY_FILES = ("summary.md", "summary.json", "speedup.png")


def write_summary(summary: Summary, out_dir: str | Path | outdir.OutDir, *, force: bool = False) -> dict[str, Path]:
    """summary.md, summary.json and speedup.png in ``out_dir`` under the output-folder rule of
    sparsetrain.outdir (a user's file is never replaced; ``force`` replaces an earlier summary).
    ``out_dir`` may be a folder already planned (checked before the simulation) by the caller."""
    target = out_dir if isinstance(out_dir, outdir.OutDir) else outdir.plan(out_dir, "check", force=force,
                                                                            writes=SUMMARY_FILES)
    out = target.apply()
    paths = {"markdown": out / "summary.md", "json": out / "summary.json", "plot": out / "speedup.png"}
    target.record(*SUMMARY_FILES)
    outdir.atomic_write_text(paths["markdown"], summary.markdown())
    outdir.atomic_write_text(paths["json"], json.dumps(summary.as_dict(), indent=1, default=float) + "\n")
    plot_speedup(summary, paths["plot"])
    return paths


def plot_speedup(summary: Summary, path: Path) -> None:
    """Bars of the speedup over the dense baseline per layer, one colour per step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = list(dict.fromkeys(r.layer for r in summary.results))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(layers) + 2), 4))
    width = 0.8 / len(STEP_NAMES)
    for i, step in enumerate(STEP_NAMES):
        vals = [next((r.speedup for r in summary.results if r.layer == layer and r.step == step
                      and r.status != "not run"), 0.0) for layer in layers]
        ax.bar([x + (i - 1) * width for x in range(len(layers))], vals, width, label=step)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set_ylabel("speedup over dense (RTL cycles)")
    ax.set_title("check --all: speedup per layer and step (0 = not run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
