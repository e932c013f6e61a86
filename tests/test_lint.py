"""hw/lint.py: the PE's Verilog passes -Wall with the documented waivers; anything else fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparsetrain.hw.blocks import write_block
from sparsetrain.hw.lint import WAIVERS, lint_file, main

DOC = Path(__file__).resolve().parents[1] / "docs" / "verification.md"


@pytest.mark.parametrize("params", [[], ["K_MAX=1", "W_MAX=2"], ["DW=4", "K_MAX=16", "W_MAX=256"]],
                         ids=["default", "k1", "k16"])
def test_pe_verilog_is_lint_clean(tmp_path, params):
    vpath, _ = write_block("pe", params, tmp_path)
    res = lint_file(vpath)
    assert res.ok, res.failures
    assert set(res.waived) <= set(WAIVERS)


def test_unwaived_warning_fails(tmp_path, capsys):
    bad = tmp_path / "bad.v"
    # a latch and a blocking assignment in a clocked block: never waived
    bad.write_text("module bad(input clk, input en, input d, output reg q, output reg l);\n"
                   "always @(posedge clk) q = d;\nalways @* if (en) l = d;\nendmodule\n")
    res = lint_file(bad)
    assert not res.ok and any("LATCH" in f or "BLKSEQ" in f for f in res.failures)
    assert main([str(tmp_path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_waiver_is_documented():
    text = DOC.read_text()
    for rule in WAIVERS:
        assert f"`{rule}`" in text, rule
