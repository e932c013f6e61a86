"""Verilator line/toggle coverage of the PE: merge the runs' coverage.dat files and summarise.

After ``COVERAGE_HDL=1 make regress`` (or any PE test run with COVERAGE_HDL=1), run
``python -m sparsetrain.sim_tb.pe_coverage`` to merge the ``coverage.dat`` files of each PE
build (one per configuration) with ``verilator_coverage --write`` and print the summary that docs/verification.md
reports (points hit / points total per coverage type, and the signals with untoggled bits).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .runner import build_root

_POINT = re.compile(r"^C '(.*)' (\d+)$")


def demangle(name: str) -> str:
    """Verilator's escaped names (``__05F`` = ``_``, ``__024`` = ``$``) back to readable ones."""
    return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def find_dat_files(root: Path | None = None, pattern: str = "pe-*") -> list[Path]:
    root = Path(root) if root else build_root() / "verilator"
    return sorted(p for d in root.glob(pattern) for p in d.rglob("coverage.dat"))


def merge(files: list[Path], out: Path) -> Path:
    if not files:
        raise ValueError("files = [] is out of range; allowed: at least one coverage.dat "
                         "(run the PE tests with COVERAGE_HDL=1 first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["verilator_coverage", "--write", str(out), *map(str, files)], check=True,
                   capture_output=True, text=True)
    return out


def summarise(dat: Path) -> dict:
    """{'line': {'hit', 'total', 'percent'}, 'toggle': ..., 'branch': ..., 'untoggled': {signal: bits}}."""
    hit, total = Counter(), Counter()
    untoggled: dict[str, int] = defaultdict(int)
    for line in Path(dat).read_text(errors="replace").splitlines():
        m = _POINT.match(line)
        if not m:
            continue
        fields = dict(kv.split("\x02", 1) for kv in m.group(1).split("\x01") if "\x02" in kv)
        kind = fields.get("page", "v_other/").split("/", 1)[0].removeprefix("v_")
        count = int(m.group(2))
        total[kind] += 1
        if count > 0:
            hit[kind] += 1
        elif kind == "toggle":
            untoggled[re.sub(r"\[\d+\]$", "", demangle(fields.get("o", "?")))] += 1
    out = {k: {"hit": hit[k], "total": total[k], "percent": round(100.0 * hit[k] / total[k], 2)}
           for k in sorted(total)}
    out["untoggled"] = dict(sorted(untoggled.items(), key=lambda kv: -kv[1]))
    return out


def print_summary(summary: dict, worst_signals: int = 12) -> None:
    """Hit / total per coverage kind, then the signals with the most untoggled bits."""
    for kind, s in summary.items():
        if isinstance(s, dict) and "total" in s:
            print(f"  {kind:<7} {s['hit']:>6} / {s['total']:<6} {s['percent']:6.2f} %")
    worst = list(summary["untoggled"].items())[:worst_signals]
    if worst:
        print("  signals with untoggled bits: " + ", ".join(f"{n} ({b})" for n, b in worst))


def main(argv: list[str] | None = None) -> int:
    """One summary per PE configuration (build folder) that has coverage data."""
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else build_root().parent / "coverage"
    root = build_root() / "verilator"
    groups = {d.name: sorted(d.rglob("coverage.dat")) for d in sorted(root.glob("pe-*"))}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        print("pe_coverage: error: no coverage.dat under the PE builds; run the PE tests with COVERAGE_HDL=1 first",
              file=sys.stderr)
        return 2
    report = {}
    for name, files in groups.items():
        summary = summarise(merge(files, out_dir / f"{name}.dat"))
        summary["runs"] = len(files)
        report[name] = summary
        print(f"{name}: {len(files)} runs")
        print_summary(summary)
    (out_dir / "pe-coverage.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
