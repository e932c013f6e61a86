"""`sparsetrain check`: one conv layer step of a golden run on the RTL, bit for bit against the model."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "check"
HELP = ("compile a golden layer step, run it on the core RTL under cocotb, compare bit for bit with the "
        "bit-accurate model and within the error bound with the float tensors; report cycles")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="training run dir with one golden/step_* dir, or a golden dir (section 9)")
    p.add_argument("--layer", default=None, help="conv layer name as stored in the golden manifest")
    p.add_argument("--step", default=None, choices=("forward", "gta", "gtw"))
    p.add_argument("--all", action="store_true",
                   help="every conv layer and step of the run (whole batch): summary table, JSON and plot")
    p.add_argument("--layers", default=None, help="with --all: only these layers (comma-separated)")
    p.add_argument("--steps", default=None, help="with --all: only these steps (comma-separated forward,gta,gtw)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="with --all: layer steps run in parallel processes")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="with --all: run the layer steps as tasks on the Ray cluster at ADDRESS ('local' starts one)")
    p.add_argument("--out", default=None, help="with --all: folder of summary.md/.json and speedup.png "
                   "(default RUN_DIR/check-all)")
    p.add_argument("--force", action="store_true", help="with --all: replace an earlier summary in --out")
    p.add_argument("--bare", action="store_true", help="with --all: also run each step's programs on the bare-"
                   "Verilator harness and report cocotb's free-running rate as a fraction of it")
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--samples", type=int, default=None,
                   help="run only the first N samples of the batch (default: the whole layer)")
    p.add_argument("--groups", type=int, default=None, help="PE groups of the simulated core (default 2)")
    p.add_argument("--core", action="append", default=None, metavar="NAME=VALUE",
                   help="second-generation switch of the simulated core (docs/architecture.md section 12): "
                        "PREFETCH, LOOKAHEAD, PINGPONG, SKIP_EMPTY, OP_SCAN, OSRC_WINDOW, UNIT_RATE; repeatable. "
                        "Default: the built set (PREFETCH=1 LOOKAHEAD=2 PINGPONG=1 SKIP_EMPTY=1 OP_SCAN=4 "
                        "OSRC_WINDOW=2 UNIT_RATE=8); the first generation: PREFETCH=0 LOOKAHEAD=1 PINGPONG=0 "
                        "SKIP_EMPTY=0 OSRC_WINDOW=1 UNIT_RATE=1")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from sparsetrain.check import check_layer, sim_params, write_report
    from sparsetrain.check.simconfig import parse_switches
    from sparsetrain.outdir import check_file_target

    check_file_target(args.json, "--json")  # before the simulation, never after it
    if args.groups is not None and not 1 <= args.groups <= 255:
        raise ValueError(f"--groups = {args.groups} is out of range; allowed: 1 .. 255")
    params = sim_params(**({"groups": args.groups} if args.groups is not None else {}), **parse_switches(args.core))
    if args.all or args.layers or args.steps:
        return _run_all(args, params)
    if args.layer is None or args.step is None:
        raise ValueError("--layer and --step are required; allowed: both, or --all for every layer and step")
    report = check_layer(args.run_dir, args.layer, args.step, sim=args.sim, samples=args.samples, params=params)
    print(report.text())
    if args.json:
        write_report([report], args.json)
    return 0 if report.ok else 1


def _run_all(args: argparse.Namespace, params) -> int:
    from sparsetrain.check_all import SUMMARY_FILES, check_all, write_summary
    from sparsetrain import outdir

    if args.layer or args.step:
        raise ValueError("--layer/--step name one layer step; allowed with --all: --layers/--steps")
    if not 1 <= args.jobs <= 256:
        raise ValueError(f"--jobs = {args.jobs} is out of range; allowed: 1 .. 256")
    split = (lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None)
    out = Path(args.out) if args.out else Path(args.run_dir) / "check-all"
    # the output folder is checked before the simulation (sparsetrain.outdir: nothing of the user's is replaced)
    target = outdir.plan(out, "check", force=args.force, writes=SUMMARY_FILES)
    summary = check_all(args.run_dir, layers=split(args.layers), steps=split(args.steps), samples=args.samples,
                        params=params, sim=args.sim, jobs=args.jobs, ray_address=args.ray, bare=args.bare)
    paths = write_summary(summary, target)
    print(summary.markdown())
    print(f"summary: {paths['markdown']}, {paths['json']}, plot {paths['plot']}")
    return 0 if summary.ok else 1
