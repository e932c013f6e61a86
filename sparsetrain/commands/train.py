"""`sparsetrain train`: train a network on Fashion-MNIST with stochastic gradient pruning."""
from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a network on Fashion-MNIST with stochastic activation-gradient pruning; write metrics.json and a plot"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparsetrain.golden.training.networks import MODEL_NAMES
    from sparsetrain.arch.dbtd import ESTIMATORS
    from sparsetrain.golden.training.sparse_backward import BREAK_EVEN_DENSITY

    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--p", type=float, default=0.9, help="target pruning rate, 0 <= p < 1 (default 0.9)")
    p.add_argument("--no-prune", action="store_true", help="unpruned baseline (densities are still measured)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None,
                   help="default: 0.01 for alexnet (He init; the papers: 0.05), 0.1 otherwise (papers)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-decay-epochs", type=int, default=100, help="lr x 0.1 every this many epochs")
    p.add_argument("--lr-schedule", choices=("step", "cosine"), default="step",
                   help="step: x 0.1 every --lr-decay-epochs; cosine: from --lr down to 0 over --epochs")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear lr warm-up over this many optimizer steps (default 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-f", "--N_F", dest="n_f", type=int, default=4, help="threshold FIFO depth")
    p.add_argument("--estimator", choices=ESTIMATORS, default="unbiased")
    p.add_argument("--two-pass", action="store_true", help="prune each batch with its own threshold (no FIFO)")
    p.add_argument("--train-samples", type=int, default=None, help="train on a random subset of this size")
    p.add_argument("--test-samples", type=int, default=None, help="evaluate on a random test subset of this size")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--width-mult", type=float, default=1.0, help="scale every channel count")
    p.add_argument("--input-size", type=int, default=32, help="pad 28x28 images to this size (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dump-tensors", action="store_true", help="write golden tensors (docs/architecture.md section 9)")
    p.add_argument("--dump-layers", default=None, help="comma-separated conv names to dump (default: all)")
    p.add_argument("--dump-steps", type=_int_list, default=None,
                   help="comma-separated 0-based step indices to dump (default: the last step)")
    p.add_argument("--sparse-backward", action="store_true",
                   help="convolution backward by the direct sparse C++ kernel (golden/training/sparse_backward.py); "
                        f"a layer whose dO density exceeds {BREAK_EVEN_DENSITY} uses torch's dense backward")
    p.add_argument("--save-model", action="store_true", help="write the final weights (model.pt) for `sparsetrain robustness`")
    w = p.add_argument_group("Campfire structured weight sparsity (docs/reproduction.md, Campfire)")
    w.add_argument("--weight-sparsity", type=float, default=None, metavar="S",
                   help="final per-layer weight sparsity, 0 <= S < 1 (default: no weight pruning)")
    w.add_argument("--weight-pruning", choices=("window", "ck", "combined"), default="window",
                   help="conv granularity (default window)")
    w.add_argument("--era-start", type=int, default=0, metavar="E0", help="first epoch of the pruning era (0-based)")
    w.add_argument("--era-length", type=int, default=1, metavar="N", help="epochs in the pruning era")
    w.add_argument("--prune-exponent", type=float, default=3.0, help="exponent of the sparsity schedule (default 3)")
    w.add_argument("--window-fraction", type=float, default=0.8,
                   help="combined: share of the target done by window pruning (default 0.8)")
    w.add_argument("--fc-pruning", choices=("fine", "block", "none"), default="fine",
                   help="fully connected layers (default fine)")
    w.add_argument("--fc-block", type=int, default=4, help="block size n of --fc-pruning block (default 4)")
    w.add_argument("--prune-resolution", choices=("epoch", "step"), default="epoch",
                   help="schedule target per epoch (the paper) or per step")
    d = p.add_argument_group("distributed training and resuming (docs/distributed.md)")
    d.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="spawn N local worker processes (gloo on CPU, nccl on GPUs); --batch-size is per process, "
                        "the global batch is N times it. Under torchrun, leave this out")
    d.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoint.pt (same arguments)")
    d.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: this rank's GPU when CUDA is available, else the CPU")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier run in --out: removes exactly the files it wrote, never one of yours")


def config_from_args(args: argparse.Namespace):
    """The TrainConfig an argument namespace asks for (shared with `sparsetrain golden export`)."""
    import os

    from sparsetrain.golden.training.data import SPLIT_SIZES
    from sparsetrain.golden.training.train import TrainConfig

    dump_steps: list[int] = []
    if args.dump_tensors:
        if args.dump_steps:
            dump_steps = args.dump_steps
        else:
            n = args.train_samples or SPLIT_SIZES["train"]
            # steps of the global batch (per-process batch x processes, under torchrun or not)
            world = getattr(args, "nproc_per_node", None) or int(os.environ.get("WORLD_SIZE", 1))
            gb = args.batch_size * world
            total = (n // gb + (1 if n % gb >= world else 0)) * args.epochs
            dump_steps = [min(total, args.max_steps or total) - 1]
    return TrainConfig(
        model=args.model, p=args.p, prune=not args.no_prune, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, lr_decay_epochs=args.lr_decay_epochs,
        lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
        seed=args.seed, n_f=args.n_f, estimator=args.estimator, two_pass=args.two_pass,
        train_samples=args.train_samples, test_samples=args.test_samples, max_steps=args.max_steps,
        width_mult=args.width_mult, input_size=args.input_size, threads=args.threads,
        dump_layers=args.dump_layers.split(",") if args.dump_layers else None, dump_steps=dump_steps,
        progress=not args.no_progress, sparse_backward=args.sparse_backward,
        **campfire_kwargs(args), **({"device": args.device} if hasattr(args, "device") else {}))


def campfire_kwargs(args: argparse.Namespace) -> dict:
    """TrainConfig fields of the Campfire flags (absent in namespaces of commands without them)."""
    names = ("weight_sparsity", "weight_pruning", "era_start", "era_length", "prune_exponent", "window_fraction",
             "fc_pruning", "fc_block", "prune_resolution", "save_model")
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def run(args: argparse.Namespace) -> int:
    import os

    from sparsetrain.golden.training.train import TrainingInterrupted, train, train_distributed

    cfg = config_from_args(args)
    nproc, resume = getattr(args, "nproc_per_node", None), getattr(args, "resume", False)
    try:
        if nproc is not None:
            metrics = train_distributed(cfg, args.out, nproc, overwrite=args.force, resume=resume)
        else:
            metrics = train(cfg, args.out, overwrite=args.force, resume=resume)
    except (FileExistsError, FileNotFoundError) as exc:
        raise ValueError(str(exc)) from None
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"{exc}; continue with the same command plus --resume", flush=True)
        return 128 + exc.signum
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    s = metrics["summary"]
    dens = "n/a" if s["grad_density"] is None else f"{s['grad_density']:.3f}"
    print(f"{cfg.model} p={cfg.p if cfg.prune else 'off'}: test acc {s['test_acc']:.2f}%, "
          f"gradient density {dens}, {metrics['steps']} steps in {metrics['wall_s']:.0f} s -> {args.out}")
    if "weight_sparsity" in s:
        ws = s["weight_sparsity"]
        print(f"weight sparsity: conv {ws['conv']:.3f}, fc {_fmt(ws['fc'])}; masks: {args.out}/"
              f"{metrics['weight_pruning']['masks']}")
    for g in metrics["golden"]:
        print(f"golden tensors: {args.out}/{g}")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
