"""Generic ASIC-style flow: Yosys `synth` to gates, counts, NAND2-equivalents, CMOS transistors.

The script is ``generic.ys`` next to this module. The report is a plain dict (JSON-ready):
cells by type, flip-flops, latches, memory bits (all memories, counted before any mapping),
SRAM macros (memories of at least ``macro_depth`` words, kept out of the logic area), the
area from the unit-area table of ``unit_area.json``, and Yosys' own `stat -tech cmos`
transistor estimate (of the logic only when SRAM macros are present).

By default the design is flattened first. With ``keep_hierarchy`` every module is synthesised
once on its own (no optimisation across module boundaries) and the totals add up the
instances; the report then also lists each module's own logic (``hierarchy``), which is how
the core's controller is measured apart from its groups, and how a core too large for a flat
run on a small machine is synthesised at all.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ..arch.fixedpoint import check_param
from .unit_area import estimate_area, is_flip_flop, is_latch, load_table
from .yosys_tool import run_yosys, yosys_version

SCRIPT_TEMPLATE = Path(__file__).with_name("generic.ys")
# Memories this deep or deeper are kept as SRAM macros (bits reported, not priced as logic);
# shallower ones are register files and are synthesised into flip-flops.
SRAM_MACRO_MIN_DEPTH = 256
MACRO_CELL = "$mem_v2"


def load_stat_json(text: str) -> dict[str, Any]:
    """Parse a `stat -json` report. Yosys 0.23 also prints its hierarchy tree (``name  count``
    lines, unquoted) into the JSON of a multi-level `stat -top`; those lines are dropped."""
    lines = [line for line in text.splitlines() if '"' in line or not re.search(r"[A-Za-z0-9_$\\]", line)]
    return json.loads("\n".join(lines))


def design_stats(stat_json: dict[str, Any]) -> dict[str, Any]:
    """The whole-design section of a `stat -json` report (the only module of a flat design)."""
    if "design" in stat_json:
        return stat_json["design"]
    modules = stat_json.get("modules", {})
    if len(modules) != 1:
        raise ValueError(f"stat report has {len(modules)} modules and no design total; flatten first")
    return next(iter(modules.values()))


def parse_transistors(value: str | int) -> tuple[int, bool]:
    """Yosys writes the estimate as a string, with a trailing '+' when some cells had no cost."""
    text = str(value).strip()
    exact = not text.endswith("+")
    return int(text.rstrip("+")), exact


def parse_macros(dump: str, listing: str | None = None, instances: dict[str, int] | None = None
                 ) -> list[dict[str, Any]]:
    """The SRAM macros (``$mem_v2`` cells) of an RTLIL `dump`: name, width, depth, bits, ports.

    ``listing`` is `select -list` of the same cells (``module/cell`` lines, same order) and
    ``instances`` how often each module occurs in the hierarchy; with them each macro also gets
    its ``module`` and ``instances``, and ``bits`` counts every instance.
    """
    macros: list[dict[str, Any]] = []
    for block in re.split(r"^\s*cell \$mem_v2 ", dump, flags=re.M)[1:]:
        name = block.split(None, 1)[0].lstrip("\\")
        params = dict(re.findall(r"^\s*parameter \\(WIDTH|SIZE|RD_PORTS|WR_PORTS) (\d+)\s*$", block, flags=re.M))
        width, size = int(params["WIDTH"]), int(params["SIZE"])
        macros.append({"name": name, "width": width, "depth": size, "bits": width * size,
                       "read_ports": int(params.get("RD_PORTS", 0)), "write_ports": int(params.get("WR_PORTS", 0))})
    if listing is None:
        return macros
    where = [line.strip().rsplit("/", 1) for line in listing.splitlines() if "/" in line]
    if [cell.lstrip("\\") for _, cell in where] != [m["name"] for m in macros]:
        raise ValueError(f"macro listing = {[c for _, c in where]} is out of range; allowed: the dumped "
                         f"macros {[m['name'] for m in macros]} in the same order")
    for macro, (module, _) in zip(macros, where):
        count = (instances or {}).get(module.lstrip("\\"), 1)
        macro.update(module=module.lstrip("\\"), instances=count, bits=macro["bits"] * count)
    return macros


def module_instances(stat_json: dict[str, Any], top: str) -> dict[str, int]:
    """How many times each module occurs under ``top``, from the per-module cell counts
    (a submodule instance is a cell whose type is a module name)."""
    modules = {name.lstrip("\\"): stats for name, stats in stat_json.get("modules", {}).items()}
    if top not in modules:
        raise ValueError(f"top = {top!r} is out of range; allowed: one of the reported modules {sorted(modules)}")
    counts: dict[str, int] = {}

    def visit(name: str, times: int) -> None:
        counts[name] = counts.get(name, 0) + times
        for cell_type, n in modules[name].get("num_cells_by_type", {}).items():
            child = cell_type.lstrip("\\")
            if child in modules:
                visit(child, times * int(n))

    visit(top, 1)
    return counts


def module_breakdown(stat_json: dict[str, Any], top: str) -> list[dict[str, Any]]:
    """Each module's own logic (its gates, not its submodules'): instances, cells, flip-flops
    and NAND2-eq per instance, largest total first. SRAM macros are counted, not priced."""
    instances = module_instances(stat_json, top)
    modules = {name.lstrip("\\"): stats for name, stats in stat_json["modules"].items()}
    table = load_table()
    rows = []
    for name, count in instances.items():
        own = {t: int(n) for t, n in modules[name].get("num_cells_by_type", {}).items()
               if t.lstrip("\\") not in modules}
        area = estimate_area({t: n for t, n in own.items() if t != MACRO_CELL}, table)
        rows.append({"module": name, "instances": count, "cells": sum(own.values()),
                     "flip_flops": sum(n for t, n in own.items() if is_flip_flop(t)),
                     "sram_macros": own.get(MACRO_CELL, 0),
                     "nand2_eq": round(area.nand2_eq, 1),
                     "nand2_eq_combinational": round(area.combinational_nand2_eq, 1),
                     "nand2_eq_sequential": round(area.sequential_nand2_eq, 1)})
    return sorted(rows, key=lambda r: -r["nand2_eq"] * r["instances"])


def parse_reports(memories: dict[str, Any], gates: dict[str, Any], cmos: dict[str, Any],
                  macros: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Turn the `stat -json` reports (and SRAM macro list) of generic.ys into the flow's report dict."""
    pre, post, tech = design_stats(memories), design_stats(gates), design_stats(cmos)
    by_type = {k: int(v) for k, v in sorted(post["num_cells_by_type"].items())}
    macros = macros or []
    listed = sum(m.get("instances", 1) for m in macros)
    if by_type.get(MACRO_CELL, 0) != listed:
        raise ValueError(f"{MACRO_CELL} cells = {by_type.get(MACRO_CELL, 0)} is out of range; allowed: "
                         f"{listed} (the SRAM macros listed by the dump, times their instances)")
    table = load_table()
    area = estimate_area({k: n for k, n in by_type.items() if k != MACRO_CELL}, table)
    transistors, exact = parse_transistors(tech.get("estimated_num_transistors", "0+"))
    return {
        "cells": int(post["num_cells"]),
        "cells_by_type": by_type,
        "flip_flops": sum(n for t, n in by_type.items() if is_flip_flop(t)),
        "latches": sum(n for t, n in by_type.items() if is_latch(t)),
        "memories": int(pre.get("num_memories", 0)),
        "memory_bits": int(pre.get("num_memory_bits", 0)),
        "sram_macros": macros,
        "sram_bits": sum(m["bits"] for m in macros),
        "area_um2": round(area.um2, 3),
        "nand2_eq": round(area.nand2_eq, 1),
        "nand2_eq_combinational": round(area.combinational_nand2_eq, 1),
        "nand2_eq_sequential": round(area.sequential_nand2_eq, 1),
        "unit_area_table": table.name,
        "unit_area_source": table.source,
        "cmos_transistors": transistors,
        "cmos_transistors_exact": exact,
    }


def synth_generic(verilog: str, top: str, *, yosys: str = "debian", workdir: Path | None = None,
                  macro_depth: int = SRAM_MACRO_MIN_DEPTH, keep_hierarchy: bool = False) -> dict[str, Any]:
    """Synthesise one Verilog text with the generic flow; returns the report dict.

    Memories of ``macro_depth`` words or more are SRAM macros: listed under ``sram_macros``
    and left out of the logic area and the transistor estimate. ``workdir`` keeps the
    script, log and raw reports; by default a temporary folder is used and removed.
    ``keep_hierarchy`` synthesises each module once instead of flattening (module docstring).
    """
    check_param("macro_depth", macro_depth, 2, 1 << 30)
    if not top.isidentifier():
        raise ValueError(f"top = {top!r} is out of range; allowed: a Verilog identifier")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sparsetrain-synth-") as tmp:
            return synth_generic(verilog, top, yosys=yosys, workdir=Path(tmp), macro_depth=macro_depth,
                                 keep_hierarchy=keep_hierarchy)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{top}.v").write_text(verilog)
    script = workdir / f"{top}.generic.ys"
    script.write_text(SCRIPT_TEMPLATE.read_text().format(
        verilog=f"{top}.v", top=top, prefix=top, macro_depth=macro_depth,
        flatten="# keep_hierarchy: every module is synthesised once, on its own" if keep_hierarchy else "flatten",
        synth_flatten="" if keep_hierarchy else "-flatten"))
    start = time.monotonic()
    run_yosys(script, workdir, yosys)
    elapsed = time.monotonic() - start
    reports = [load_stat_json((workdir / f"{top}.{kind}.json").read_text()) for kind in ("memories", "gates", "cmos")]
    instances = module_instances(reports[1], top)
    macros = parse_macros((workdir / f"{top}.macros.txt").read_text(),
                          (workdir / f"{top}.macros.list").read_text(), instances)
    report = {"flow": "generic", "top": top, "tool": yosys_version(yosys), "sram_macro_min_depth": macro_depth,
              "keep_hierarchy": keep_hierarchy}
    report.update(parse_reports(*reports, macros))
    if keep_hierarchy:
        report["hierarchy"] = module_breakdown(reports[1], top)
    report["synth_seconds"] = round(elapsed, 2)
    return report
