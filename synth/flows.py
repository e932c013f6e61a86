"""Synthesis of one registered block (hw.blocks.BLOCKS) with one flow: the plain Python API.

    from sparsetrain.synth.flows import synth_block
    report = synth_block("pe", {"DW": "8"}, flow="generic")

Block names and parameters are checked by the registry, so an unknown block or parameter
raises ValueError listing the allowed ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from amaranth.back import verilog

from ..hw import blocks
from .generic import synth_generic
from .ice40 import synth_ice40
from .yosys_tool import YOSYS_CHOICES

FLOWS = ("generic", "ice40")


def check_flow(flow: str) -> str:
    if flow not in FLOWS:
        raise ValueError(f"flow = {flow!r} is out of range; allowed: {', '.join(FLOWS)}")
    return flow


def check_yosys(yosys: str) -> str:
    if yosys not in YOSYS_CHOICES:
        raise ValueError(f"yosys = {yosys!r} is out of range; allowed: {', '.join(YOSYS_CHOICES)}")
    return yosys


def registered_blocks() -> list[str]:
    return sorted(blocks.BLOCKS)


def synth_block(name: str, params: Mapping[str, str | int] | list[str] | None = None, *, flow: str = "generic",
                yosys: str = "debian", workdir: Path | None = None,
                keep_hierarchy: bool | None = None) -> dict[str, Any]:
    """Elaborate block ``name`` with ``params`` (NAME -> value, or ["NAME=VALUE", ...]) and synthesise it.

    Returns the flow's report with ``block`` and ``params`` (every parameter used) added.
    ``keep_hierarchy`` (generic flow only) defaults to the block's ``synth_keep_hierarchy``.
    """
    check_flow(flow)
    check_yosys(yosys)
    component, used, spec = blocks.elaborate(name, params)
    head = {"block": name, "params": dict(used)}
    if flow == "generic":
        text = verilog.convert(component, name=spec.top, emit_src=False)
        keep = spec.synth_keep_hierarchy if keep_hierarchy is None else bool(keep_hierarchy)
        report = synth_generic(text, spec.top, yosys=yosys, workdir=workdir, keep_hierarchy=keep)
    else:
        if keep_hierarchy is not None:
            raise ValueError(f"keep_hierarchy = {keep_hierarchy!r} is out of range for flow = 'ice40'; "
                             "allowed: None (the iCE40 flow always flattens)")
        report = synth_ice40(component, tools=yosys, workdir=workdir)
    return {**head, **report}


def write_json(report: Mapping[str, Any] | list, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..outdir import atomic_write_text
    return atomic_write_text(path, json.dumps(report, indent=2) + "\n")
