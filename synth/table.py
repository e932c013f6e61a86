"""`make synth`: every registered block through every flow, one JSON per run plus a summary table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .flows import FLOWS, check_flow, registered_blocks, synth_block, write_json

GENERIC_COLUMNS = [("cells", "cells"), ("flip_flops", "FFs"), ("memory_bits", "mem bits"),
                   ("nand2_eq", "NAND2-eq"), ("nand2_eq_combinational", "comb"),
                   ("nand2_eq_sequential", "seq"), ("cmos_transistors", "transistors")]
ICE40_COLUMNS = [("luts", "LUTs"), ("flip_flops", "FFs"), ("dsps", "DSPs"), ("brams", "BRAMs"),
                 ("fmax_mhz", "Fmax MHz"), ("fits", "fits")]


def run_all(out_dir: Path, flows: Iterable[str] = FLOWS, yosys: str = "debian",
            block_names: Iterable[str] | None = None, params: Mapping[str, Mapping[str, str]] | None = None,
            work_root: Path | None = None) -> list[dict[str, Any]]:
    """Synthesise each block (default parameters unless ``params[block]``) with each flow.

    A run that fails is recorded with its ``error`` rather than dropped, so the table shows it.
    ``work_root`` keeps each run's scripts and logs in a sub-folder (default: temporary).
    """
    out_dir = Path(out_dir)
    flows = [check_flow(f) for f in flows]
    rows = []
    for name in (list(block_names) if block_names is not None else registered_blocks()):
        for flow in flows:
            work = Path(work_root) / f"{name}.{flow}" if work_root is not None else None
            try:
                report = synth_block(name, (params or {}).get(name), flow=flow, yosys=yosys, workdir=work)
            except (RuntimeError, OSError) as exc:
                report = {"block": name, "flow": flow, "error": str(exc)}
            write_json(report, out_dir / f"{name}.{flow}.json")
            rows.append(report)
    write_json(rows, out_dir / "summary.json")
    from ..outdir import atomic_write_text
    atomic_write_text(out_dir / "summary.md", markdown_table(rows))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _params(report: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in report.get("params", {}).items())


def markdown_table(rows: list[Mapping[str, Any]]) -> str:
    """Markdown tables (one per flow) of the reports; failures and misfits are spelt out below."""
    out = []
    for flow, columns in (("generic", GENERIC_COLUMNS), ("ice40", ICE40_COLUMNS)):
        mine = [r for r in rows if r.get("flow") == flow]
        if not mine:
            continue
        title = "Generic flow (Yosys synth, Nangate45 unit areas)" if flow == "generic" else \
            "iCE40UP5K (iCEBreaker) flow: whole top incl. the serial I/O wrapper"
        out += [f"### {title}", "", "| block | parameters | " + " | ".join(h for _, h in columns) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in columns) + " |"]
        notes = []
        for r in mine:
            out.append(f"| {r['block']} | {_params(r)} | " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |")
            if "error" in r:
                notes.append(f"* {r['block']}: failed: {r['error'].splitlines()[0]}")
            elif r.get("hierarchy"):
                notes.append(f"* {r['block']}: synthesised module by module; each module's own logic "
                             "(per instance, without its submodules): " + "; ".join(
                                 f"{h['module']} x{h['instances']} {h['nand2_eq']:,.0f} NAND2-eq, "
                                 f"{h['flip_flops']:,} FFs" for h in r["hierarchy"]))
            elif r.get("fits") is False:
                notes.append(f"* {r['block']}: {r['does_not_fit']}")
        out += [""] + notes + ([""] if notes else [])
    return "\n".join(out) + "\n"


def failures(rows: list[Mapping[str, Any]]) -> list[str]:
    return [f"{r['block']} ({r['flow']}): {r['error']}" for r in rows if "error" in r]


def load_rows(out_dir: Path) -> list[dict[str, Any]]:
    return json.loads((Path(out_dir) / "summary.json").read_text())
