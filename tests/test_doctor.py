"""`sparsetrain doctor`: exit 0 on this machine, and a precise report of anything missing."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparsetrain import cli
from sparsetrain.commands import doctor

# The console script of the environment running the tests (.venv/bin/sparsetrain under make test).
SCRIPT = Path(sys.executable).parent / "sparsetrain"
REQUIRED_TOOLS = [t[0] for t in doctor.TOOLS if t[2]]


def path_without(tmp_path: Path, *absent: str) -> str:
    """A PATH holding links to every tool the doctor looks for except the named ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe, *_ in doctor.TOOLS:
        real = shutil.which(exe)
        if exe not in absent and real:
            (bin_dir / exe).symlink_to(real)
    return str(bin_dir)


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_console_script_reports_everything_and_exits_zero() -> None:
    out = run_script("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in [d for d, _ in doctor.PY_PACKAGES] + REQUIRED_TOOLS + ["fashion-mnist"]:
        line = next((ln for ln in out.stdout.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None and " ok " in f"{line} ", (name, out.stdout)
    assert "missing:" not in out.stdout


def test_json_report_lists_versions() -> None:
    out = run_script("doctor", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["missing"] == []
    items = {it["name"]: it for it in report["items"]}
    assert items["cocotb"]["version"] == "1.9.2"
    assert items["torch"]["version"].startswith("2.13.0")
    assert items["amaranth"]["version"].startswith("0.5.")
    assert items["verilator"]["version"].startswith("Verilator 5.")
    assert items["fashion-mnist"]["version"] == str(doctor.DATASET_DIR)
    assert all(it["ok"] for it in report["items"] if it["required"])


def test_missing_simulator_names_it_and_its_install_command(tmp_path: Path) -> None:
    out = run_script("doctor", env={"PATH": path_without(tmp_path, "verilator")})
    assert out.returncode == 1
    missing = [ln for ln in out.stdout.splitlines() if ln.startswith("missing:")]
    assert missing == ["missing: verilator (not on PATH); install with: apt-get install verilator"]


def test_diagnose_reports_exactly_the_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without(tmp_path, "iverilog", "yosys", "nextpnr-ice40"))
    report = doctor.diagnose()
    assert not report["ok"]
    # nextpnr-ice40 is optional: reported absent in the items, but not missing
    assert {m["name"]: m["install"] for m in report["missing"]} == {
        "iverilog": "apt-get install iverilog", "yosys": "apt-get install yosys"}
    nextpnr = next(it for it in report["items"] if it["name"] == "nextpnr-ice40")
    assert nextpnr["ok"] is False and nextpnr["required"] is False


def test_optional_tool_alone_does_not_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without(tmp_path, "nextpnr-ice40", "icepack"))
    assert doctor.run(argparse.Namespace(json=False)) == 0


def test_missing_dataset_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(doctor, "DATASET_DIR", tmp_path)
    for name in doctor.DATASET_FILES[:-1]:  # one file short
        (tmp_path / name).write_bytes(b"")
    assert cli.main(["doctor"]) == 1
    text = capsys.readouterr().out
    assert f"missing {doctor.DATASET_FILES[-1]} in {tmp_path}" in text
    assert "install with: apt-get install dataset-fashion-mnist" in text
    (tmp_path / doctor.DATASET_FILES[-1]).write_bytes(b"")
    assert cli.main(["doctor"]) == 0


def test_missing_or_wrong_python_package_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(doctor, "PY_PACKAGES", doctor.PY_PACKAGES + [("no-such-dist-sparsetrain", "pip install x")])
    monkeypatch.setattr(doctor, "PINS", {**doctor.PINS, "numpy": "0.1"})
    assert cli.main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    missing = {m["name"]: m for m in report["missing"]}
    assert set(missing) == {"no-such-dist-sparsetrain", "numpy"}
    assert missing["no-such-dist-sparsetrain"]["why"] == "not installed"
    assert "0.1 required" in missing["numpy"]["why"] and missing["numpy"]["install"].startswith("make setup")
