"""Per-step training time with stochastic gradient pruning vs without, on the same model.

Prints the pruned / unpruned ratio (goal: at most 1.10). Both models have the same weights
and see the same batches; the pruned one has its pruning layers active from the start (its
FIFO is pre-filled), the unpruned one has no pruning layers at all. Timings alternate between
the two in blocks so that load changes on a shared machine hit both alike; the ratio uses the
median block time. Denormal floats are flushed to zero by default (as `sparsetrain train`
does): pruned gradients otherwise drive some CPU kernels (BatchNorm backward) into slow
denormal arithmetic, an artefact of x86 CPUs, not of the algorithm (``--keep-denormals``
measures it).

    .venv/bin/python benchmarks/bench_prune_overhead.py --model resnet18 --width-mult 0.5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from sparsetrain.golden.training.networks import MODEL_NAMES, build_model
from sparsetrain.golden.training.pruning import PruneConfig, pruners


def step_time(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def measure(model_name: str, width_mult: float, batch_size: int, blocks: int, steps: int, p: float,
            input_size: int = 32) -> dict:
    torch.manual_seed(0)
    cfg = PruneConfig(p=p, n_f=1)
    pruned = build_model(model_name, in_channels=1, input_size=input_size, width_mult=width_mult, prune=cfg)
    plain = build_model(model_name, in_channels=1, input_size=input_size, width_mult=width_mult)
    plain.load_state_dict(pruned.state_dict())
    x = torch.randn(batch_size, 1, input_size, input_size)
    y = torch.randint(0, 10, (batch_size,))
    opts = {m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (pruned, plain)}
    for m in (pruned, plain):  # warm-up; fills the pruned model's FIFOs (depth 1)
        step_time(m, opts[m], x, y, 2)
    assert all(pr.fifo.full for pr in pruners(pruned).values())
    times: dict[str, list[float]] = {"pruned": [], "unpruned": []}
    for _ in range(blocks):
        times["pruned"].append(step_time(pruned, opts[pruned], x, y, steps))
        times["unpruned"].append(step_time(plain, opts[plain], x, y, steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "width_mult": width_mult, "batch_size": batch_size, "p": p,
            "threads": torch.get_num_threads(), "step_s": med, "ratio": med["pruned"] / med["unpruned"],
            "pruned_layers": len(pruners(pruned))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODEL_NAMES, default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=5, help="alternating timing blocks per model")
    ap.add_argument("--steps", type=int, default=3, help="training steps per block")
    ap.add_argument("--p", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush denormals to zero")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)
    r = measure(args.model, args.width_mult, args.batch_size, args.blocks, args.steps, args.p)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{r['model']} width {r['width_mult']} batch {r['batch_size']} p={r['p']} threads {r['threads']}: "
              f"pruned {r['step_s']['pruned'] * 1e3:.1f} ms/step, unpruned {r['step_s']['unpruned'] * 1e3:.1f} ms/step, "
              f"ratio {r['ratio']:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
