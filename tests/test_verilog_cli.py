"""`sparsetrain verilog`: writes <block>.v and <block>.json, rejects bad parameters clearly."""
from __future__ import annotations

import json
import re

from sparsetrain.arch.fixedpoint import PARAM_RANGES
from sparsetrain.cli import main


def test_verilog_writes_pe_and_parameters(tmp_path, capsys):
    rc = main(["verilog", "--block", "pe", "--param", "DW=8", "--param", "K_MAX=3", "-o", str(tmp_path)])
    assert rc == 0
    meta = json.loads((tmp_path / "pe.json").read_text())
    assert meta["block"] == "pe" and meta["toplevel"] == "pe"
    assert meta["params"] == {"DW": 8, "K_MAX": 3, "W_MAX": 64, "ACC_W": 24, "PREFETCH": 0, "LOOKAHEAD": 1,
                              "OSRC_WINDOW": 1}
    text = (tmp_path / "pe.v").read_text()
    assert re.search(r"^module pe\(", text, re.M)
    # the stream ports of docs/architecture.md section 4, flattened by Amaranth
    for port in ("cfg", "port1", "port2", "port3", "out"):
        for sig in ("valid", "ready", "payload"):
            assert f"{port}__{sig}" in text
    # payload widths follow the parameters: Entry = DW + OFF_W + 1 = 8 + 7 + 1
    assert re.search(r"input \[15:0\] port1__payload;", text)


def test_verilog_rejects_unknown_and_out_of_range_params(tmp_path, capsys):
    assert main(["verilog", "--block", "pe", "--param", "KMAX=3", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'KMAX' is unknown" in err and "allowed: DW, K_MAX, W_MAX, ACC_W" in err
    assert main(["verilog", "--block", "pe", "--param", "DW=40", "-o", str(tmp_path)]) == 2
    lo, hi = PARAM_RANGES["DW"]
    assert f"DW = 40 is out of range; allowed: {lo} .. {hi}" in capsys.readouterr().err
    assert main(["verilog", "--block", "nope", "-o", str(tmp_path)]) == 2
    assert "block = 'nope' is unknown" in capsys.readouterr().err
    assert not (tmp_path / "pe.v").exists()


def test_verilog_list_names_blocks_and_params(capsys):
    assert main(["verilog", "--list"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("pe: ") for line in out.splitlines())
    assert "K_MAX" in out and "W_MAX" in out
