"""Verilator line/toggle coverage of the PPU: merge the PPU runs' coverage.dat files and summarise.

After ``COVERAGE_HDL=1`` PPU test runs (``make test`` or ``make regress``), run
``python -m sparsetrain.sim_tb.ppu_coverage`` to merge every ``coverage.dat`` under the PPU
builds and print the summary that docs/verification.md (section PPU) reports. The merging and
parsing are the PE's (``sim_tb.pe_coverage``); only the build pattern and file names differ.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .pe_coverage import find_dat_files, merge, print_summary, summarise
from .runner import build_root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else build_root().parent / "coverage"
    files = find_dat_files(pattern="ppu-*")
    try:
        merged = merge(files, out_dir / "ppu-merged.dat")
    except ValueError as exc:
        print(f"ppu_coverage: error: {exc}", file=sys.stderr)
        return 2
    summary = summarise(merged)
    summary["runs"] = len(files)
    (out_dir / "ppu-coverage.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"PPU coverage from {len(files)} runs (merged: {merged})")
    print_summary(summary, worst_signals=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
