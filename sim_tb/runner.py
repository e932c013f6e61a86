"""Build-once, run-many wrapper around cocotb 1.9's Python runner.

Each (simulator, top module, Verilog text, build options) is compiled once into a
content-addressed folder under ``build/sim``; pytest-xdist workers that ask for the same
configuration wait on a file lock instead of compiling it again. Waveforms only when
``WAVES=1``; Verilator line/toggle coverage when ``COVERAGE_HDL=1`` (never ``COVERAGE``,
which cocotb reserves for Python coverage).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from cocotb.runner import get_results, get_runner

SIMULATORS = ("verilator", "icarus")
REPO_ROOT = Path(__file__).resolve().parents[1]


def build_root() -> Path:
    return Path(os.environ.get("SPARSETRAIN_BUILD_DIR", REPO_ROOT / "build")) / "sim"


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def coverage_requested() -> bool:
    return os.environ.get("COVERAGE_HDL", "0") not in ("", "0")


@dataclass(frozen=True)
class Build:
    sim: str
    toplevel: str
    build_dir: Path
    waves: bool
    coverage: bool


def _build_args(sim: str, waves: bool, coverage: bool, timing: bool = False) -> list[str]:
    if sim == "verilator":
        # Amaranth's output trips WIDTH/CASEINCOMPLETE style warnings that Verilator would
        # treat as fatal; the lint target (make lint) reviews them with -Wall instead.
        args = ["-Wno-fatal", "-O3"]
        if timing:  # delays in the design itself (a clock generator in a testbench wrapper)
            args += ["--timing"]
        if waves:
            args += ["--trace-fst", "--trace-structs"]
        if coverage:
            args += ["--coverage-line", "--coverage-toggle"]
        return args
    # Icarus: -g2005 so that yosys' `always @*` initial trigger fires (toolchain notes).
    return ["-g2005"]


def hw_fingerprint() -> str:
    """Hash of every source the generated Verilog depends on (hw/, the contract sparsetrain/arch/, Amaranth)."""
    from importlib import metadata

    h = hashlib.sha256(metadata.version("amaranth").encode())
    for path in sorted((REPO_ROOT / "hw").glob("*.py")) + sorted((REPO_ROOT / "sparsetrain" / "arch").glob("*.py")):
        h.update(str(path.relative_to(REPO_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_BUILT: dict[str, Build] = {}  # per process: a cached configuration is not even re-hashed

# Flags of a `fast` Verilator build, chosen by measurement on the core (docs/verification.md):
# cocotb 1.9's runner makes every signal of the design public (--public-flat-rw), which stops
# Verilator from optimising across the design (a quarter of the bare-Verilator rate) and
# doubles the C++ it compiles; a fast build makes only the toplevel's own signals public (a
# .vlt file: the testbench touches the wrapper's ports and nothing inside), compiles the C++
# at -O3 instead of verilated.mk's -Os and runs make in parallel.
FAST_CXX_OPT = "-O3"


def build_jobs() -> int:
    """Parallel make jobs of a build: $SPARSETRAIN_BUILD_JOBS, else the CPUs this process may use."""
    env = os.environ.get("SPARSETRAIN_BUILD_JOBS")
    return max(1, int(env)) if env else max(1, len(os.sched_getaffinity(0)))


def _fast_verilator(toplevel: str, build_dir: Path):
    """A cocotb Verilator runner whose build makes only ``toplevel``'s signals public."""
    from cocotb.runner import Verilator

    class FastVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            vlt = build_dir / "public.vlt"
            vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            at = next(i for i, a in enumerate(cmds[0]) if a.endswith("verilator.cpp"))
            cmds[0].insert(at, str(vlt))  # configuration before the sources
            cmds[1] += [f"-j{build_jobs()}", f"OPT_FAST={FAST_CXX_OPT}"]
            return cmds

    return FastVerilator()


def build(verilog: str | Callable[[], str], toplevel: str, sim: str = "verilator", *,
          name: str | None = None, params: Mapping[str, object] | None = None, timing: bool = False,
          fast: bool = False) -> Build:
    """Compile a Verilog design for ``sim`` once; return where it lives.

    ``verilog`` is the text of one file, or a function that makes it. With ``params`` (the
    block's elaboration parameters) the cache is keyed on them and on hw_fingerprint(), so a
    cached configuration is found without generating its Verilog at all; this matters because
    Amaranth's internal names follow Python's hash order, so the text differs between
    processes, and generating a large block takes minutes. Without ``params`` the key is the
    text itself. ``timing`` compiles delays in the design (Verilator ``--timing``; Icarus
    always does). ``fast`` (Verilator only): only the toplevel's own signals public, C++ at
    -O3, parallel make (see FAST_CXX_OPT); the testbench must not reach inside the design.
    """
    if sim not in SIMULATORS:
        raise ValueError(f"sim = {sim!r} is out of range; allowed: {', '.join(SIMULATORS)}")
    waves, coverage = waves_requested(), coverage_requested() and sim == "verilator"
    args = _build_args(sim, waves, coverage, timing)
    fast = fast and sim == "verilator" and not waves and not coverage
    if fast:  # part of the cache key (the make flags are not build args)
        args = args + [f"fast:{FAST_CXX_OPT}"]
    memo = json.dumps([toplevel, sim, args, name, dict(sorted(params.items()))], default=str) \
        if params is not None else None
    if memo in _BUILT:
        return _BUILT[memo]
    if params is not None:
        ident: object = ["params", dict(sorted(params.items())), hw_fingerprint()]
    else:
        if callable(verilog):
            verilog = verilog()
        ident = verilog
    key = hashlib.sha256(json.dumps([ident, toplevel, sim, args], default=str).encode()).hexdigest()[:16]
    bdir = build_root() / sim / f"{name or toplevel}-{key}"
    bdir.parent.mkdir(parents=True, exist_ok=True)
    done = bdir / ".built"
    with open(bdir.parent / f".{bdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            src = bdir / f"{toplevel}.v"
            src.write_text(verilog() if callable(verilog) else verilog)
            runner = _fast_verilator(toplevel, bdir) if fast else get_runner(sim)
            runner.build(verilog_sources=[src], hdl_toplevel=toplevel, build_dir=bdir,
                         build_args=[a for a in args if not a.startswith("fast:")], waves=waves, always=True, timescale=("1ns", "1ps"),
                         log_file=bdir / "build.log")
            done.write_text(key)
    result = Build(sim, toplevel, bdir, waves, coverage)
    if memo is not None:
        _BUILT[memo] = result
    return result


def default_seed() -> int:
    """Seed of a driver run when the caller gives none: $SPARSETRAIN_SEED, else 12345."""
    return int(os.environ.get("SPARSETRAIN_SEED", "12345"))


def check_handshake_probabilities(p_valid: float, p_ready: float) -> None:
    """Per-cycle probabilities of a stream source offering / a sink accepting: (0, 1]."""
    for name, prob in (("p_valid", p_valid), ("p_ready", p_ready)):
        if not 0.0 < prob <= 1.0:
            raise ValueError(f"{name} = {prob} is out of range; allowed: (0, 1]")


def tb_problems(result: Path) -> str:
    """The problems a block testbench (``streams.BlockTB``) saved in its result npz, in one line."""
    import numpy as np

    try:
        problems = [str(x) for x in np.load(result)["problems"]]
    except (OSError, KeyError, ValueError):
        return "no result file (the simulator stopped early)"
    return " | ".join(problems) if problems else "no problem recorded"


def run_folder(b: Build, prefix: str, workdir: Path | None = None) -> Path:
    """``workdir`` (created), or a fresh folder under the build: each run keeps its own files."""
    wdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix, dir=b.build_dir))
    wdir.mkdir(parents=True, exist_ok=True)
    return wdir


def run_explained(b: Build, test_module: str, *, seed: int, env: Mapping[str, str], wdir: Path,
                  result: Path, what: str) -> None:
    """``run`` in the run folder ``wdir`` (``wdir/tb``); a failure becomes one AssertionError naming
    ``what``, the seed, the problems the testbench wrote into ``result`` and the folder."""
    try:
        run(b, test_module, seed=seed, env=env, test_dir=wdir / "tb")
    except AssertionError as exc:
        raise AssertionError(f"{what} testbench failed (seed {seed}): {tb_problems(result)}; "
                             f"log and data in {wdir}") from exc


def run(b: Build, test_module: str, *, testcase: str | None = None, seed: int | None = None,
        env: Mapping[str, str] | None = None, test_dir: Path | None = None) -> tuple[int, int]:
    """Run cocotb ``test_module`` on a build; returns (tests, failures) and raises on failure.

    Each run gets its own working folder so parallel runs never share result or coverage
    files.
    """
    tdir = Path(test_dir) if test_dir else Path(tempfile.mkdtemp(prefix="tb-", dir=b.build_dir))
    tdir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(b.sim)
    try:
        xml = runner.test(test_module=test_module, hdl_toplevel=b.toplevel, hdl_toplevel_lang="verilog",
                          build_dir=b.build_dir, test_dir=tdir, testcase=testcase, seed=seed,
                          extra_env=dict(env or {}), waves=b.waves,
                          results_xml=None if os.getenv("PYTEST_CURRENT_TEST") else "results.xml")
    except SystemExit as exc:  # cocotb's runner exits the process on failures under pytest
        raise AssertionError(f"{test_module}: cocotb tests failed ({exc}); log in {tdir}") from None
    tests, fails = get_results(Path(xml))
    if fails or not tests:
        raise AssertionError(f"{test_module}: {fails} of {tests} cocotb tests failed (log in {tdir})")
    return tests, fails
