"""`sparsetrain demo`: a reduced demo run on the cached small training run (training itself is the
golden model's, tested there; the full demo is `make demo`), its report, and the --out rules."""
from __future__ import annotations

import json

import pytest

from sparsetrain.cli import main
from sparsetrain.demo import DEMO_LAYER, check_out_dir, run_demo, train_config


def test_reduced_demo_on_the_small_training_run(small_golden_run, tmp_path, capsys):
    out = tmp_path / "demo"
    # Reduced: the cached training run, one sample, and the GTW step only (tests/test_check.py runs
    # all three steps of the same layer); `make demo` runs the whole demo.
    result = run_demo(out, samples=1, train_dir=small_golden_run, run_steps=("gtw",))
    printed = capsys.readouterr().out
    assert result.ok
    assert [r.step for r in result.reports] == ["gtw"]
    assert all(r.bit_exact and r.within_bound and r.layer == DEMO_LAYER for r in result.reports)
    # The short report: accuracy and density from training, agreement, cycles vs dense, where the files are.
    acc = result.metrics["summary"]["test_acc"]
    assert f"test accuracy {acc:.2f}%" in printed and "gradient density" in printed
    assert printed.count("bit-exact") >= 2 and "dense" in printed and str(out / "report.md") in printed
    report = json.loads((out / "report.json").read_text())
    assert [r["step"] for r in report] == ["gtw"] and all(r["ok"] for r in report)
    assert all(r["rtl_cycles"] > 0 and r["dense_cycles"] >= r["schedule_cycles"] for r in report)
    # utilisation (architecture 12.7): useful PE-cycles are some, and fewer than the busy ones
    assert all(0.0 < r["useful_utilisation"] < r["busy_utilisation"] <= 1.0 for r in report)
    assert "useful" in printed
    md = (out / "report.md").read_text()
    assert "PASS" in md and "| gtw |" in md and ".png" in md
    assert "module core" in (out / "core.v").read_text()


def test_out_dir_must_be_new_or_empty_unless_forced(tmp_path):
    d = tmp_path / "o"
    assert check_out_dir(d, force=False) == d and d.is_dir()     # new: created (and marked)
    assert check_out_dir(d, force=False) == d                    # the tool's, nothing written yet: fine
    u = tmp_path / "u"
    u.mkdir()
    (u / "keep.txt").write_text("x")
    for force in (False, True):                                  # a user's folder: refused, --force included
        with pytest.raises(ValueError, match=r"keep.txt.*--force included"):
            check_out_dir(u, force=force)
    assert (u / "keep.txt").exists()                             # refused: nothing touched
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_out_dir(f, force=True)


def test_cli_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "x").write_text("x")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_demo_training_is_a_short_pruned_run_exporting_its_layer():
    cfg = train_config(steps=50)
    assert cfg.prune and cfg.max_steps == 50 and cfg.dump_layers == [DEMO_LAYER] and cfg.dump_steps == [49]
    assert cfg.train_samples == 50 * cfg.batch_size  # one pass, no more data than the steps use
    with pytest.raises(ValueError, match="steps = 1 is out of range"):
        train_config(steps=1)


def test_demo_shows_the_bias_gradient_and_the_threshold_of_a_gta_report():
    from types import SimpleNamespace

    from sparsetrain.demo import function_lines
    db = dict(channels=24, units=34, programs=1, rtl_cycles=100, model_cycles=100, bit_exact=True, max_error=1e-6,
              bound=1e-4, within=True, ok=True)
    th = dict(fifo=[1, 2, 3, 4], groups_equal=True, restored_ok=True, restored_max_error_lsb=0.3, end_batch=True,
              tau_batch=4, tau_hw=0.001, tau_batch_float=0.001, error_lsb=0.1, bound_lsb=30.0, within=True,
              c_m=40000, c_shift=26, n=100, ok=True)
    lines = function_lines(SimpleNamespace(db=db, threshold=th))
    assert len(lines) == 2 and "bias gradient db (24 channels" in lines[0] and lines[0].endswith("OK")
    assert "tau_batch 4 LSB" in lines[1] and lines[1].endswith("OK")
    assert function_lines(SimpleNamespace(db={}, threshold={})) == []
    assert function_lines(SimpleNamespace(db={**db, "ok": False}, threshold={}))[0].endswith("FAIL")
