"""Area of PE and PPU against data width and K_MAX (generic flow), and its plot for docs/area.md.

Each axis is swept with the other parameters at their defaults, so the default point is
shared by both axes and synthesised once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..hw import blocks
from .flows import synth_block, write_json

DEFAULT_AXES: dict[str, tuple[int, ...]] = {"DW": (8, 12, 16), "K_MAX": (3, 5, 7, 11)}
DEFAULT_BLOCKS = ("pe", "ppu")


def sweep(block_names: Iterable[str] = DEFAULT_BLOCKS, axes: Mapping[str, Iterable[int]] = DEFAULT_AXES,
          yosys: str = "debian", log=None, base: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Generic-flow area for every (block, axis, value); returns {"points": [...], "missing_axes": {...}}.

    An axis that a block does not have as a parameter is listed in ``missing_axes`` rather
    than swept, and reported by the caller. ``base`` overrides the defaults of the parameters
    that are held fixed (only those a block has).
    """
    points: list[dict[str, Any]] = []
    missing: dict[str, list[str]] = {}
    for name in block_names:
        spec = blocks.get_block(name)
        cache: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}
        for axis, values in axes.items():
            if axis not in spec.params:
                missing.setdefault(name, []).append(axis)
                continue
            for value in values:
                fixed = {k: v for k, v in (base or {}).items() if k in spec.params and k != axis}
                report = _synth_cached(name, {**fixed, axis: value}, yosys, cache, log)
                points.append({"block": name, "axis": axis, "value": value, "params": report["params"],
                               "nand2_eq": report["nand2_eq"], "nand2_eq_combinational": report["nand2_eq_combinational"],
                               "nand2_eq_sequential": report["nand2_eq_sequential"],
                               "flip_flops": report["flip_flops"], "cmos_transistors": report["cmos_transistors"]})
    return {"points": points, "missing_axes": missing}


def _synth_cached(name: str, overrides: dict[str, int], yosys: str, cache: dict, log) -> dict[str, Any]:
    # key on the full parameter set, so the default point is shared between axes
    spec = blocks.get_block(name)
    full = blocks.parse_overrides(spec, overrides)
    key = tuple(sorted((k, v) for k, v in full.items() if v is not None))
    if key not in cache:
        if log:
            log(f"synth {name} " + " ".join(f"{k}={v}" for k, v in overrides.items()))
        cache[key] = synth_block(name, overrides, flow="generic", yosys=yosys)
    return cache[key]


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """One panel per axis: total and flip-flop area (NAND2-eq) per block."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = sorted({p["axis"] for p in result["points"]})
    fig, axs = plt.subplots(1, max(1, len(axes_names)), figsize=(4.2 * max(1, len(axes_names)), 3.4), squeeze=False)
    for ax, axis in zip(axs[0], axes_names):
        for name in sorted({p["block"] for p in result["points"]}):
            pts = sorted((p["value"], p["nand2_eq"] / 1000.0, p["nand2_eq_sequential"] / 1000.0)
                         for p in result["points"] if p["block"] == name and p["axis"] == axis)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            line, = ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{name} total")
            ax.plot(xs, [p[2] for p in pts], marker=".", linestyle="--", color=line.get_color(),
                    label=f"{name} flip-flops")
        ax.set_xlabel(axis + " (others at default)")
        ax.set_ylabel("area, thousand NAND2-eq")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Generic Yosys flow, Nangate45 unit areas (estimate, not signoff)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(result: Mapping[str, Any]) -> str:
    """The sweep as a Markdown table (thousand NAND2-eq, flip-flops), for docs/area.md."""
    lines = ["| block | swept | value | NAND2-eq (k) | comb (k) | flip-flop part (k) | flip-flops | transistors (k) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in sorted(result["points"], key=lambda p: (p["block"], p["axis"], p["value"])):
        lines.append(f"| {p['block']} | {p['axis']} | {p['value']} | {p['nand2_eq'] / 1e3:.1f} | "
                     f"{p['nand2_eq_combinational'] / 1e3:.1f} | {p['nand2_eq_sequential'] / 1e3:.1f} | "
                     f"{p['flip_flops']:,} | {p['cmos_transistors'] / 1e3:.0f} |")
    for name, axes in result.get("missing_axes", {}).items():
        lines.append(f"\n{name} has no parameter {', '.join(axes)}; not swept along it.")
    return "\n".join(lines) + "\n"


def run_sweep(out_dir: Path, block_names: Iterable[str] = DEFAULT_BLOCKS, axes: Mapping[str, Iterable[int]] = DEFAULT_AXES,
              yosys: str = "debian", log=None, base: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Sweep, then write ``sweep.json``, ``sweep.md`` and ``area-sweep.png`` under ``out_dir``."""
    result = sweep(block_names, axes, yosys, log, base)
    write_json(result, Path(out_dir) / "sweep.json")
    from ..outdir import atomic_write_text
    atomic_write_text(Path(out_dir) / "sweep.md", markdown_table(result))
    plot(result, Path(out_dir) / "area-sweep.png")
    return result
