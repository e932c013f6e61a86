"""`sparsetrain verilog`: emit the Verilog of one block and a JSON file of its parameters."""
from __future__ import annotations

import argparse

from .. import outdir
from ..hw.blocks import BLOCKS, get_block, to_verilog, write_block

NAME = "verilog"
HELP = "write <block>.v and <block>.json (every parameter used) for one hardware block"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block", help="block name (see --list)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="elaboration parameter, repeatable (e.g. --param DW=8)")
    p.add_argument("-o", "--out", default="out/verilog", help="output folder (default: out/verilog)")
    p.add_argument("--list", action="store_true", help="list the blocks and their parameters")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in sorted(BLOCKS):
            spec = BLOCKS[name]
            print(f"{name}: {spec.help}")
            for pname, ps in spec.params.items():
                print(f"  {pname:<8} default {ps.default if ps.default is not None else 'derived'}: {ps.help}")
        return 0
    if not args.block:
        raise ValueError(f"--block is required; allowed: {', '.join(sorted(BLOCKS))} (--list shows their parameters)")
    get_block(args.block)
    # Every check before anything is written: the folder (sparsetrain.outdir: a user's own <block>.v or
    # .json is never replaced; an earlier `sparsetrain verilog` output is regenerated) and the block.
    out = outdir.plan(args.out, NAME, writes=(f"{args.block}.v", f"{args.block}.json"), option="-o",
                      replace_own=True)
    made = to_verilog(args.block, args.param)  # validates the parameters
    out.apply()
    out.record(f"{args.block}.v", f"{args.block}.json")
    vpath, jpath = write_block(args.block, args.param, args.out, made=made)
    print(f"wrote {vpath} and {jpath}")
    return 0
