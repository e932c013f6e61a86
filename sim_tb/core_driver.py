"""Run a core program on the RTL from plain Python (docs/architecture.md section 11).

``run_core_program(program, buffer_image, params, sim=...)`` generates the core's Verilog
once per configuration, compiles it once (``sim_tb.runner``), loads the memories, runs the
core free until ``done`` under a watchdog and returns what the host reads back: result
rows through the directory, counters, cycles and the error status.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import numbers
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..arch.isa import N_STEPS, CoreParams, dir_decode, entry_decode
from ..golden.bitexact.ppu_model import PPUStatus
from . import runner
from .core_tb_common import SEL_BUF, SEL_DIR, SEL_IMEM, SEL_MASK

TB_MODULE = "sparsetrain.sim_tb.core_tb"


@dataclass
class CoreResult:
    done: bool
    error: int
    error_code: int
    timed_out: bool
    cycles: int
    total_cycles: int
    step_nnz: list[int]
    step_rows: list[int]
    step_elems: list[int]
    directory: list[dict[str, int]]
    rows: dict[int, list[tuple[int, int, int]]]  # dir index -> (value, offset, last) entries
    ppu_status: list[PPUStatus] = field(default_factory=list)
    db: list[int] = field(default_factory=list)  # bias-gradient sums read at host_rsel = 2 (section 11.6)
    sim_seconds: float = 0.0   # wall time of the free-running part
    waited_cycles: int = 0     # clock cycles from the start pulse to done or the watchdog

    @property
    def cycles_per_second(self) -> float:
        return self.total_cycles / self.sim_seconds if self.sim_seconds > 0 else 0.0

    def dense_row(self, index: int, length: int, off_end: int) -> list[int]:
        out = [0] * length
        for v, o, _ in self.rows[index]:
            if o != off_end:
                out[o] = v
        return out


@functools.lru_cache(maxsize=8)
def core_verilog(params: CoreParams) -> str:
    """Verilog of the core, generated with a fixed hash seed: Amaranth's internal names follow
    set/dict order, and a different text would force a new (minutes long) compile."""
    code = ("import json, sys\n"
            "from amaranth.back import verilog\n"
            "from sparsetrain.hw.core import Core\n"
            "from sparsetrain.arch.isa import CoreParams\n"
            "p = CoreParams(**json.loads(sys.argv[1]))\n"
            "sys.stdout.write(verilog.convert(Core(p), name='core', emit_src=False))\n")
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(params.as_dict())], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout


# The clock is made inside the simulator, by a wrapper module around the core, not by a cocotb
# Clock: a Python clock costs two Python callbacks per cycle (about 2,600 core cycles/s), the
# free-running core then runs at the simulator's own speed.
TB_TOPLEVEL = "core_tb"
HALF_PERIOD_NS = 5


# The watchdog counts clock cycles inside the wrapper, never simulated time: a delay's time unit
# is the simulator's business (cocotb's Verilator build ignores the timescale, so `#5` is 5 ps
# there and 5 ns on Icarus), a clock edge is the same on both. The testbench sets the deadline
# (tb_cycle at the start + the allowed cycles); tb_wd_expired rises on the edge that reaches it.
WATCHDOG_PORTS = ("tb_cycle", "tb_wd_deadline", "tb_wd_expired")
WATCHDOG_VERILOG = """\
  output [63:0] tb_cycle;
  input [63:0] tb_wd_deadline;
  output tb_wd_expired;
  reg [63:0] tb_cycle = 64'd0;
  always @(posedge clk) tb_cycle <= tb_cycle + 64'd1;
  assign tb_wd_expired = tb_cycle >= tb_wd_deadline;
"""


def verilog_ports(verilog: str, top: str) -> list[tuple[str, str, str, str]]:
    """The ports of module ``top`` in Amaranth's Verilog, in order: (direction, "signed" or "",
    "[msb:lsb] " or "", name) each."""
    start = verilog.find(f"module {top}(")
    if start < 0:
        raise ValueError(f"top = {top!r} is not a module of the Verilog; allowed: the generated top module")
    body = verilog[start:verilog.index("endmodule", start)]
    return re.findall(r"^  (input|output) (?:(signed) )?(\[\d+:\d+\] )?(\S+) ?;$", body, flags=re.M)


def clock_wrapper(verilog: str, top: str = "core", wrapper: str = TB_TOPLEVEL,
                  half_period: int = HALF_PERIOD_NS, backdoor: Mapping[str, str] | None = None,
                  dump: Sequence[str] = ()) -> str:
    """``verilog`` plus a module ``wrapper`` that instantiates ``top``, drives its ``clk`` with a
    period of ``2 * half_period`` time units from ``initial`` 0, and passes every other port
    through under the same name (so the testbench sees the core's ports on its toplevel), plus
    the cycle-counting watchdog ports ``WATCHDOG_PORTS``.

    ``backdoor`` (file stem -> memory of ``top``) adds two wrapper inputs: a rising ``mem_load``
    loads every such memory with ``$readmemh("<stem>.hex")``, a rising ``mem_dump`` writes the
    memories named in ``dump`` with ``$writememh("<stem>_out.hex")`` (files in the simulator's
    working folder): whole memories in one event instead of one host-port cycle per word."""
    ports = verilog_ports(verilog, top)
    if not any(direction == "input" and name == "clk" for direction, _, _, name in ports):
        raise ValueError(f"top = {top!r} has no 'clk' input; allowed: a design with one clock named clk")
    others = [(d, sg, w, n) for d, sg, w, n in ports if n != "clk"]
    clash = sorted({n for *_, n in others} & set(WATCHDOG_PORTS))
    if clash:
        raise ValueError(f"top = {top!r} has a port named {clash[0]!r}; allowed: no port named "
                         f"{', '.join(WATCHDOG_PORTS)} (the wrapper's watchdog)")
    decl = "\n".join(f"  {d} {sg + ' ' if sg else ''}{w}{n};" for d, sg, w, n in others)
    conn = ",\n".join(f"    .{n}({n})" for *_, n in others)
    names = [n for *_, n in others] + list(WATCHDOG_PORTS)
    extra = ""
    if backdoor:
        names += ["mem_load", "mem_dump"]
        # escaped names: a memory may be named after a keyword (the core's `buf` is a gate)
        ref = {stem: f"dut.\\{mem} " for stem, mem in backdoor.items()}
        loads = "".join(f'    $readmemh("{stem}.hex", {ref[stem]});\n' for stem in backdoor)
        dumps = "".join(f'    $writememh("{stem}_out.hex", {ref[stem]});\n' for stem in dump)
        extra = (f"  input mem_load;\n  input mem_dump;\n  always @(posedge mem_load) begin\n{loads}  end\n"
                 f"  always @(posedge mem_dump) begin\n{dumps}  end\n")
    return (f"{verilog}\n\nmodule {wrapper}({', '.join(names)});\n{decl}\n{extra}"
            f"  reg clk = 1'b0;\n  always #{half_period} clk = ~clk;\n{WATCHDOG_VERILOG}"
            f"  {top} dut (\n    .clk(clk),\n{conn}\n  );\nendmodule\n")


def core_source(b: runner.Build) -> str:
    """The core's own Verilog from a ``build_core`` build (its source without the clock wrapper)."""
    text = (b.build_dir / f"{b.toplevel}.v").read_text()
    return text[:text.index(f"\n\nmodule {TB_TOPLEVEL}(")] + "\n"


# The core's memories by the file stem the backdoor loads them from (sim_tb.core_batch).
CORE_MEMORIES = {"buf": "buf", "mask": "maskmem", "imem": "imem", "dir": "dirmem"}
CORE_DUMPS = ("buf", "dir")


def build_core(params: CoreParams, sim: str = "verilator", *, backdoor: bool = False) -> runner.Build:
    """Compile the core for ``params`` once (cached under build/sim by content), inside the
    clock wrapper (toplevel ``core_tb``). ``backdoor``: the wrapper also loads and dumps the
    memories by file (``clock_wrapper``) and, on Verilator, the build is a fast one (only the
    wrapper's signals public, -O3, parallel make: ``runner.build(fast=True)``)."""
    tag = f"core-g{params.groups}d{params.dw}k{params.k_max}w{params.w_max}" + ("-bd" if backdoor else "")
    wrap = dict(backdoor=CORE_MEMORIES, dump=CORE_DUMPS) if backdoor else {}
    # the wrapper is part of the build: its text (not only the core's parameters) keys the cache
    wrapper_key = hashlib.sha256(WATCHDOG_VERILOG.encode() + inspect.getsource(clock_wrapper).encode())
    key = {**params.as_dict(), "wrapper": wrapper_key.hexdigest()[:12], **({"backdoor": True} if backdoor else {})}
    return runner.build(lambda: clock_wrapper(core_verilog(params), **wrap), TB_TOPLEVEL, sim, name=tag,
                        params=key, timing=True, fast=backdoor)


def _status_fields(word: int, params: CoreParams) -> PPUStatus:
    from ..hw.ppu import ppu_status_layout
    lay = ppu_status_layout(params.ppu_config())
    vals = {}
    for name, fld in lay:
        width = fld.width
        v = (word >> fld.offset) & ((1 << width) - 1)
        if fld.shape.signed and v >> (width - 1):
            v -= 1 << width
        vals[name] = v
    vals.pop("busy", None)
    return PPUStatus(**vals)


def run_core_program(program: Sequence[int], buffer_image: Sequence[int], params: CoreParams, *,
                     masks: Sequence[int] = (), sim: str = "verilator", dir_count: int | None = None,
                     ppu_status: Sequence[Sequence[int]] = (), watchdog_cycles: int = 2_000_000,
                     seed: int | None = None, stall: bool = False, directory: Sequence[int] = (),
                     db_count: int = 0) -> CoreResult:
    """Load, run and read back one program; ``dir_count`` directory entries are read (default all).
    ``directory``: the directory image to load (the data rows' entries for SKIP_EMPTY, section
    12.4); the rest of the first ``dir_count`` entries is loaded zero.

    The run ends after ``watchdog_cycles`` clock cycles from the start pulse at the latest
    (``timed_out``). ``stall`` (tests of that watchdog) holds ``start`` high for the whole run:
    the controller restarts every cycle and never finishes, a core that really hangs."""
    if isinstance(watchdog_cycles, bool) or not isinstance(watchdog_cycles, numbers.Integral) \
            or not 1 <= watchdog_cycles < 1 << 48:
        raise ValueError(f"watchdog_cycles = {watchdog_cycles!r} is out of range; allowed: 1 .. {(1 << 48) - 1}")
    if not isinstance(params, CoreParams):
        raise ValueError(f"params = {params!r} is not a CoreParams; allowed: a CoreParams instance")
    for name, words, depth in (("program", program, params.imem_depth), ("buffer_image", buffer_image,
                                                                         params.buf_depth),
                               ("masks", masks, params.mask_depth), ("directory", directory, params.dir_depth)):
        if len(words) > depth:
            raise ValueError(f"{name} = {len(words)} words is out of range; allowed: 0 .. {depth}")
    if dir_count is None:
        dir_count = params.dir_depth
    if not 0 <= dir_count <= params.dir_depth:
        raise ValueError(f"dir_count = {dir_count} is out of range; allowed: 0 .. {params.dir_depth}")
    b = build_core(params, sim)
    loads = [(SEL_BUF, 0, [int(w) for w in buffer_image]), (SEL_MASK, 0, [int(w) for w in masks]),
             (SEL_IMEM, 0, [int(w) for w in program]),
             (SEL_DIR, 0, [int(w) for w in directory] + [0] * max(0, dir_count - len(directory)))]
    work = Path(tempfile.mkdtemp(prefix="core-", dir=b.build_dir))
    stim, result = work / "stim.json", work / "result.json"
    check_db_count(db_count, params)
    stim.write_text(json.dumps({"loads": loads, "dir_count": dir_count, "watchdog_cycles": int(watchdog_cycles),
                                "ppu_status": [list(x) for x in ppu_status], "stall": bool(stall),
                                "db_count": int(db_count)}))
    runner.run(b, TB_MODULE, seed=seed, env={"CORE_STIM": str(stim), "CORE_RESULT": str(result)},
               test_dir=work / "tb")
    r = json.loads(result.read_text())
    rows = {int(k): [entry_decode(w, params) for w in v] for k, v in r["rows"].items()}
    return CoreResult(
        done=bool(r["done"]), error=bool(r["error"]), error_code=r["error_code"], timed_out=r["timed_out"],
        cycles=r["cycles"], total_cycles=r["total_cycles"], waited_cycles=r["waited_cycles"],
        step_nnz=r["step_nnz"][:N_STEPS],
        step_rows=r["step_rows"], step_elems=r["step_elems"],
        directory=[dir_decode(w) for w in r["directory"]], rows=rows,
        ppu_status=[_status_fields(w, params) for w in r["ppu_status"]], sim_seconds=r["run_seconds"],
        db=db_values(r.get("db", []), params))


def check_db_count(db_count: int, params: CoreParams) -> int:
    if not 0 <= db_count <= params.db_depth:
        raise ValueError(f"db_count = {db_count} is out of range; allowed: 0 .. {params.db_depth} (DB_DEPTH)")
    return db_count


def db_values(words: Sequence[int], params: CoreParams) -> list[int]:
    """Bias-gradient sums as read at host_rsel = 2: G_W-bit two's complement (section 11.5)."""
    g_w = params.ppu_config().g_w
    out = []
    for w in words:
        v = int(w) & ((1 << g_w) - 1)
        out.append(v - (1 << g_w) if v >> (g_w - 1) else v)
    return out
