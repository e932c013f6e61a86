"""`make demo` as a plain API: train with pruning, export one layer, run its three steps on the RTL.

``run_demo`` trains a small AlexNet (width 1/8) with stochastic gradient pruning on Fashion-MNIST
for a short run, exports the golden tensors of one conv layer at the last step (FIFO full, so
pruning is on), writes the core's Verilog, runs Forward, GTA and GTW of that layer on the RTL
under Verilator, checks every result bit for bit against the bit-accurate model and within the
error bound against the float tensors, and writes report.md / report.json next to the training
plot. Progress goes to ``log`` (print by default).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import outdir
from .arch.fixedpoint import check_param
from .arch.steps import STEP_NAMES

DEMO_LAYER = "features.2.conv"   # 3x3, padding 2, 8 -> 24 channels on 17x17 rows at width 1/8
DEMO_STEPS = 120                 # optimizer steps of the short training run (batch 32)
DEMO_SAMPLES = 2                 # batch samples simulated per step (0: the whole batch)


@dataclass
class DemoResult:
    out: Path
    metrics: dict[str, Any]
    reports: list[Any]
    verilog: Path
    wall_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)


DEMO_FILES = ("train", "core.v", "report.json", "report.md")  # what a demo writes into --out


def check_out_dir(out: str | Path, force: bool) -> Path:
    """Create or adopt ``out`` under the output-folder rule (sparsetrain.outdir): a new or empty
    folder, or one an earlier demo wrote; ``force`` removes exactly that demo's files."""
    return outdir.plan(out, "demo", force=force, writes=DEMO_FILES).apply()


def _plan_out(out: str | Path, force: bool, train_dir: str | Path | None) -> outdir.OutDir:
    """The --out plan; a --train-dir inside --out (an earlier demo's training) is kept by --force."""
    od = outdir.plan(out, "demo", force=force, writes=DEMO_FILES)
    if train_dir is not None:
        t, o = Path(train_dir).resolve(), od.path.resolve()
        if t == o:
            raise ValueError(f"--train-dir = {str(train_dir)!r} is --out itself; allowed: a run dir outside --out "
                             f"or an earlier demo's {o / 'train'}")
        if o in t.parents:
            keep = t.relative_to(o).parts[0]
            od.clear = [c for c in od.clear if c != keep]
    return od


def train_config(steps: int = DEMO_STEPS, layer: str = DEMO_LAYER, threads: int = 2, progress: bool = True):
    from .golden.training.train import TrainConfig
    check_param("steps", steps, 2, 100000)
    return TrainConfig(model="alexnet", p=0.9, prune=True, epochs=1, batch_size=32, seed=1, n_f=4,
                       train_samples=steps * 32, test_samples=1000, max_steps=steps, width_mult=0.125,
                       threads=threads, progress=progress, dump_layers=[layer], dump_steps=[steps - 1])


def write_verilog(params, path: Path, sim: str = "verilator") -> Path:
    """Generate the core's Verilog for these parameters and compile it for the simulator (both
    cached under build/sim per configuration); copy the Verilog to ``path``."""
    from .sim_tb.core_driver import build_core, core_source
    outdir.atomic_write_text(path, core_source(build_core(params, sim, backdoor=True)))  # the build check runs
    return path


def run_demo(out: str | Path, *, force: bool = False, samples: int = DEMO_SAMPLES, steps: int = DEMO_STEPS,
             layer: str = DEMO_LAYER, sim: str = "verilator", train_dir: str | Path | None = None,
             run_steps: tuple[str, ...] = STEP_NAMES, log: Callable[[str], None] = print,
             core: dict[str, int] | None = None) -> DemoResult:
    """The whole demo; ``train_dir`` reuses an existing training run instead of training, and
    ``run_steps`` limits the layer steps simulated (the tests' reduced run); ``core``: the
    simulated core's second-generation switches (CoreParams keywords, docs/architecture.md 12)."""
    from .compiler import LayerData, compile_step
    from .check import check_compiled, sim_params, write_report
    from .golden.training.tensors import load_golden

    # Every argument is checked before --force removes anything or a simulation starts.
    check_param("samples", samples, 0, 1 << 20)
    if sim not in ("verilator", "icarus"):
        raise ValueError(f"sim = {sim!r} is out of range; allowed: verilator, icarus")
    bad_steps = [st for st in run_steps if st not in STEP_NAMES]
    if bad_steps:
        raise ValueError(f"run_steps = {run_steps!r} is out of range; allowed: a subset of {STEP_NAMES}")
    plan = _plan_out(out, force, train_dir)
    if train_dir is not None:
        if not (Path(train_dir) / "metrics.json").is_file():
            raise ValueError(f"--train-dir = {str(train_dir)!r} has no metrics.json; allowed: a training run dir "
                             f"(sparsetrain train --dump-tensors)")
        load_golden(train_dir).layer(layer)  # the run's golden tensors load and hold the layer
    else:
        from .golden.training.train import make_model
        from .golden.training.networks import conv_layers
        convs = [n for n, _, _ in conv_layers(make_model(train_config(steps, layer, progress=False)))]
        if layer not in convs:
            raise ValueError(f"--layer = {layer!r} is not a conv of the demo's AlexNet; allowed: {', '.join(convs)}")
    out_path = plan.apply()
    t0 = time.time()
    wall: dict[str, float] = {}
    run_dir = Path(train_dir) if train_dir is not None else out_path / "train"
    params = sim_params(**(core or {}))
    plan.record(*(n for n in DEMO_FILES if n != "train" or train_dir is None))
    # The Verilog generation and Verilator build (minutes on a fresh machine, cached afterwards) run
    # in the background while the network trains; both are subprocess-bound.
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max_workers=1)
    verilog_job = pool.submit(write_verilog, params, out_path / "core.v", sim)
    if train_dir is None:
        from .golden.training.train import train
        cfg = train_config(steps, layer)
        log(f"[1/4] training AlexNet (width 1/8) with pruning p = {cfg.p} on Fashion-MNIST: {steps} steps of "
            f"batch {cfg.batch_size}, exporting {layer} at the last step -> {run_dir}")
        train(cfg, run_dir)
    else:
        log(f"[1/4] reusing the training run {run_dir}")
    wall["train"] = round(time.time() - t0, 1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    golden = load_golden(run_dir)
    data = LayerData.from_golden(golden, layer)
    batch = int(data.require("I").shape[0])
    n = batch if samples in (0, None) else min(samples, batch)
    log(f"[2/4] generating the core's Verilog (G = {params.groups} groups of 3 PEs, ACC_W = {params.acc_w}) and "
        f"compiling it for {sim} (cached under build/sim; a first build takes minutes)")
    t1 = time.time()
    verilog_path = verilog_job.result()
    pool.shutdown()
    wall["verilog"] = round(time.time() - t1, 1)
    reports = []
    for step in run_steps:
        t2 = time.time()
        compiled = compile_step(data, step, params, samples=n)
        log(f"[3/4] {layer} {step}: {compiled.n_units} units, {compiled.n_ops} row ops ({n} of {batch} samples, "
            f"{len(compiled.chunks)} program(s)); running on {sim} and on the bit-accurate model ...")
        rep = check_compiled(compiled, data, sim=sim)
        wall[step] = round(time.time() - t2, 1)
        log("      " + ("bit-exact" if rep.bit_exact else f"MISMATCH: {rep.first_mismatch}")
            + f", RTL {rep.rtl_cycles} cycles vs dense {rep.dense_cycles} ({rep.speedup:.2f}x), "
              f"utilisation busy {rep.busy_utilisation:.3f} / useful {rep.useful_utilisation:.3f}, "
              f"{'within' if rep.within_bound else 'OUTSIDE'} the error bound ({wall[step]:.0f} s)")
        for line in function_lines(rep):
            log("      " + line)
        reports.append(rep)
    wall["total"] = round(time.time() - t0, 1)
    result = DemoResult(out_path, metrics, reports, verilog_path, wall)
    write_report(reports, out_path / "report.json")
    outdir.atomic_write_text(out_path / "report.md", report_markdown(result, run_dir))
    log("[4/4] " + summary(result, run_dir))
    return result


def _plot_path(run_dir: Path) -> Path | None:
    pngs = sorted(run_dir.glob("*.png"))
    return pngs[0] if pngs else None


def summary(result: DemoResult, run_dir: Path) -> str:
    s = result.metrics.get("summary", {})
    acc, dens = s.get("test_acc"), s.get("grad_density")
    lines = [f"training: test accuracy {acc:.2f}% after {result.metrics.get('steps')} steps, gradient density "
             f"after pruning {dens:.3f}, activation density {s.get('activation_density', 0):.3f}"
             if acc is not None and dens is not None else "training: no summary"]
    for r in result.reports:
        lines.append(f"{r.layer} {r.step:7s}: RTL vs model {'bit-exact' if r.bit_exact else 'MISMATCH'}; "
                     f"PE utilisation busy {r.busy_utilisation:.3f}, useful {r.useful_utilisation:.3f}; "
                     f"RTL {r.rtl_cycles} cycles (schedule {r.schedule_cycles}), dense {r.dense_cycles} "
                     f"-> {r.speedup:.2f}x; error {'within' if r.within_bound else 'OUTSIDE'} the bound")
        lines += [f"{r.layer} {r.step:7s}: {line}" for line in function_lines(r)]
    plot = _plot_path(run_dir)
    lines.append(f"{'PASS' if result.ok else 'FAIL'} in {result.wall_s.get('total', 0):.0f} s; full report "
                 f"{result.out / 'report.md'} and {result.out / 'report.json'}"
                 + (f", training plot {plot}" if plot else "") + f", Verilog {result.verilog}")
    return "\n".join(lines)


def report_markdown(result: DemoResult, run_dir: Path) -> str:
    s = result.metrics.get("summary", {})
    plot = _plot_path(run_dir)
    rows = ["| step | units | row ops | RTL vs model | max error / bound | RTL cycles | model cycles | schedule "
            "(s.10) | dense baseline | speedup | busy / useful utilisation | output density "
            "| sim cycles/s (free-running / with loads) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result.reports:
        rows.append(f"| {r.step} | {r.units} | {r.ops} | {'bit-exact' if r.bit_exact else r.first_mismatch} | "
                    f"{r.worst_ratio:.3f} | {r.rtl_cycles} | {r.model_cycles} | {r.schedule_cycles} | "
                    f"{r.dense_cycles} | {r.speedup:.2f}x | {r.busy_utilisation:.3f} / {r.useful_utilisation:.3f} | "
                    f"{r.density:.3f} | {r.run_cycles_per_s:,.0f} / {r.sim_rate:,.0f} |")
    r0 = result.reports[0] if result.reports else None
    text = [
        "# sparsetrain demo", "",
        f"Verdict: **{'PASS' if result.ok else 'FAIL'}** ({result.wall_s.get('total', 0):.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.wall_s.items() if k != "total") + ")", "",
        "## Training", "",
        f"AlexNet (width 1/8) with stochastic activation-gradient pruning (p = 0.9) on Fashion-MNIST, "
        f"{result.metrics.get('steps')} steps: test accuracy {_num(s.get('test_acc'), 2)}%, gradient density after "
        f"pruning {_num(s.get('grad_density'))}, activation density {_num(s.get('activation_density'))}.",
        f"Training plot: `{plot}`." if plot else "", "",
        "## One layer on the RTL", "",
        (f"Layer `{r0.layer}`, {r0.samples} of {r0.batch} batch samples, core with the parameters "
         f"`{result.reports[0] and json.dumps(_params_of(result))}`; Verilog: `{result.verilog}`.") if r0 else "",
        "", *rows, "",
        "RTL vs model: every result element of the step, the per-step counters and the error status are "
        "compared bit for bit. Error: the bit-accurate result against float64 of the golden float tensors "
        "(docs/architecture.md section 2 bound; pruned GTA values are checked against the threshold). "
        "Dense baseline: the performance model's baseline of the same layer and data on the same groups "
        f"(section 10.5; with the core's microarchitecture switches, {_micro_name()}, as section 12.8 gives them "
        "to the baseline). Utilisation over PEs x RTL cycles: busy = PE-cycles holding an op, useful = PE-cycles "
        "consuming a non-zero operand that yields a product (section 12.7, counted on the operand rows of the "
        "programs the RTL ran).", "",
    ]
    functions = [f"* {r.step}: {line}" for r in result.reports for line in function_lines(r)]
    if functions:
        text += ["## Bias gradients and the batch threshold", "", *functions, "",
                 "db: per output channel, read back from the core (the sum over the groups' banks, "
                 "docs/architecture.md section 11.6), against the bit-accurate model and the float sums. "
                 "Threshold: every group's FIFO read through the PPU status port after the GTA; tau_batch "
                 "computed by the core's controller from every group's sum|g| (section 11.3) against the "
                 "float DBTD threshold of the same gradient (section 7.2).", ""]
    return "\n".join(text)


def function_lines(r: Any) -> list[str]:
    """The bias-gradient and threshold lines of a report (GTA of a layer with a bias / pruning)."""
    from .check.report import db_text, threshold_text
    out = []
    if r.db:
        out.append(db_text(r.db))
    if r.threshold and "fifo" in r.threshold:
        out.append(threshold_text(r.threshold))
    return out


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _micro_name() -> str:
    from .arch.microarch import of_params
    from .check.simconfig import sim_params
    m = of_params(sim_params())
    return f"{m.name}, baseline {m.dense_baseline().name}"


def _params_of(result: DemoResult) -> dict[str, int]:
    from .check.simconfig import SIM_PARAMS
    return dict(SIM_PARAMS)
