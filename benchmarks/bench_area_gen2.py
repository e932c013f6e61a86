"""Area before/after the second generation (issue 15): PE, PPU, group and core, first design vs built set.

Each block is synthesised twice with the generic Yosys flow (`sparsetrain synth`, NAND2-equivalent
area): with its second-generation switches off (the first design) and on (the built set of
docs/architecture.md section 12). The script prints a markdown table of NAND2-eq, flip-flops and
the area ratio, and the speedup per area against the first design, taking the speedups from one
run of the performance model (papers' densities, 14 network/input pairs, first design vs
``arch.microarch.BUILT``).

Nothing is skipped silently: every block asked for must have every parameter of both
configurations; a parameter a block does not have (yet) is an error that names the block and the
parameter, raised before any synthesis starts. Synthesis is slow (a PE takes 10 to 20 minutes on
the shared 2-core machine, the core much longer), so run it nice'd, e.g.

    nice -n 19 .venv/bin/python benchmarks/bench_area_gen2.py --blocks pe --json out/area_gen2.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# The switches of each block, first design vs built set (architecture section 12). The first design
# names its switches explicitly (off) so that a block lacking one fails here too, not silently.
GEN2_CORE = {"PREFETCH": 1, "LOOKAHEAD": 2, "SKIP_EMPTY": 1, "OP_SCAN": 4, "PINGPONG": 1, "OSRC_WINDOW": 2}
FIRST_CORE = {"PREFETCH": 0, "LOOKAHEAD": 1, "SKIP_EMPTY": 0, "PINGPONG": 0, "OSRC_WINDOW": 1}
CONFIGS: dict[str, dict[str, dict[str, int]]] = {
    "pe": {"first": {"PREFETCH": 0, "LOOKAHEAD": 1, "OSRC_WINDOW": 1},
           "built": {"PREFETCH": 1, "LOOKAHEAD": 2, "OSRC_WINDOW": 2}},
    "ppu": {"first": {"PINGPONG": 0}, "built": {"PINGPONG": 1}},
    "group": {"first": dict(FIRST_CORE), "built": dict(GEN2_CORE)},
    # the controller's unit rate (F, 12.9) is the core's own
    "core": {"first": {**FIRST_CORE, "UNIT_RATE": 1}, "built": {**GEN2_CORE, "UNIT_RATE": 8}},
}
BLOCKS = tuple(CONFIGS)


def check_params(blocks: list[str]) -> None:
    """Every parameter of both configurations exists on every block asked for (ValueError otherwise)."""
    from sparsetrain.hw.blocks import BLOCKS as REGISTRY, parse_overrides
    problems = []
    for b in blocks:
        if b not in CONFIGS:
            raise ValueError(f"blocks = {b!r} is out of range; allowed: {', '.join(BLOCKS)}")
        if b not in REGISTRY:
            raise ValueError(f"block {b!r} is not in the block registry (hw/blocks.py)")
        spec = REGISTRY[b]
        missing = sorted({n for params in CONFIGS[b].values() for n in params if n not in spec.params})
        if missing:
            problems.append(f"block {b} has no parameter {', '.join(missing)} (yet; it has {', '.join(spec.params)})")
            continue
        for params in CONFIGS[b].values():
            spec.params_from(parse_overrides(spec, [f"{n}={v}" for n, v in params.items()]))  # values in range
    if problems:
        raise ValueError("; ".join(problems) + "; allowed: blocks whose second-generation parameters exist "
                         "(--blocks ...)")


def perf_from_json(path: Path) -> dict[str, float]:
    """The same figures from benchmarks/bench_perf_built.py's --json (one run of the model)."""
    res = json.loads(Path(path).read_text())
    pairs = res["pairs"]
    return {"microarch": res["designs"]["built"], "first_avg": res["first_avg"], "built_avg": res["built_avg"],
            "built_vs_first_cycles_avg": sum(p["first"]["cycles"] / p["built"]["cycles"] for p in pairs) / len(pairs)}


def perf_speedups() -> dict[str, float]:
    """Average speedups over the 14 pairs of `make perf` (papers' densities), first design vs BUILT, one run."""
    from sparsetrain.arch.microarch import BUILT, GEN1
    from sparsetrain.arch.schedule import ArchParams
    from sparsetrain.perf import api, paper
    from sparsetrain.perf.shapes import INPUT_SIZES
    pairs = [(m, k) for m in paper.MODELS for k in INPUT_SIZES]
    first = {p: api.perf_network(*p, None, ArchParams(micro=GEN1)) for p in pairs}
    built = {p: api.perf_network(*p, None, ArchParams(micro=BUILT)) for p in pairs}
    n = len(pairs)
    return {"microarch": BUILT.name,
            "first_avg": sum(r.speedup for r in first.values()) / n,
            "built_avg": sum(r.speedup for r in built.values()) / n,
            # the built design's own cycles against the first design's (same work, sparse rows)
            "built_vs_first_cycles_avg": sum(first[p].cycles() / built[p].cycles() for p in pairs) / n}


def synth(blocks: list[str], log=print) -> list[dict]:
    from sparsetrain.synth.flows import synth_block
    rows = []
    for b in blocks:
        row: dict = {"block": b}
        for cfg, params in CONFIGS[b].items():
            t0 = time.time()
            log(f"{b} {cfg}: {' '.join(f'{n}={v}' for n, v in params.items())} ...")
            rep = synth_block(b, {n: str(v) for n, v in params.items()}, flow="generic")
            row[cfg] = {k: rep[k] for k in ("params", "cells", "flip_flops", "nand2_eq", "nand2_eq_combinational",
                                             "nand2_eq_sequential", "cmos_transistors", "memory_bits")}
            row[cfg]["wall_s"] = round(time.time() - t0, 1)
            log(f"  {rep['nand2_eq']:,.0f} NAND2-eq, {rep['flip_flops']:,} flip-flops ({row[cfg]['wall_s']:.0f} s)")
        row["ratio"] = row["built"]["nand2_eq"] / row["first"]["nand2_eq"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], perf: dict[str, float] | None) -> str:
    lines = ["| block | first design NAND2-eq | built set NAND2-eq | area ratio | flip-flops (first / built) "
             + ("| speedup per area vs first design (speedup vs dense) | cycles gain per area vs first design " if perf
                else "") + "|",
             "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if perf else "")]
    for r in rows:
        f, b = r["first"], r["built"]
        line = (f"| {r['block']} | {f['nand2_eq']:,.0f} | {b['nand2_eq']:,.0f} | {r['ratio']:.3f} | "
                f"{f['flip_flops']:,} / {b['flip_flops']:,} |")
        if perf:
            sp = perf["built_avg"] / perf["first_avg"]
            line += f" {sp / r['ratio']:.2f}x | {perf['built_vs_first_cycles_avg'] / r['ratio']:.2f}x |"
        lines.append(line)
    if perf:
        lines.append(f"\nPerformance model, one run (papers' densities, 14 pairs): average speedup vs dense "
                     f"{perf['first_avg']:.2f}x first design, {perf['built_avg']:.2f}x {perf['microarch']} "
                     f"(ratio {perf['built_avg'] / perf['first_avg']:.2f}); the built design's cycles against the "
                     f"first design's {perf['built_vs_first_cycles_avg']:.2f}x fewer on average.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", nargs="+", default=list(BLOCKS), help=f"blocks to synthesise (default: {' '.join(BLOCKS)})")
    ap.add_argument("--no-perf", action="store_true", help="leave out the speedup per area (no performance model run)")
    ap.add_argument("--perf-json", type=Path, metavar="FILE",
                    help="take the speedups from benchmarks/bench_perf_built.py --json instead of running the model")
    ap.add_argument("--from-json", type=Path, metavar="FILE", help="print the table of an earlier --json (no synthesis)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write rows and speedups as JSON")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        old = json.loads(args.from_json.read_text())
        perf = perf_from_json(args.perf_json) if args.perf_json else old.get("perf")
        print(markdown(old["rows"], None if args.no_perf else perf))
        return 0
    try:
        check_params(args.blocks)       # before anything slow: a missing parameter is an error naming it
    except ValueError as e:
        print(f"bench_area_gen2: {e}", file=sys.stderr)
        return 2
    if args.json is not None:
        from sparsetrain.outdir import check_file_target
        check_file_target(str(args.json), "--json")
    try:
        os.nice(10)                     # the machine is shared; Yosys inherits it
    except OSError:
        pass
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    perf = None
    if args.perf_json is not None and not args.no_perf:
        perf = perf_from_json(args.perf_json)
    elif not args.no_perf:
        t0 = time.time()
        perf = perf_speedups()
        log(f"performance model: {perf} ({time.time() - t0:.0f} s)")
    rows = synth(args.blocks, log)
    print(markdown(rows, perf))
    if args.json is not None:
        from sparsetrain.outdir import atomic_write_text
        atomic_write_text(args.json, json.dumps({"perf": perf, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
