"""What-if of the second-generation microarchitecture (architecture section 12, issue 15).

`make perf` with the papers' densities for the first generation and each set of changes
(A prefetch, B MSRC look-ahead, C ping-pong PPU, D skip empty rows, E OSRC look-ahead):
average speedup over the 14 network/input pairs, AlexNet CIFAR-10, ResNet-18 ImageNet, the
dense baseline's own gain (it gets A and C), and busy / useful PE utilisation. One run, ratios
only (the machine may be shared). Prints a markdown table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import time

from sparsetrain.perf import api, paper
from sparsetrain.arch.microarch import BUILT, GEN2, WHAT_IF, MicroArch
from sparsetrain.arch.schedule import ArchParams
from sparsetrain.perf.shapes import INPUT_SIZES

TARGET_AVG, TARGET_ALEXNET_C10 = 2.7, 4.5   # the paper's figures (issue 15's goal for A+B+C+D)


def run(names: list[str]) -> list[dict]:
    pairs = [(m, k) for m in paper.MODELS for k in INPUT_SIZES]
    base = {p: api.perf_network(*p, None, ArchParams()) for p in pairs}
    rows = []
    for name in names:
        micro = MicroArch.parse(name)
        t0 = time.perf_counter()
        res = {p: api.perf_network(*p, None, ArchParams(micro=micro)) for p in pairs}
        n = len(pairs)
        rows.append({
            "microarch": micro.name, "spec": name,
            "avg": sum(r.speedup for r in res.values()) / n,
            "alexnet_cifar": res[("alexnet", "cifar")].speedup,
            "resnet18_imagenet": res[("resnet18", "imagenet")].speedup,
            # the baseline's own gain from A and C: gen1 dense cycles / this dense cycles
            "dense_gain_avg": sum(base[p].cycles(True) / res[p].cycles(True) for p in pairs) / n,
            # the sparse design against the first generation's sparse design
            "vs_gen1_avg": sum(base[p].cycles() / res[p].cycles() for p in pairs) / n,
            "busy_util_avg": sum(r.utilisation() for r in res.values()) / n,
            "useful_util_avg": sum(r.useful_utilisation() for r in res.values()) / n,
            "useful_util_alexnet_cifar": res[("alexnet", "cifar")].useful_utilisation(),
            "seconds": time.perf_counter() - t0})
        print(f"{name}: {rows[-1]['avg']:.2f}x ({rows[-1]['seconds']:.1f} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| microarchitecture | avg (14 pairs) | AlexNet C10 | ResNet-18 IN | dense baseline gain | sparse vs gen1 "
             "| busy util | useful util (avg / AlexNet C10) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['microarch']} | {r['avg']:.2f} | {r['alexnet_cifar']:.2f} | {r['resnet18_imagenet']:.2f} | "
                     f"{r['dense_gain_avg']:.2f}x | {r['vs_gen1_avg']:.2f}x | {r['busy_util_avg']:.2f} | "
                     f"{r['useful_util_avg']:.3f} / {r['useful_util_alexnet_cifar']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Bars: average, AlexNet CIFAR-10 and ResNet-18 ImageNet speedup per set, the paper's marks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [("avg", "average (14 pairs)"), ("alexnet_cifar", "AlexNet CIFAR-10"),
            ("resnet18_imagenet", "ResNet-18 ImageNet")]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    width = 0.8 / len(keys)
    for i, (k, label) in enumerate(keys):
        ax.bar([x + i * width for x in range(len(rows))], [r[k] for r in rows], width, label=label)
    ax.axhline(TARGET_AVG, color="C0", ls="--", lw=0.8, label=f"paper average {TARGET_AVG}x")
    ax.axhline(TARGET_ALEXNET_C10, color="C1", ls="--", lw=0.8, label=f"paper AlexNet C10 {TARGET_ALEXNET_C10}x")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r["microarch"] for r in rows], fontsize=7,
                  rotation=20)
    ax.set_ylabel("speedup vs dense baseline (x)")
    ax.set_title("Second-generation what-if (papers' densities)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--microarch", nargs="*", default=list(WHAT_IF),
                    help="sets to evaluate (gen1, gen2, letters A..E joined by '+')")
    ap.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    ap.add_argument("--plot", metavar="OUT.png", help="bar chart of the speedups")
    args = ap.parse_args()
    rows = run(args.microarch)
    print(markdown(rows))
    built = [r for r in rows if MicroArch.parse(r["spec"]) in (GEN2, BUILT)]
    for r in built:
        print(f"{r['microarch']}: avg {r['avg']:.2f}x (target {TARGET_AVG}), AlexNet CIFAR-10 "
              f"{r['alexnet_cifar']:.2f}x (target {TARGET_ALEXNET_C10}): "
              f"{'met' if r['avg'] >= TARGET_AVG and r['alexnet_cifar'] >= TARGET_ALEXNET_C10 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
