"""The installed distribution exposes one top-level name, `sparsetrain`, and its console script.

The checks run in a subprocess whose working directory is outside the repository, so that
the repository folders (hw/, golden/, ...) are not importable through the current directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPED_FOLDERS = ("hw", "golden", "sim_tb", "synth")
BIN = Path(sys.executable).parent


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


INSPECT = """
import json, importlib.metadata as m
d = m.distribution("sparsetrain")
files = [str(f) for f in (d.files or [])]
finder = next((f for f in files if f.startswith("__editable__") and f.endswith("_finder.py")), None)
mapping = None
if finder:
    mod = __import__(finder[:-3])
    mapping = dict(mod.MAPPING)
print(json.dumps({"files": files, "top_level": (d.read_text("top_level.txt") or "").split(),
                  "mapping": mapping, "version": d.version,
                  "scripts": [(e.name, e.value) for e in d.entry_points if e.group == "console_scripts"]}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = run_python(INSPECT, tmp_path_factory.mktemp("outside"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_distribution_installs_only_the_sparsetrain_name(installed: dict) -> None:
    assert installed["top_level"] == ["sparsetrain"]
    tops = set()
    for f in installed["files"]:
        first = f.split("/")[0]
        if first == ".." or first.endswith(".dist-info"):
            continue  # scripts in bin/, and the metadata folder
        if first == "__pycache__" or first.startswith("__editable__"):
            assert "__editable___sparsetrain" in f or f.startswith("__editable__.sparsetrain"), f
            continue
        tops.add(first.removesuffix(".py"))
    assert tops <= {"sparsetrain"}, tops
    for name in MAPPED_FOLDERS:
        assert not any(f.split("/")[0] == name for f in installed["files"]), name


def test_editable_mapping_lives_under_sparsetrain(installed: dict) -> None:
    if installed["mapping"] is None:  # a regular (non-editable) install: the files say it all
        assert any(f.startswith("sparsetrain/golden/") for f in installed["files"])
        return
    mapping = installed["mapping"]
    assert all(k == "sparsetrain" or k.startswith("sparsetrain.") for k in mapping), mapping
    for folder in MAPPED_FOLDERS:
        assert Path(mapping[f"sparsetrain.{folder}"]).resolve() == (REPO / folder).resolve()


@pytest.mark.parametrize("name", MAPPED_FOLDERS)
def test_generic_names_are_not_importable_outside_the_repo(name: str, tmp_path: Path) -> None:
    out = run_python(f"import {name}", tmp_path)
    assert out.returncode != 0 and f"No module named '{name}'" in out.stderr, out.stderr
    out = run_python(f"import sparsetrain.{name} as m; print(m.__file__)", tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().parent == (REPO / name).resolve()


def test_pyproject_maps_every_folder_into_the_namespace() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in MAPPED_FOLDERS:
        assert cfg["package-dir"][f"sparsetrain.{folder}"] == folder
        assert f"sparsetrain.{folder}" in cfg["packages"]
    assert all(p == "sparsetrain" or p.startswith("sparsetrain.") for p in cfg["packages"])


def test_console_script_exists_and_runs(installed: dict) -> None:
    assert ("sparsetrain", "sparsetrain.cli:main") in [tuple(s) for s in installed["scripts"]]
    script = BIN / "sparsetrain"
    assert script.is_file() and os.access(script, os.X_OK)
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"sparsetrain {installed['version']}"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "doctor" in out.stdout
