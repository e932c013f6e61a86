"""`sparsetrain perf`: training speedup and energy of a network on SparseTrain vs a dense baseline."""
from __future__ import annotations

import argparse

from ..arch.schedule import ArchParams
from ..perf import api, paper, report
from ..perf.energy import EnergyTable
from ..arch.microarch import BUILT, MicroArch
from ..perf.shapes import INPUT_SIZES

NAME = "perf"
HELP = "performance model: per-layer cycles, speedup, PE utilisation and energy vs a dense baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=paper.MODELS, help="network of the golden model")
    p.add_argument("--input", default="cifar", choices=sorted(INPUT_SIZES), help="32x32 or 224x224 inputs")
    p.add_argument("--densities", metavar="PATH",
                   help="run dir with metrics.json, or a JSON/CSV table (default: the papers' densities)")
    p.add_argument("--golden", metavar="RUN_DIR", help="exact model of the layers of a golden tensor directory")
    p.add_argument("--groups", type=int, default=56, help="PE groups of 3 PEs (default 56 = 168 PEs)")
    p.add_argument("--buffer-kb", type=float, default=386.0, help="global buffer size in KB")
    p.add_argument("--buffer-bw", type=float, default=None, help="buffer entries per cycle (default unlimited)")
    p.add_argument("--dram-bw", type=float, default=None, help="DRAM bytes per cycle (default: not limiting)")
    p.add_argument("--microarch", default=BUILT, type=MicroArch.parse, metavar="NAME",
                   help=f"built (default: {BUILT.name}, the set the RTL core is built with), gen1 (the first "
                        "design), gen2 (= A+B+C+D, unlimited op reader; architecture section 12) or letters "
                        "A..E joined by '+': A prefetch, B MSRC look-ahead, C ping-pong PPU, D skip empty rows "
                        "(D4: an op reader of 4 OP words per cycle), E OSRC look-ahead")
    p.add_argument("--energy", metavar="JSON", help="per-access energies replacing the defaults")
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="bar chart of the speedups")
    p.add_argument("--all", action="store_true", help="every network, both input sizes (make perf)")
    p.add_argument("--out", metavar="DIR", default="out/perf", help="output folder of --all")


def run(args: argparse.Namespace) -> int:
    from .. import outdir

    arch = ArchParams(groups=args.groups, buffer_kb=args.buffer_kb, buffer_bw=args.buffer_bw, dram_bw=args.dram_bw,
                      micro=args.microarch)
    energy = EnergyTable.load(args.energy) if args.energy else EnergyTable()
    # output targets checked before the model runs (sparsetrain.outdir: a user's file is never replaced)
    outdir.check_file_target(args.json, "--json")
    outdir.check_file_target(args.plot, "--plot")
    if args.all:
        names = [f"{m}-{k}.{ext}" for m in paper.MODELS for k in INPUT_SIZES for ext in ("txt", "json")]
        out = outdir.plan(args.out, NAME, writes=(*names, "summary.md", "speedup.png"), replace_own=True)
        out.apply()
        out.record(*names, "summary.md", "speedup.png")
        try:
            results = api.perf_all(args.out, arch, energy, args.densities)
        except BaseException:
            out.discard()
            raise
        print(api.summary_markdown(results))
        print(f"tables, JSON and speedup.png in {args.out}")
        return 0
    if args.golden:
        res = api.perf_golden(args.golden, arch, energy)
    elif args.model:
        res = api.perf_network(args.model, args.input, args.densities, arch, energy)
    else:
        raise ValueError("model = None is out of range; allowed: --model NAME, --golden RUN_DIR or --all")
    print(report.table(res))
    if args.json:
        print(f"wrote {report.write_json(res, args.json)}")
    if args.plot:
        print(f"wrote {report.plot([res], args.plot)}")
    return 0
