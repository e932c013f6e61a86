"""Synthesis flows (synth/): generic Yosys area estimate, iCE40 build, block table, sweep, CLI.

Expected numbers come from the definitions (the unit-area table, a register's width, the
architecture's register files), never from a previous run of the flow.
"""
from __future__ import annotations

import json
import math

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsetrain.cli import main as cli_main
from sparsetrain.synth import table
from sparsetrain.synth.flows import synth_block
from sparsetrain.synth.generic import parse_transistors, synth_generic
from sparsetrain.synth.ice40 import UP5K, fit_problems, synth_ice40
from sparsetrain.synth.io_wrapper import xor_tree_nodes
from sparsetrain.synth.sweep import run_sweep
from sparsetrain.synth.unit_area import estimate_area, is_flip_flop, load_table

# Smallest PE the registry accepts comfortably: keeps Yosys to a few seconds.
SMALL_PE = {"DW": 4, "K_MAX": 3, "W_MAX": 8}


@pytest.fixture(scope="module")
def pe_table(tmp_path_factory):
    """One generic-flow run of the small PE through the `make synth` table path."""
    out = tmp_path_factory.mktemp("synth")
    rows = table.run_all(out, flows=["generic"], block_names=["pe"], params={"pe": SMALL_PE})
    return out, rows


# --- unit areas -------------------------------------------------------------------------

def test_unit_area_table_prices_reference_cell_at_one_nand2():
    table_ = load_table()
    assert estimate_area({"$_NAND_": 7}).nand2_eq == pytest.approx(7.0)
    dff = estimate_area({"$_DFF_P_": 3})
    assert dff.nand2_eq == pytest.approx(3 * table_.library_um2["DFF_X1"] / table_.library_um2["NAND2_X1"])
    assert dff.combinational_nand2_eq == 0 and dff.sequential_nand2_eq == pytest.approx(dff.nand2_eq)
    # An enable flip-flop is a flip-flop plus a 2:1 mux, so it costs more than a plain one.
    assert table_.um2("$_DFFE_PP_") > table_.um2("$_DFF_P_")
    assert table_.um2("$_SDFFE_PP0P_") > table_.um2("$_DFFE_PP_")


def test_unit_area_rejects_unknown_cell_type():
    with pytest.raises(ValueError, match=r"cell type = '\$_FANCY_' is out of range; allowed: .*\$_NAND_"):
        estimate_area({"$_FANCY_": 1})


def test_flip_flop_classification():
    for name in ("$_DFF_P_", "$_DFFE_PN_", "$_SDFF_PP0_", "$_SDFFCE_PP1P_", "$_DFFSR_PPP_", "$_ALDFF_PP_"):
        assert is_flip_flop(name), name
    for name in ("$_MUX_", "$_DLATCH_P_", "$_AND_"):
        assert not is_flip_flop(name), name


def test_transistor_estimate_parsing():
    assert parse_transistors("6174") == (6174, True)
    assert parse_transistors("120+") == (120, False)


# --- generic flow on hand-written Verilog with known contents --------------------------

REGISTER_AND_MEMORY = """
module regmem(input clk, input [7:0] d, input [1:0] wa, input [1:0] ra, input we, output [7:0] q, output [7:0] m);
  reg [7:0] r;
  reg [7:0] mem [0:3];
  always @(posedge clk) begin
    r <= d;
    if (we) mem[wa] <= d;
  end
  assign q = r;
  assign m = mem[ra];
endmodule
"""


def test_generic_flow_counts_registers_and_memory_bits(tmp_path):
    report = synth_generic(REGISTER_AND_MEMORY, "regmem", workdir=tmp_path)
    assert report["memories"] == 1 and report["memory_bits"] == 4 * 8
    # 8 register bits plus the 32 memory bits, which the generic flow maps to flip-flops
    assert report["flip_flops"] == 8 + 32
    assert report["cells"] == sum(report["cells_by_type"].values())
    assert report["nand2_eq"] == pytest.approx(report["nand2_eq_combinational"] + report["nand2_eq_sequential"], abs=0.2)
    table_ = load_table()
    assert report["nand2_eq"] == pytest.approx(report["area_um2"] / table_.reference_um2, rel=1e-3)
    # every flip-flop costs at least one DFF_X1
    assert report["nand2_eq_sequential"] >= 40 * table_.library_um2["DFF_X1"] / table_.reference_um2 - 0.1
    # a CMOS flip-flop needs well over 10 transistors
    assert report["cmos_transistors"] > 10 * 40 and report["cmos_transistors_exact"]
    assert (tmp_path / "regmem.generic.log").is_file()


DEEP_AND_SHALLOW = """
module deep(input clk, input [7:0] d, input [8:0] wa, input [8:0] ra, input [1:0] sa, input we,
            output reg [7:0] m, output [7:0] s);
  reg [7:0] big [0:511];
  reg [7:0] small [0:3];
  always @(posedge clk) begin
    if (we) big[wa] <= d;
    if (we) small[sa] <= d;
    m <= big[ra];
  end
  assign s = small[sa];
endmodule
"""


def test_deep_memory_is_an_sram_macro_and_shallow_one_flip_flops(tmp_path):
    report = synth_generic(DEEP_AND_SHALLOW, "deep", workdir=tmp_path, macro_depth=256)
    assert report["memory_bits"] == 512 * 8 + 4 * 8
    assert [(m["name"], m["width"], m["depth"], m["bits"]) for m in report["sram_macros"]] == [("big", 8, 512, 4096)]
    assert report["sram_bits"] == 4096
    assert report["flip_flops"] == 4 * 8  # only the register file; the macro is not logic
    assert not report["cmos_transistors_exact"]  # Yosys has no transistor count for a macro
    # with the threshold above both depths, both memories are flip-flops
    flat = synth_generic(DEEP_AND_SHALLOW, "deep", macro_depth=1024)
    assert flat["sram_macros"] == [] and flat["flip_flops"] >= 512 * 8 + 4 * 8


HIERARCHY = """
module leaf(input clk, input [8:0] a, input [7:0] d, input we, output reg [7:0] q, output reg [7:0] r);
  reg [7:0] big [0:511];
  always @(posedge clk) begin
    if (we) big[a] <= d;
    q <= big[a];
    r <= d + a[7:0];
  end
endmodule
module mid(input clk, input [8:0] a, input [7:0] d, input we, output [7:0] q);
  wire [7:0] q0, q1, r0, r1;
  leaf l0(clk, a, d, we, q0, r0);
  leaf l1(clk, ~a, d, we, q1, r1);
  assign q = q0 ^ q1 ^ r0 ^ r1;
endmodule
module hier(input clk, input [8:0] a, input [7:0] d, input we, output reg [7:0] q);
  wire [7:0] q0, q1, q2;
  mid m0(clk, a, d, we, q0);
  mid m1(clk, a, ~d, we, q1);
  leaf l(clk, a, d, we, q2, );
  always @(posedge clk) q <= q0 + q1 + q2;
endmodule
"""


def test_keep_hierarchy_adds_up_instances_and_splits_own_logic(tmp_path):
    """5 leaf instances (2 per mid, 2 mids, 1 direct), each a 512 x 8 macro (whose read
    register ``q`` becomes the macro's synchronous read port) and the 8 flip-flops of ``r``;
    the top has 8 more; ``mid`` has none of its own."""
    hier = synth_generic(HIERARCHY, "hier", workdir=tmp_path / "h", keep_hierarchy=True)
    rows = {r["module"]: r for r in hier["hierarchy"]}
    assert {name: r["instances"] for name, r in rows.items()} == {"hier": 1, "mid": 2, "leaf": 5}
    assert hier["sram_bits"] == 5 * 512 * 8 and hier["memory_bits"] == 5 * 512 * 8
    assert [(m["module"], m["instances"]) for m in hier["sram_macros"]] == [("leaf", 5)]
    assert rows["leaf"]["flip_flops"] == 8 and rows["hier"]["flip_flops"] == 8 and rows["mid"]["flip_flops"] == 0
    # The design total is every module's own logic times its instances.
    assert hier["flip_flops"] == sum(r["flip_flops"] * r["instances"] for r in rows.values()) == 5 * 8 + 8
    assert hier["nand2_eq"] == pytest.approx(sum(r["nand2_eq"] * r["instances"] for r in rows.values()), abs=1)
    # A flat run sees the same macros; it can only remove flip-flops (an unused output register
    # of the directly instantiated leaf), never add any. (Its gate count is abc's business.)
    flat = synth_generic(HIERARCHY, "hier", workdir=tmp_path / "f")
    assert "hierarchy" not in flat and flat["sram_bits"] == hier["sram_bits"]
    assert flat["flip_flops"] <= hier["flip_flops"]


SMALL_CORE = {"DW": 4, "K_MAX": 3, "W_MAX": 8, "G": 1, "BUF_DEPTH": 256, "MASK_DEPTH": 16,
              "IMEM_DEPTH": 256, "DIR_DEPTH": 16, "N_SLOTS": 1, "N_F": 1}


def test_core_is_synthesised_by_module_with_its_controller_apart(tmp_path):
    """The core keeps its hierarchy by default: one group (3 PEs, the dispatcher with their fetch engines, PPU with
    its threshold FIFOs) and the top module, whose own logic is the controller and host
    interface; the two 256-word memories are macros, the two 16-word ones register files
    (flip-flops of the top)."""
    from sparsetrain.hw.core import params_from_values
    from sparsetrain.arch.isa import DIR_W, INSTR_W

    report = synth_block("core", SMALL_CORE, workdir=tmp_path)
    assert report["keep_hierarchy"]
    rows = {r["module"]: r for r in report["hierarchy"]}
    # the op dispatcher (hw/dispatch.py) holds each PE's operand fetch engines and mask engine
    assert set(rows) == {"core", "core.group0", "core.group0.ppu", "core.group0.ppu.fifos",
                         "core.group0.dispatch"} | {f"core.group0.pe{i}" for i in range(3)} | \
        {f"core.group0.dispatch.pe{i}{part}" for i in range(3) for part in ("_p1", "_p2", "_mask")}
    assert all(r["instances"] == 1 for r in rows.values())
    p = params_from_values({"ACC_W": None, **SMALL_CORE})
    # + the group's bias-gradient bank (architecture 11.6): DB_DEPTH (64) words of G_W, a register file
    assert report["memory_bits"] == (256 * p.entry_w + 16 * p.w_max + 256 * INSTR_W + 16 * DIR_W
                                     + p.groups * p.db_depth * p.ppu_config().g_w)
    assert sorted((m["name"], m["bits"]) for m in report["sram_macros"]) == \
        sorted([("buf", 256 * p.entry_w), ("imem", 256 * INSTR_W)])
    # the register-file memories are the top's: at least their bits are its flip-flops
    assert rows["core"]["flip_flops"] >= 16 * p.w_max + 16 * DIR_W
    assert all(rows[f"core.group0.pe{i}"]["nand2_eq"] == pytest.approx(rows["core.group0.pe0"]["nand2_eq"], rel=0.01)
               for i in range(3))
    assert report["nand2_eq"] == pytest.approx(sum(r["nand2_eq"] for r in rows.values()), abs=1)


def test_generic_flow_rejects_bad_top():
    with pytest.raises(ValueError, match="top = 'no-such top' is out of range"):
        synth_generic(REGISTER_AND_MEMORY, "no-such top")


# --- the PE through the generic flow -------------------------------------------------

def test_pe_generic_report_parses_with_cells_and_flip_flops(pe_table):
    out, rows = pe_table
    assert len(rows) == 1 and "error" not in rows[0], rows
    report = json.loads((out / "pe.generic.json").read_text())
    assert report["block"] == "pe" and report["flow"] == "generic"
    assert {k: report["params"][k] for k in SMALL_PE} == SMALL_PE
    assert report["cells"] > 0 and report["flip_flops"] > 0 and report["nand2_eq"] > 0
    assert report["cells"] == sum(report["cells_by_type"].values())
    # Reg-1 (K_MAX values of DW bits) and Reg-2 (K_MAX accumulators of ACC_W bits) are registers
    p = report["params"]
    assert report["flip_flops"] >= p["K_MAX"] * (p["DW"] + p["ACC_W"])
    assert report["cmos_transistors"] > report["cells"]


def test_make_synth_table_lists_every_run(pe_table):
    out, rows = pe_table
    md = (out / "summary.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| pe |"))
    assert "DW=4" in line and f"{rows[0]['flip_flops']:,}" in line
    assert json.loads((out / "summary.json").read_text()) == rows


def test_bad_block_name_lists_registered_blocks():
    with pytest.raises(ValueError, match=r"block = 'nope' is unknown; allowed: .*pe"):
        synth_block("nope")


def test_bad_parameter_name_lists_allowed_parameters():
    with pytest.raises(ValueError, match=r"param = 'WIDTH' is unknown for block pe; allowed: .*DW.*K_MAX"):
        synth_block("pe", {"WIDTH": "8"})


def test_bad_parameter_value_gives_range():
    with pytest.raises(ValueError, match=r"DW = 99 is out of range; allowed: 4 \.\. \d+"):
        synth_block("pe", ["DW=99"])


def test_bad_flow_and_tool_choice():
    with pytest.raises(ValueError, match=r"flow = 'asic' is out of range; allowed: generic, ice40"):
        synth_block("pe", SMALL_PE, flow="asic")
    with pytest.raises(ValueError, match=r"yosys = 'vendor' is out of range; allowed: debian, yowasp"):
        synth_block("pe", SMALL_PE, yosys="vendor")


def test_cli_errors_are_one_clear_line(capsys):
    assert cli_main(["synth", "--block", "nope"]) == 2
    err = capsys.readouterr().err
    assert "block = 'nope' is unknown; allowed:" in err and "Traceback" not in err
    assert cli_main(["synth", "--block", "pe", "--param", "FOO=1"]) == 2
    assert "allowed: DW, K_MAX" in capsys.readouterr().err
    assert cli_main(["synth", "--all"]) == 2
    assert "--out DIR" in capsys.readouterr().err


# --- iCE40 flow -----------------------------------------------------------------------

class MacArray(wiring.Component):
    """``n`` registered signed multiply-accumulates of ``width``-bit operands."""

    def __init__(self, n: int, width: int) -> None:
        self.n, self.width = n, width
        super().__init__({"a": In(unsigned(width * n)), "b": In(unsigned(width * n)),
                          "y": Out(unsigned((2 * width + 4) * n))})

    def elaborate(self, platform) -> Module:
        m = Module()
        w, acc_w = self.width, 2 * self.width + 4
        for i in range(self.n):
            acc = Signal(signed(acc_w), name=f"acc{i}")
            a, b = self.a[i * w:(i + 1) * w].as_signed(), self.b[i * w:(i + 1) * w].as_signed()
            m.d.sync += acc.eq(acc + a * b)
            m.d.comb += self.y[i * acc_w:(i + 1) * acc_w].eq(acc)
        return m


def test_xor_tree_levels():
    assert xor_tree_nodes(22) == [6, 2, 1]
    assert xor_tree_nodes(4) == [1]
    assert xor_tree_nodes(1) == []
    assert sum(xor_tree_nodes(1000)) == math.ceil(1000 / 4) + math.ceil(250 / 4) + math.ceil(63 / 4) + math.ceil(16 / 4) + 1


def test_ice40_small_block_fits_and_reports_fmax(tmp_path):
    block = MacArray(2, 8)
    wrapper_ffs = 2 * 2 * 8 + sum(xor_tree_nodes(2 * 20))  # shift chain + XOR-tree registers
    report = synth_ice40(block, workdir=tmp_path)
    assert report["fits"] is True and report["device"] == "iCE40UP5K"
    assert report["wrapper"]["input_bits"] == 2 * 2 * 8 and report["wrapper"]["output_bits"] == 2 * 20
    assert report["wrapper"]["flip_flops"] == wrapper_ffs
    # (the accumulators may live in the SB_MAC16s' own registers, so only the wrapper's are certain)
    assert report["flip_flops"] >= wrapper_ffs
    assert report["dsps"] == 2  # synth_ice40 -dsp puts each 8x8 multiply on an SB_MAC16
    assert report["luts"] > 0 and report["fmax_mhz"] > 0
    assert report["utilization"]["ICESTORM_LC"]["available"] == UP5K.luts
    assert report["utilization"]["ICESTORM_DSP"]["used"] == 2
    assert report["bitstream_bytes"] > 0 and (tmp_path / "top.bin").is_file()


def test_ice40_too_large_block_is_reported_not_skipped(tmp_path):
    report = synth_ice40(MacArray(UP5K.dsps + 1, 8), workdir=tmp_path)
    assert report["fits"] is False
    assert f"needs {UP5K.dsps + 1} DSPs (SB_MAC16), part has {UP5K.dsps}" in report["does_not_fit"]
    assert not (tmp_path / "top.asc").exists()  # place-and-route was not attempted


class BigMemory(wiring.Component):
    """One ``depth`` x ``width`` memory with a write and a registered read port."""

    def __init__(self, depth: int, width: int) -> None:
        self.depth, self.width = depth, width
        aw = (depth - 1).bit_length()
        super().__init__({"addr": In(aw), "wdata": In(width), "we": In(1), "rdata": Out(width)})

    def elaborate(self, platform) -> Module:
        from amaranth.lib.memory import Memory

        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.wdata), wp.en.eq(self.we),
                     rp.addr.eq(self.addr), self.rdata.eq(rp.data)]
        return m


def test_ice40_memory_larger_than_the_part_is_refused_before_synthesis(tmp_path):
    depth, width = 1 << 16, 32  # 2 Mbit against the UP5K's 1.1 Mbit of RAM
    report = synth_ice40(BigMemory(depth, width), workdir=tmp_path)
    assert report["fits"] is False and report["memory_bits"] == depth * width
    assert f"needs {depth * width} memory bits, part has {UP5K.storage_bits}" in report["does_not_fit"]
    assert UP5K.storage_bits == 30 * 4096 + 4 * 262144 + 5280
    assert "luts" not in report  # synth_ice40 was not run


def test_fit_problems_names_every_short_resource():
    used = {"luts": 6000, "flip_flops": 10, "dsps": 9, "brams": 0, "sprams": 0}
    assert fit_problems(used, UP5K) == ["needs 6000 LUTs, part has 5280", "needs 9 DSPs (SB_MAC16), part has 8"]


# --- sweep ------------------------------------------------------------------------------

def test_pe_area_grows_with_data_width(tmp_path):
    result = run_sweep(tmp_path, ["pe"], {"DW": (4, 6)}, base={"K_MAX": 2, "W_MAX": 8})
    pts = sorted((p["value"], p["nand2_eq"], p["flip_flops"]) for p in result["points"])
    assert [p[0] for p in pts] == [4, 6]
    assert pts[1][1] > pts[0][1] and pts[1][2] > pts[0][2]
    assert (tmp_path / "area-sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "sweep.json").read_text())["points"] == result["points"]
    rows = [ln for ln in (tmp_path / "sweep.md").read_text().splitlines() if ln.startswith("| pe | DW |")]
    assert [ln.split("|")[3].strip() for ln in rows] == ["4", "6"]
