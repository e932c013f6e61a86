"""Tables, JSON and plots of performance-model results."""
from __future__ import annotations

import json
from pathlib import Path

from .decompose import STEPS
from .model import NetworkResult


def as_json(res: NetworkResult) -> dict:
    layers = []
    for l in res.layers:
        steps = {}
        for name, st in l.steps.items():
            steps[name] = {"cycles": st.sparse.cycles, "dense_cycles": st.dense.cycles, "speedup": st.speedup,
                           "utilisation": st.sparse.utilisation(res.arch.pes),
                           "dense_utilisation": st.dense.utilisation(res.arch.pes),
                           "bound": st.sparse.bound, "ops": st.sparse.ops, "macs": st.sparse.macs,
                           "dense_macs": st.dense.macs, "energy_pj": st.energy, "dense_energy_pj": st.dense_energy}
        layers.append({"name": l.shape.name, "shape": l.shape.as_dict(), "density": l.density.as_dict(),
                       "cycles": l.cycles(), "dense_cycles": l.cycles(True), "speedup": l.speedup, "steps": steps})
    return {"model": res.model, "input": res.input_kind, "arch": res.arch.as_dict(), "density_source": res.source,
            "notes": res.notes, "layers": layers,
            "total": {"cycles": res.cycles(), "dense_cycles": res.cycles(True), "speedup": res.speedup,
                      "utilisation": res.utilisation(), "dense_utilisation": res.utilisation(True),
                      "energy_pj": res.energy(), "dense_energy_pj": res.energy(True),
                      "energy_ratio": res.energy_ratio,
                      "steps": {s: {"cycles": res.step_cycles(s), "dense_cycles": res.step_cycles(s, True),
                                    "speedup": res.step_speedup(s)} for s in STEPS}}}


def write_json(res: NetworkResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..outdir import atomic_write_text
    return atomic_write_text(path, json.dumps(as_json(res), indent=1))


def table(res: NetworkResult) -> str:
    """Per-layer table and network totals, as printed by `sparsetrain perf`."""
    lines = [f"{res.model} ({res.input_kind}), {res.arch.groups} groups x 3 PEs, buffer {res.arch.buffer_kb:g} KB",
             *[f"note: {n}" for n in res.notes],
             f"{'layer':<28}{'shape':>22}{'act':>6}{'grad':>6}"
             + "".join(f"{s + ' x':>10}" for s in STEPS) + f"{'cycles':>12}{'dense':>12}{'speedup':>9}{'util':>6}"]
    for l in res.layers:
        s = l.shape
        shp = f"{s.c_in}>{s.c_out} {s.h_in}x{s.w_in} k{s.k}s{s.stride}"
        sp = "".join(f"{l.steps[st].speedup:>10.2f}" if st in l.steps else f"{'-':>10}" for st in STEPS)
        busy = sum(x.sparse.busy for x in l.steps.values())
        util = busy / (res.arch.pes * l.cycles()) if l.cycles() else 0.0
        lines.append(f"{s.name[:27]:<28}{shp:>22}{l.density.act:>6.2f}{l.density.grad:>6.2f}{sp}"
                     f"{l.cycles():>12.0f}{l.cycles(True):>12.0f}{l.speedup:>9.2f}{util:>6.2f}")
    sp = "".join(f"{res.step_speedup(st):>10.2f}" for st in STEPS)
    lines.append(f"{'total':<28}{'':>22}{'':>6}{'':>6}{sp}{res.cycles():>12.0f}{res.cycles(True):>12.0f}"
                 f"{res.speedup:>9.2f}{res.utilisation():>6.2f}")
    lines.append(f"energy (on chip): {res.energy() / 1e6:.3f} uJ sparse, {res.energy(True) / 1e6:.3f} uJ dense, "
                 f"efficiency {res.energy_ratio:.2f}x; DRAM spills {res.energy(key='dram') / 1e6:.3f} uJ")
    return "\n".join(lines)


def plot(results: list[NetworkResult], path: str | Path) -> Path:
    """Bar chart of per-step and total speedup (and energy efficiency) of one or more networks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{r.model}\n{r.input_kind}" for r in results]
    series = {**{s: [r.step_speedup(s) for r in results] for s in STEPS},
              "total": [r.speedup for r in results], "energy": [r.energy_ratio for r in results]}
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results) + 2), 4))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(results))], vals, width, label=name)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(results))], labels, fontsize=7)
    ax.set_ylabel("vs dense baseline (x)")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("SparseTrain model: speedup per step, total and energy efficiency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
