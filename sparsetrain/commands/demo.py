"""`sparsetrain demo` (`make demo`): train with pruning, run one layer's three steps on the RTL, report."""
from __future__ import annotations

import argparse

NAME = "demo"
HELP = ("train a small pruned network on Fashion-MNIST, run Forward/GTA/GTW of one conv layer on the core RTL "
        "under Verilator, check bit for bit and report accuracy, density, agreement and cycles")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparsetrain.demo import DEMO_LAYER, DEMO_SAMPLES, DEMO_STEPS

    p.add_argument("--out", default="out/demo", help="output folder: new, empty, or an earlier demo's (with --force)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier demo in --out: removes exactly the files it wrote, never one of yours")
    p.add_argument("--samples", type=int, default=DEMO_SAMPLES,
                   help=f"batch samples simulated per step (default {DEMO_SAMPLES}; 0 = the whole batch)")
    p.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"training steps (default {DEMO_STEPS})")
    p.add_argument("--layer", default=DEMO_LAYER, help=f"conv layer to run (default {DEMO_LAYER})")
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--train-dir", default=None, help="reuse this training run instead of training")
    p.add_argument("--core", action="append", default=None, metavar="NAME=VALUE",
                   help="second-generation switch of the simulated core (docs/architecture.md section 12): "
                        "PREFETCH, LOOKAHEAD, PINGPONG, SKIP_EMPTY, OP_SCAN, OSRC_WINDOW, UNIT_RATE; repeatable")


def run(args: argparse.Namespace) -> int:
    from sparsetrain.check.simconfig import parse_switches
    from sparsetrain.demo import run_demo

    result = run_demo(args.out, force=args.force, samples=args.samples, steps=args.steps, layer=args.layer,
                      sim=args.sim, train_dir=args.train_dir, core=parse_switches(args.core))
    return 0 if result.ok else 1
