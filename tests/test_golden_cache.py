"""The training-run cache of tests/conftest.py is keyed on every source training can run: a change
to any file under the keyed folders gives a new key, and training imports nothing outside them."""
from __future__ import annotations

import ast
import importlib.util
import shutil
from pathlib import Path

import pytest

from conftest import REPO, TRAINING_SOURCES, _cache_key, small_run_config, training_sources

TRAINING_ENTRY = "sparsetrain.golden.training.train"


def _imports(module: str) -> set[str]:
    """The sparsetrain modules ``module`` imports anywhere in its text (also inside functions:
    the lazy imports of sparse_backward and plots run during training too)."""
    spec = importlib.util.find_spec(module)
    if not spec.has_location:  # a namespace package: no text of its own
        return set()
    tree = ast.parse(Path(spec.origin).read_text())
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sparsetrain")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            elif (node.module or "").startswith("sparsetrain"):
                base = node.module
            else:
                continue
            out.add(base)
            for a in node.names:  # `from . import sparse_backward` names a module
                if importlib.util.find_spec(base).submodule_search_locations is not None \
                        and importlib.util.find_spec(f"{base}.{a.name}") is not None:
                    out.add(f"{base}.{a.name}")
    return out


def training_closure() -> set[Path]:
    seen, todo = set(), [TRAINING_ENTRY]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += sorted(_imports(mod))
    specs = [importlib.util.find_spec(m) for m in seen]
    return {Path(spec.origin).resolve() for spec in specs if spec.has_location}


def test_training_imports_only_keyed_sources():
    keyed = {p.resolve() for p in training_sources()}
    closure = training_closure()
    names = {p.name for p in closure}
    assert {"train.py", "campfire.py", "sparse_backward.py", "pruning.py"} <= names  # the walk works
    outside = sorted(str(p.relative_to(REPO)) for p in closure - keyed)
    assert not outside, f"training uses {outside}, which the cache key leaves out (TRAINING_SOURCES)"
    assert any(p.suffix == ".cpp" for p in keyed)  # the C++ sparse backward is keyed too


@pytest.mark.parametrize("name", ["campfire.py", "sparse_backward.py", "sparse_conv_generic.cpp", "rowops.py",
                                  "fixedpoint.py", "outdir.py"])
def test_any_change_in_the_keyed_sources_changes_the_key(tmp_path, name):
    for rel in TRAINING_SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_file():
            shutil.copy2(REPO / rel, tmp_path / rel)
        else:
            shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = {"model": "alexnet", "steps": 1}
    before = _cache_key(cfg, tmp_path)
    assert before == _cache_key(cfg, tmp_path)  # deterministic
    target = next(p for p in training_sources(tmp_path) if p.name == name)
    target.write_bytes(target.read_bytes() + b"\n// changed\n")
    assert _cache_key(cfg, tmp_path) != before


def test_the_key_covers_the_run_parameters():
    from dataclasses import asdict, replace

    cfg = small_run_config()
    assert _cache_key(asdict(cfg)) != _cache_key(asdict(replace(cfg, p=0.8)))
