"""Plain Python API behind `sparsetrain perf`: one network, or every network of the papers."""
from __future__ import annotations

from pathlib import Path

from ..arch.schedule import ArchParams
from ..outdir import atomic_write_text
from . import paper, report
from .densities import DensityTable, golden_patterns, load_run_dir, load_table, paper_table
from .energy import EnergyTable
from .model import NetworkResult, evaluate, exact_layer
from .shapes import INPUT_SIZES, network_shapes


def density_source(model: str, input_kind: str, densities: str | Path | None) -> DensityTable:
    """A run dir (metrics.json), a user table (JSON/CSV), or (None) the papers' reported densities."""
    if densities is None:
        return paper_table(model, input_kind)
    p = Path(densities)
    if p.is_dir():
        return load_run_dir(p)
    return load_table(p)


def perf_network(model: str, input_kind: str = "cifar", densities: str | Path | None = None,
                 arch: ArchParams | None = None, energy: EnergyTable | None = None) -> NetworkResult:
    if input_kind not in INPUT_SIZES:
        raise ValueError(f"input = {input_kind!r} is out of range; allowed: {', '.join(INPUT_SIZES)}")
    shapes = network_shapes(model, input_kind)
    return evaluate(shapes, density_source(model, input_kind, densities), arch, energy, model, input_kind)


def perf_golden(run_dir: str | Path, arch: ArchParams | None = None,
                energy: EnergyTable | None = None) -> NetworkResult:
    """Exact model of the layers stored in a golden tensor directory (their real non-zero patterns)."""
    layers = [exact_layer(shape, pats, arch, energy) for shape, pats in golden_patterns(run_dir)]
    return NetworkResult("golden", str(run_dir), arch or ArchParams(), layers, "golden",
                         [f"exact non-zero patterns of the golden tensors in {run_dir}"])


def perf_all(out_dir: str | Path, arch: ArchParams | None = None, energy: EnergyTable | None = None,
             densities: str | Path | None = None) -> list[NetworkResult]:
    """Every network of the papers at both input sizes: tables, JSON and plots into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model in paper.MODELS:
        for kind in INPUT_SIZES:
            r = perf_network(model, kind, densities, arch, energy)
            results.append(r)
            atomic_write_text(out / f"{model}-{kind}.txt", report.table(r) + "\n")
            report.write_json(r, out / f"{model}-{kind}.json")
    atomic_write_text(out / "summary.md", summary_markdown(results))
    report.plot(results, out / "speedup.png")
    return results


def summary_markdown(results: list[NetworkResult]) -> str:
    lines = ["| network | input | grad density | forward | GTA | GTW | total speedup | PE util (sparse / dense) "
             "| energy efficiency |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        g = sum(l.density.grad for l in r.layers) / max(1, len(r.layers))
        lines.append(f"| {r.model} | {r.input_kind} | {g:.2f} | {r.step_speedup('forward'):.2f} | "
                     f"{r.step_speedup('gta'):.2f} | {r.step_speedup('gtw'):.2f} | {r.speedup:.2f} | "
                     f"{r.utilisation():.2f} / {r.utilisation(True):.2f} | {r.energy_ratio:.2f} |")
    mean = sum(r.speedup for r in results) / len(results)
    emean = sum(r.energy_ratio for r in results) / len(results)
    lines.append(f"\nAverage speedup {mean:.2f}x, best {max(r.speedup for r in results):.2f}x, "
                 f"average energy efficiency {emean:.2f}x.\n")
    return "\n".join(lines)
