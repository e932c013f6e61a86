"""benchmarks/bench_area_gen2.py (area before/after the second generation): a block that lacks a
parameter of either configuration is an error naming block and parameter, raised before any
synthesis; the table and the speedup per area from saved results (no Yosys here: the synthesis
itself is the benchmark's job, docs/area.md)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_area_gen2", ROOT / "benchmarks" / "bench_area_gen2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_pe_has_both_configurations(bench):
    bench.check_params(["pe"])     # PREFETCH / LOOKAHEAD exist on the PE


def test_a_missing_parameter_is_an_error_naming_it(bench, monkeypatch, capsys):
    monkeypatch.setitem(bench.CONFIGS, "pe", {"first": {"PREFETCH": 0}, "built": {"PREFETCH": 1, "NO_SUCH": 1}})
    with pytest.raises(ValueError, match="block pe has no parameter NO_SUCH"):
        bench.check_params(["pe"])
    assert bench.main(["--blocks", "pe", "--no-perf"]) == 2      # the command: one line, nothing synthesised
    assert "block pe has no parameter NO_SUCH" in capsys.readouterr().err
    with pytest.raises(ValueError, match="blocks = 'nope'"):
        bench.check_params(["nope"])


def test_out_of_range_value_is_refused(bench, monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "pe", {"first": {"PREFETCH": 0}, "built": {"LOOKAHEAD": 9}})
    with pytest.raises(ValueError, match="lookahead|LOOKAHEAD"):
        bench.check_params(["pe"])


def test_table_and_speedup_per_area_from_saved_results(bench, tmp_path, capsys):
    rows = [{"block": "pe", "first": {"nand2_eq": 100.0, "flip_flops": 10}, "built": {"nand2_eq": 125.0, "flip_flops": 12},
             "ratio": 1.25}]
    area = tmp_path / "area.json"
    area.write_text(json.dumps({"perf": None, "rows": rows}))
    perf = tmp_path / "perf.json"
    perf.write_text(json.dumps({"designs": {"first": "gen1", "built": "X"}, "first_avg": 2.0, "built_avg": 3.0,
                                "pairs": [{"first": {"cycles": 300.0}, "built": {"cycles": 100.0}}]}))
    assert bench.main(["--from-json", str(area), "--perf-json", str(perf)]) == 0
    out = capsys.readouterr().out
    # speedup ratio 1.5 over area 1.25 = 1.20; cycles gain 3.0 over 1.25 = 2.40
    assert "| pe | 100 | 125 | 1.250 | 10 / 12 | 1.20x | 2.40x |" in out
