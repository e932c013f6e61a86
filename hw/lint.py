"""`make lint`: ``verilator --lint-only -Wall`` on emitted Verilog, with the documented waivers only.

Every waiver below is listed and justified in docs/verification.md ("Lint waivers"); any
other warning or error fails. Usage: ``python -m sparsetrain.hw.lint DIR_OR_FILE ...``
(folders are searched for ``*.v``).
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# rule -> why it is waived (the same text is in docs/verification.md)
WAIVERS: dict[str, str] = {
    "WIDTH": "Amaranth's Verilog backend emits operands at their natural widths and relies on "
             "Verilog's context-determined extension, which is exact; the widths were checked in "
             "Amaranth, whose arithmetic never truncates implicitly.",
    "CASEINCOMPLETE": "yosys writes multiplexers (Array indexing, FSM switches) as case statements "
                      "preceded by a default assignment, so uncovered values keep that default.",
    "UNUSEDSIGNAL": "the backend declares one wire per struct field of every port (for waveforms) "
                    "and keeps the unused upper bits of widened intermediate results.",
    "DECLFILENAME": "Amaranth writes a block and all its submodules (e.g. `group.pe0`) into one file "
                    "named after the top module, so submodule names cannot match the file name.",
}

_WARN = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?:\s*(.*)$")


@dataclass
class LintResult:
    path: Path
    returncode: int
    waived: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.returncode in (0, 1)


def lint_file(path: Path, top: str | None = None) -> LintResult:
    """Lint one Verilog file; the top module defaults to the file's stem."""
    path = Path(path)
    cmd = ["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top or path.stem, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    res = LintResult(path, proc.returncode)
    for line in proc.stderr.splitlines():
        m = _WARN.match(line)
        if not m:
            continue
        kind, rule, text = m.groups()
        if kind == "Warning" and rule in WAIVERS:
            res.waived[rule] += 1
        elif not (kind == "Warning" and rule is None):  # continuation lines carry no rule
            res.failures.append(line)
    if proc.returncode not in (0, 1) and not res.failures:
        res.failures.append(f"verilator exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return res


def verilog_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.v"))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"path = {str(p)!r} does not exist; allowed: a Verilog file or a folder of them")
    if not files:
        raise ValueError(f"paths = {[str(p) for p in paths]} hold no *.v file; allowed: folders with Verilog")
    return files


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m sparsetrain.hw.lint DIR_OR_FILE ...", file=sys.stderr)
        return 2
    try:
        files = verilog_files(argv)
    except ValueError as exc:
        print(f"lint: error: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for f in files:
        r = lint_file(f)
        waived = ", ".join(f"{k} x{v}" for k, v in sorted(r.waived.items())) or "none"
        print(f"{'ok  ' if r.ok else 'FAIL'} {f} (waived: {waived})")
        for line in r.failures:
            print(f"     {line}")
        bad += not r.ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
