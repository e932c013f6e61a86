"""`sparsetrain formal`: SymbiYosys proofs of the PE, PPU, group and core (sparsetrain.formal)."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "formal"
HELP = "formal proofs (SymbiYosys, smtbmc + Yices) of the blocks' handshakes and arithmetic"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block", action="append", default=[], metavar="B",
                   help="only this block's checks (repeatable; default: every block)")
    p.add_argument("--check", action="append", default=[], metavar="NAME",
                   help="only this check, e.g. pe.contract (repeatable; see --list)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="BMC / cover depth, or k of k-induction, for every selected check "
                        "(default: each check's own, see --list)")
    p.add_argument("--fast", action="store_true", help="only the subset that make test runs")
    p.add_argument("--mutation", action="store_true",
                   help="also run the mutation checks (a known bug must make the proof fail)")
    p.add_argument("--out", default="out/formal", help="output folder (default: out/formal)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")


def run(args: argparse.Namespace) -> int:
    from ..formal import select
    from ..formal.suite import run_checks

    if args.depth is not None and args.depth < 1:
        raise ValueError(f"--depth = {args.depth} is out of range; allowed: >= 1")
    checks = select(args.block, args.check, fast=args.fast)
    if args.list:
        for c in checks:
            print(f"{c.name:<20} {c.mode:<6} depth {c.depth:<3} {'fast ' if c.fast else ''}{c.what}")
        return 0
    out = Path(args.out)
    print(f"{len(checks)} checks -> {out}")

    def progress(r) -> None:
        row = r.row()
        print(f"  {row['check']:<20} {r.check.mode:<6} depth {str(row['depth']):<6} {row['status']:<7} "
              f"{row['seconds']:>7.1f} s", flush=True)
        if r.status != "PASS":
            for line in r.sby.summary:
                print(f"      {line}")
            print(f"      log: {r.sby.workdir / 'sby.log'}")

    results = run_checks(checks, out, depth=args.depth, progress=progress)
    ok = all(r.status == "PASS" for r in results)
    if args.mutation:
        from ..formal.mutation import MUTATIONS, run_mutation
        for mut in MUTATIONS:
            mr = run_mutation(mut, out / "mutation")
            caught = mr.status == "FAIL" and mr.trace is not None
            print(f"  mutation {mut.name:<22} proof {mr.status:<7} {'caught' if caught else 'NOT CAUGHT'}; "
                  f"trace: {mr.trace}")
            ok = ok and caught
    print(f"{'PASS' if ok else 'FAIL'}: results in {out / 'results.md'}")
    return 0 if ok else 1
