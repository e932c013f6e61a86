"""`make perf` side by side: the first design, the built second-generation set and the paper.

One run of the performance model (analytic, the papers' densities, 56 groups x 3 PEs) over the 14
network/input pairs of `make perf`, with the first design (``arch.microarch.GEN1``) and the set the
RTL core is built with (``arch.microarch.BUILT``, `sparsetrain perf`'s default): speedup per step and
in total, busy and useful PE utilisation, energy efficiency; the paper's figures (SparseTrain Fig. 8:
2.7x average, 4.5x AlexNet CIFAR-10) beside them. Prints a markdown table; --json / --plot write
the numbers and the chart (docs/performance.md shows both).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from sparsetrain.arch.microarch import BUILT, GEN1, MicroArch
from sparsetrain.arch.schedule import ArchParams
from sparsetrain.perf import api, paper
from sparsetrain.perf.shapes import INPUT_SIZES

PAPER_AVG, PAPER_BEST = paper.PAPER_RESULTS["speedup_average"], paper.PAPER_RESULTS["speedup_best"]


def _row(r) -> dict:
    return {"forward": r.step_speedup("forward"), "gta": r.step_speedup("gta"), "gtw": r.step_speedup("gtw"),
            "total": r.speedup, "busy": r.utilisation(), "useful": r.useful_utilisation(),
            "energy": r.energy_ratio, "cycles": r.cycles(), "dense_cycles": r.cycles(True)}


def run(designs: dict[str, MicroArch], log=print) -> dict:
    pairs = [(m, k) for m in paper.MODELS for k in INPUT_SIZES]
    out: dict = {"designs": {n: m.name for n, m in designs.items()}, "pairs": []}
    for model, kind in pairs:
        row = {"network": model, "input": kind}
        for name, micro in designs.items():
            t0 = time.perf_counter()
            r = api.perf_network(model, kind, None, ArchParams(micro=micro))
            row[name] = _row(r)
            row["grad_density"] = sum(l.density.grad for l in r.layers) / max(1, len(r.layers))
            log(f"{model} {kind} {name}: {r.speedup:.2f}x ({time.perf_counter() - t0:.1f} s)")
        out["pairs"].append(row)
    n = len(pairs)
    for name in designs:
        out[f"{name}_avg"] = sum(p[name]["total"] for p in out["pairs"]) / n
        out[f"{name}_energy_avg"] = sum(p[name]["energy"] for p in out["pairs"]) / n
    return out


def markdown(res: dict) -> str:
    d = res["designs"]
    lines = [f"| network | input | grad density | first design ({d['first']}): F / GTA / GTW | total | busy / useful "
             f"util | built ({d['built']}): F / GTA / GTW | total | busy / useful util | energy eff. (first / built) "
             "| paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in res["pairs"]:
        f, b = p["first"], p["built"]
        paper_col = f"{PAPER_BEST}" if (p["network"], p["input"]) == ("alexnet", "cifar") else ""
        lines.append(f"| {p['network']} | {p['input']} | {p['grad_density']:.2f} | "
                     f"{f['forward']:.2f} / {f['gta']:.2f} / {f['gtw']:.2f} | **{f['total']:.2f}** | "
                     f"{f['busy']:.2f} / {f['useful']:.3f} | {b['forward']:.2f} / {b['gta']:.2f} / {b['gtw']:.2f} | "
                     f"**{b['total']:.2f}** | {b['busy']:.2f} / {b['useful']:.3f} | "
                     f"{f['energy']:.2f} / {b['energy']:.2f} | {paper_col} |")
    lines.append(f"| **average** | | | | **{res['first_avg']:.2f}** | | | **{res['built_avg']:.2f}** | | "
                 f"{res['first_energy_avg']:.2f} / {res['built_energy_avg']:.2f} | **{PAPER_AVG}** |")
    return "\n".join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pairs = res["pairs"]
    labels = [f"{p['network']}\n{p['input']}" for p in pairs] + ["average"]
    first = [p["first"]["total"] for p in pairs] + [res["first_avg"]]
    built = [p["built"]["total"] for p in pairs] + [res["built_avg"]]
    paper_vals = [PAPER_BEST if (p["network"], p["input"]) == ("alexnet", "cifar") else 0.0 for p in pairs] + [PAPER_AVG]
    fig, ax = plt.subplots(figsize=(13, 4.2))
    w = 0.27
    xs = range(len(labels))
    ax.bar([x - w for x in xs], first, w, label=f"first design ({res['designs']['first']})")
    ax.bar(list(xs), built, w, label=f"built ({res['designs']['built']})")
    ax.bar([x + w for x in xs], paper_vals, w, label="paper (Fig. 8: AlexNet C10, average)")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("training speedup vs dense baseline (x)")
    ax.set_title("make perf, papers' densities: first design, built second generation, paper")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="OUT", help="write the numbers as JSON")
    ap.add_argument("--plot", metavar="OUT.png", help="bar chart of the total speedups")
    args = ap.parse_args(argv)
    t0 = time.time()
    res = run({"first": GEN1, "built": BUILT}, log=lambda m: print(m, file=sys.stderr, flush=True))
    res["seconds"] = round(time.time() - t0, 1)
    print(markdown(res))
    print(f"\naverage speedup: first design {res['first_avg']:.2f}x, built {res['built_avg']:.2f}x, paper {PAPER_AVG}x; "
          f"AlexNet CIFAR-10: {res['pairs'][0]['first']['total']:.2f}x / {res['pairs'][0]['built']['total']:.2f}x / "
          f"{PAPER_BEST}x ({res['seconds']:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.plot:
        plot(res, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
