"""`sparsetrain check`: one conv layer step of a golden run on the RTL, bit for bit against the model."""
from __future__ import annotations

import argparse

NAME = "check"
HELP = ("compile a golden layer step, run it on the core RTL under cocotb, compare bit for bit with the "
        "bit-accurate model and within the error bound with the float tensors; report cycles")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="training run dir with one golden/step_* dir, or a golden dir (section 9)")
    p.add_argument("--layer", required=True, help="conv layer name as stored in the golden manifest")
    p.add_argument("--step", required=True, choices=("forward", "gta", "gtw"))
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--samples", type=int, default=None,
                   help="run only the first N samples of the batch (default: the whole layer)")
    p.add_argument("--groups", type=int, default=None, help="PE groups of the simulated core (default 2)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from sparsetrain.compiler_check import check_layer, sim_params, write_report
    from sparsetrain.golden.outdir import check_file_target

    check_file_target(args.json, "--json")  # before the simulation, never after it
    if args.groups is not None and not 1 <= args.groups <= 255:
        raise ValueError(f"--groups = {args.groups} is out of range; allowed: 1 .. 255")
    params = sim_params(**({"groups": args.groups} if args.groups is not None else {}))
    report = check_layer(args.run_dir, args.layer, args.step, sim=args.sim, samples=args.samples, params=params)
    print(report.text())
    if args.json:
        write_report([report], args.json)
    return 0 if report.ok else 1
