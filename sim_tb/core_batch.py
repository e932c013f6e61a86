"""Run several core programs on the RTL in one simulator start, memories loaded by backdoor.

``run_core_programs(jobs, params)`` is ``core_driver.run_core_program`` for a list of programs
(the chunks of one layer step): one build (``core_driver.build_core(backdoor=True)``: only
the wrapper's signals public, C++ -O3, parallel make), one simulator start, and per program
one ``$readmemh`` of each memory image and one ``$writememh`` of the buffer and directory
instead of a Python callback per word loaded or read. The images are written here as hex
files; the results are the same ``CoreResult`` as ``run_core_program``'s.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..arch.isa import N_STEPS, CoreParams, dir_decode, entry_decode
from . import runner
from .core_driver import CoreResult, _status_fields, build_core, check_db_count, db_values

TB_MODULE = "sparsetrain.sim_tb.core_batch_tb"


@dataclass
class CoreJob:
    """One program with its memory images (as ``run_core_program`` takes them)."""

    program: Sequence[int]
    buffer_image: Sequence[int]
    masks: Sequence[int] = ()
    dir_count: int | None = None     # directory entries read back (default all)
    watchdog_cycles: int = 2_000_000
    stall: bool = False              # tests of the watchdog: hold start, so the core never finishes
    directory: Sequence[int] = ()    # directory image to load (SKIP_EMPTY: the data rows' entries)
    db_count: int = 0                # bias-gradient entries read back (host_rsel = 2)
    # load the memories without a reset: the PPUs (threshold FIFOs, sum|g|, generators) keep the
    # previous program's state, as when the host runs a layer's programs one after the other
    keep_state: bool = False


def _write_hex(path: Path, words: Sequence[int], depth: int) -> None:
    """A whole memory for $readmemh: the words, then zeros up to ``depth`` (no stale data)."""
    text = "\n".join(format(int(w), "x") for w in words)
    path.write_text(text + ("\n" if words else "") + "0\n" * (depth - len(words)))


def _read_hex(path: Path) -> list[int]:
    return [int(line, 16) for line in path.read_text().split() if not line.startswith("//")]


def _check(job: CoreJob, p: CoreParams) -> int:
    for name, words, depth in (("program", job.program, p.imem_depth), ("buffer_image", job.buffer_image, p.buf_depth),
                               ("masks", job.masks, p.mask_depth), ("directory", job.directory, p.dir_depth)):
        if len(words) > depth:
            raise ValueError(f"{name} = {len(words)} words is out of range; allowed: 0 .. {depth}")
    count = p.dir_depth if job.dir_count is None else job.dir_count
    if not 0 <= count <= p.dir_depth:
        raise ValueError(f"dir_count = {count} is out of range; allowed: 0 .. {p.dir_depth}")
    return count


def run_core_programs(jobs: Sequence[CoreJob], params: CoreParams, *, sim: str = "verilator",
                      ppu_status: Sequence[Sequence[int]] = (), seed: int | None = None) -> list[CoreResult]:
    """Load, run and read back every job in one simulator start; one ``CoreResult`` per job."""
    if not isinstance(params, CoreParams):
        raise ValueError(f"params = {params!r} is not a CoreParams; allowed: a CoreParams instance")
    p = params
    counts = [_check(j, p) for j in jobs]
    if not jobs:
        return []
    b = build_core(p, sim, backdoor=True)
    work = Path(tempfile.mkdtemp(prefix="batch-", dir=b.build_dir))
    tb = work / "tb"
    tb.mkdir()
    programs = []
    for i, (job, count) in enumerate(zip(jobs, counts)):
        prefix = f"p{i}_"
        for stem, words, depth in (("buf", job.buffer_image, p.buf_depth), ("mask", job.masks, p.mask_depth),
                                   ("imem", job.program, p.imem_depth), ("dir", job.directory, p.dir_depth)):
            _write_hex(tb / f"{prefix}{stem}.hex", words, depth)
        programs.append({"prefix": prefix, "watchdog_cycles": int(job.watchdog_cycles), "stall": bool(job.stall),
                         "db_count": check_db_count(int(job.db_count), p), "keep_state": bool(job.keep_state)})
    stim, result = work / "stim.json", work / "result.json"
    stim.write_text(json.dumps({"programs": programs, "ppu_status": [list(x) for x in ppu_status]}))
    runner.run(b, TB_MODULE, seed=seed, env={"CORE_STIM": str(stim), "CORE_RESULT": str(result)}, test_dir=tb)
    out = []
    for i, (r, count) in enumerate(zip(json.loads(result.read_text()), counts)):
        buf = _read_hex(tb / f"p{i}_buf_out.hex")
        dirs = _read_hex(tb / f"p{i}_dir_out.hex")[:count]
        directory = [dir_decode(w) for w in dirs]
        rows = {k: [entry_decode(w, p) for w in buf[d["start"]:d["start"] + d["entries"]]]
                for k, d in enumerate(directory) if d["written"]}
        out.append(CoreResult(
            done=bool(r["done"]), error=bool(r["error"]), error_code=r["error_code"], timed_out=r["timed_out"],
            cycles=r["cycles"], total_cycles=r["total_cycles"], waited_cycles=r["waited_cycles"], step_nnz=r["step_nnz"][:N_STEPS],
            step_rows=r["step_rows"], step_elems=r["step_elems"], directory=directory, rows=rows,
            ppu_status=[_status_fields(w, p) for w in r["ppu_status"]], sim_seconds=r["run_seconds"],
            db=db_values(r.get("db", []), p)))
    return out

