"""`sparsetrain robustness`: test accuracy under FGSM attacks, sparse runs against their dense baseline."""
from __future__ import annotations

import argparse

NAME = "robustness"
HELP = "test accuracy under FGSM attacks at several epsilons for training runs (Campfire Table 6)"


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparsetrain.golden.training.robustness import DEFAULT_EPS

    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="runs trained with --save-model (a sparse run and its dense baseline)")
    p.add_argument("--eps", type=_float_list, default=list(DEFAULT_EPS),
                   help="comma-separated FGSM epsilons in pixel units (default " +
                        ",".join(f"{e:g}" for e in DEFAULT_EPS) + ")")
    p.add_argument("--test-samples", type=int, default=None, help="default: each run's own test subset")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from sparsetrain.arch.fixedpoint import check_param
    from sparsetrain.outdir import atomic_write_text, check_file_target
    from sparsetrain.golden.training.robustness import robustness, robustness_markdown

    check_file_target(args.json, "--json")  # before the attacks run
    if args.threads is not None:
        torch.set_num_threads(check_param("threads", args.threads, 1, 1024))
    try:
        rows = robustness(args.run_dirs, args.eps, args.test_samples)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    print(robustness_markdown(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0
