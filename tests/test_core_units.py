"""F, the controller's unit rate (docs/architecture.md 12.9): unit blocks (``UNITS(count)``, the UNIT
words, then their OPs) handed out up to UNIT_RATE per cycle. The bit-accurate core model's cycle
rule by hand (dispatch cycle and group of every unit), invalid blocks ending in the model's error
code, and the core RTL in Amaranth's simulator (small cores with G = 3 and 4, no Verilator build of
their own) against the model: the cycle and group of every unit handed out, result rows bit for
bit, every group's PPU status, cycles and total_cycles; UNIT_RATE = 4 hands out several units in
one cycle where UNIT_RATE = 1 cannot. The Verilator builds run blocks too: tests/test_core.py (U = 1),
tests/test_core_pingpong.py (U = 2), the check tests (U = 4, SIM_PARAMS) and, under ``regress``,
G = 3 with U = 4 below."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow
from sparsetrain.arch.isa import CoreParams, ErrorCode, Opcode, decode, encode
from sparsetrain.arch.timing import Mode
from sparsetrain.compiler.emit import ProgramBuilder
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb.amaranth_host import load_and_start, read_result_row

SMALL = dict(buf_depth=1024, imem_depth=256, dir_depth=256, mask_depth=64, w_max=8, k_max=3)


def tiny_units(p: CoreParams, n: int, *, block: bool = True, n_ops: int = 0, after: int = 0):
    """``n`` units of one column each (``n_ops`` SRC ops of K = 1 on a one-entry row, or none) as one
    unit block (or bare), then ``after`` bare units, then END. Returns (program, image, dirs)."""
    b = ProgramBuilder(p)
    row = b.row(SparseRow.from_dense(np.array([3])))
    w = b.weights([2])
    if block:
        b.begin_block()
    dirs = [b.unit(1, [b.op(Mode.SRC, 1, 1, 1, row, w)] * n_ops, bias=1) for _ in range(n)]
    b.end_block()
    dirs += [b.unit(1, [b.op(Mode.SRC, 1, 1, 1, row, w)] * n_ops) for _ in range(after)]
    b.instr(Opcode.END)
    prog, img, _ = b.build()
    return prog, img, dirs


def test_unit_rate_is_a_core_parameter_validated_by_name():
    from sparsetrain.hw.blocks import get_block, parse_overrides
    spec = get_block("core")
    assert spec.params_from(parse_overrides(spec, ["UNIT_RATE=4"])).unit_rate == 4
    assert spec.params_from({}).unit_rate == 1
    for bad in ("UNIT_RATE=9", "UNIT_RATE=0"):
        with pytest.raises(ValueError, match=r"UNIT_RATE = \d is out of range; allowed: 1 .. 8"):
            spec.params_from(parse_overrides(spec, [bad]))
    from sparsetrain.check.simconfig import parse_switches, sim_params
    from sparsetrain.arch.microarch import BUILT
    # the check's core is the built set (its unit rate and E's window from arch.microarch.BUILT)
    assert parse_switches(["UNIT_RATE=1"]) == {"unit_rate": 1} and sim_params().unit_rate == BUILT.unit_rate
    assert parse_switches(["OSRC_WINDOW=1"]) == {"osrc_window": 1} and sim_params().osrc_window == BUILT.osrc_window
    assert sim_params().microarch() == BUILT


# ---------------------------------------------------------------- the model's cycle rule (12.9)

@pytest.mark.parametrize("rate,cycles", [
    (1, [1, 2, 3, 4, 6, 7, 8, 9]),
    (2, [1, 1, 2, 2, 6, 6, 7, 7]),
    (4, [1, 1, 1, 1, 6, 6, 6, 6]),
    (8, [1, 1, 1, 1, 6, 6, 6, 6])])
def test_block_hands_out_up_to_unit_rate_units_per_cycle(rate, cycles):
    """G = 4, a block of 8 units without ops (START(bias), FINISH of one column: 5 cycles): the
    header takes cycle 0; up to U units per cycle, the j-th to the j-th lowest free group."""
    p = CoreParams(groups=4, unit_rate=rate, **SMALL)
    prog, img, dirs = tiny_units(p, 8)
    run = run_program(prog, img, p)
    assert run.error == 0, run.error_message
    assert [u.dispatch for u in run.units] == cycles
    assert [u.group for u in run.units] == [0, 1, 2, 3] * 2
    assert all(run.row(d, 1, p).tolist() == [1] for d in dirs)
    assert run_program_fast(prog, img, p).units == run.units


def test_after_the_block_the_controller_goes_on_in_the_next_cycle():
    """The last block unit in cycle c: the word after the block's last OP is acted on from c + 1
    (a bare unit there goes to the next free group in c + 1); the block's OPs are not words the
    controller walks."""
    p = CoreParams(groups=4, unit_rate=4, **SMALL)
    prog, img, _ = tiny_units(p, 2, n_ops=2, after=1)
    run = run_program(prog, img, p)
    assert run.error == 0, run.error_message
    assert [(u.dispatch, u.group) for u in run.units] == [(1, 0), (1, 1), (2, 2)]


def test_a_group_never_takes_two_units_in_one_cycle():
    """PINGPONG: a group whose unit issues no op can take its next unit in the cycle after (its
    free_at is its take cycle), never in the same one, whatever the unit rate."""
    p = CoreParams(groups=1, unit_rate=4, pingpong=1, **SMALL)
    prog, img, _ = tiny_units(p, 6)
    run = run_program(prog, img, p)
    assert run.error == 0, run.error_message
    d = [u.dispatch for u in run.units]
    assert d[:2] == [1, 2] and all(b > a for a, b in zip(d, d[1:])), d
    assert run_program_fast(prog, img, p).units == run.units


def test_header_costs_one_cycle_and_rate_one_blocks_run_at_the_bare_rate():
    p = CoreParams(groups=4, unit_rate=1, **SMALL)
    bare, img, _ = tiny_units(p, 8, block=False)
    blk, img2, _ = tiny_units(p, 8)
    r_bare, r_blk = run_program(bare, img, p), run_program(blk, img2, p)
    assert [u.dispatch + 1 for u in r_bare.units] == [u.dispatch for u in r_blk.units]
    assert r_blk.total_cycles == r_bare.total_cycles + 1
    assert [u.group for u in r_bare.units] == [u.group for u in r_blk.units]


def test_unit_ops_are_read_from_the_block_op_pointer(rng):
    """Blocks and bare units of the same units give the same rows (every unit reads its own OPs)."""
    p = CoreParams(groups=3, unit_rate=4, buf_depth=2048, imem_depth=512, dir_depth=64, mask_depth=64,
                   w_max=16, k_max=5)
    seed = int(rng.integers(1 << 31))
    a, results = random_program(p, np.random.default_rng(seed), units_per_step=6, blocks=True)
    bare_rng = np.random.default_rng(seed)
    bare_rng.integers(1 << 62)   # the draw that seeds the block layout with blocks=True
    b, _ = random_program(p, bare_rng, units_per_step=6, blocks=False)
    pa, pb = a.build(), b.build()
    assert Opcode.UNITS in [decode(w)[0] for w in pa[0]] and Opcode.UNITS not in [decode(w)[0] for w in pb[0]]
    ra, rb = run_program(pa[0], pa[1], p, pa[2]), run_program(pb[0], pb[1], p, pb[2])
    assert ra.error == rb.error == 0
    for d, _ in results:
        # GTA rows are pruned by the PPU of their group: compare the unpruned steps only
        if ra.units[d].step != 1:
            assert ra.row_entries(d, p) == rb.row_entries(d, p), d


# ---------------------------------------------------------------- invalid blocks (11.3 codes)

BLOCK_CASES = [("blk_count0", ErrorCode.BAD_UNIT), ("blk_opcode", ErrorCode.BAD_OPCODE),
               ("blk_slot", ErrorCode.BAD_UNIT), ("blk_ops_past", ErrorCode.ADDRESS),
               ("blk_past", ErrorCode.ADDRESS), ("blk_k", ErrorCode.BAD_OP)]


def invalid_block(case: str, p: CoreParams) -> tuple[list[int], list[int]]:
    """A block of three valid units with one defect (shared with the RTL tests)."""
    b = ProgramBuilder(p)
    row = b.row(SparseRow.from_dense(np.arange(1, 9)))
    w = b.weights([1, 2, 3])
    if case == "blk_count0":
        b.words.append(encode(Opcode.UNITS, count=0))
        b.instr(Opcode.END)
        prog, img, _ = b.build()
        return prog, img
    if case == "blk_past":   # UNITS(2) in the last word: its UNIT words lie past IMEM_DEPTH
        b.words.extend([encode(Opcode.NOP)] * (p.imem_depth - 1))
        b.words.append(encode(Opcode.UNITS, count=2))
        prog, img, _ = b.build()
        return prog, img
    b.begin_block()
    for i in range(3):
        k = p.k_max + 1 if case == "blk_k" and i == 1 else 3
        b.unit(6, [b.op(Mode.SRC, k, 8, 6, row, w)] * 2, slot=p.n_slots if case == "blk_slot" and i == 2 else 0)
    b.instr(Opcode.END)
    prog, img, _ = b.build()
    h = next(i for i, x in enumerate(prog) if decode(x)[0] == Opcode.UNITS)
    if case == "blk_opcode":     # the second of the three words is not a UNIT
        prog[h + 2] = encode(Opcode.SYNC, step=1)
    elif case == "blk_ops_past":  # the third unit's OPs would run past IMEM_DEPTH
        _, f = decode(prog[h + 3])
        prog[h + 3] = encode(Opcode.UNIT, **{**f, "n_ops": p.imem_depth})
    return prog, img


@pytest.mark.parametrize("case,code", BLOCK_CASES)
def test_invalid_blocks_report_their_error(case, code):
    for rate in (1, 2, 4):
        p = CoreParams(groups=2, unit_rate=rate, **SMALL)
        prog, img = invalid_block(case, p)
        run = run_program(prog, img, p)
        assert run.error == code, (rate, run.error_message)
        assert run_program_fast(prog, img, p).error == code


def test_the_units_before_a_bad_block_word_are_handed_out():
    p = CoreParams(groups=4, unit_rate=4, **SMALL)
    prog, img = invalid_block("blk_slot", p)
    run = run_program(prog, img, p)
    assert run.error == ErrorCode.BAD_UNIT
    assert [(u.dispatch, u.group) for u in run.units] == [(1, 0), (1, 1)]


# ---------------------------------------------------------------- the RTL in Amaranth's simulator

def simulate_core(p: CoreParams, prog, img, masks=(), directory=(), dirs=(), max_cycles: int = 20000) -> dict:
    """Load and run one program on ``hw.core.Core`` in Amaranth's simulator through the host ports.
    Returns done / error / code / cycles / total, ``handout``: (cycle, group) of every unit handed
    out (a group's ``unit.valid``, cycle 0 = the first cycle of the run, as the model counts),
    ``rows``: the result rows of ``dirs``, ``status``: every group's PPU status of slots 0 and 1."""
    from amaranth.sim import Simulator

    import sparsetrain.hw.core as core_mod
    from sparsetrain.sim_tb.core_driver import _status_fields

    groups = []

    class Recorded(core_mod.Group):   # the groups the core makes, so the bench can watch their unit ports
        def __init__(self, params):
            super().__init__(params)
            groups.append(self)

    orig = core_mod.Group
    core_mod.Group = Recorded
    try:
        dut = core_mod.Core(p)
        sim = Simulator(dut)
    finally:
        core_mod.Group = orig
    sim.add_clock(1e-6)
    got: dict = {"handout": [], "rows": {}, "status": []}

    async def bench(ctx):
        await load_and_start(ctx, dut, (img, masks, prog, directory))
        cycle = 0
        while not ctx.get(dut.done) and cycle < max_cycles:
            got["handout"] += [(cycle, g) for g, grp in enumerate(groups) if ctx.get(grp.unit.valid)]
            await ctx.tick()
            cycle += 1
        got.update(done=ctx.get(dut.done), error=ctx.get(dut.error), code=ctx.get(dut.error_code),
                   cycles=ctx.get(dut.cycles), total=ctx.get(dut.total_cycles))
        for d in dirs:
            got["rows"][d] = await read_result_row(ctx, dut, d, p)
        for g in range(p.groups):
            for slot in (0, 1):
                ctx.set(dut.ppu_sel_group, g)
                ctx.set(dut.ppu_sel_slot, slot)
                await ctx.delay(1e-7)
                got["status"].append(_status_fields(ctx.get(dut.ppu_status.as_value()), p).as_dict())

    sim.add_testbench(bench)
    sim.run()
    return got


def check_rtl_against_model(p: CoreParams, prog, img, masks=(), directory=(), dirs=()) -> dict:
    """The RTL run equal to the model: handed-out units (cycle, group), rows, PPU status, counters."""
    model = run_program(prog, img, p, masks, directory=list(directory) or None)
    assert model.error == 0, model.error_message
    got = simulate_core(p, prog, img, masks, directory, dirs, max_cycles=20 * model.total_cycles + 1000)
    assert got["done"] and not got["error"], got.get("code")
    assert got["handout"] == [(u.dispatch, u.group) for u in model.units]
    for d in dirs:
        assert got["rows"][d] == model.row_entries(d, p), f"result row {d} differs"
    assert got["status"] == [pp.status(slot).as_dict() for pp in model.ppus for slot in (0, 1)]
    assert (got["cycles"], got["total"]) == (model.cycles, model.total_cycles)
    return got


def test_rtl_unit_rate_4_hands_out_several_units_in_one_cycle():
    """G = 4: 12 tiny units in one block on the RTL with UNIT_RATE = 4 and = 1; each equal to the
    model unit for unit, and U = 4 hands out four units in one cycle, which makes the run shorter."""
    runs = {}
    for rate in (4, 1):
        p = CoreParams(groups=4, unit_rate=rate, **SMALL)
        prog, img, dirs = tiny_units(p, 12)
        runs[rate] = check_rtl_against_model(p, prog, img, dirs=dirs)
    per_cycle = {r: max(np.bincount([c for c, _ in runs[r]["handout"]])) for r in runs}
    print(f"RTL total cycles U=4 {runs[4]['total']}, U=1 {runs[1]['total']}; most units in a cycle {per_cycle}")
    assert per_cycle == {4: 4, 1: 1}
    assert runs[4]["total"] < runs[1]["total"]


@pytest.mark.parametrize("groups,rate,kw", [(3, 2, {}), (4, 4, dict(pingpong=1)),
                                            (3, 4, dict(prefetch=1, lookahead=2, pingpong=1, skip_empty=1))],
                         ids=["g3u2", "g4u4-pingpong", "g3u4-built"])
def test_rtl_random_block_programs_match_the_model(groups, rate, kw, seed):
    """Random programs mixing blocks and bare units: every hand-out, row and counter as the model's."""
    p = CoreParams(groups=groups, unit_rate=rate, **SMALL, **kw)
    print(f"seed {seed} G={groups} U={rate} {kw}")
    b, results = random_program(p, np.random.default_rng(seed), units_per_step=4, density=0.3, max_ops=3)
    prog, img, masks = b.build()
    assert Opcode.UNITS in [decode(w)[0] for w in prog]
    check_rtl_against_model(p, prog, img, masks, b.directory_image(), [d for d, _ in results])


@pytest.mark.parametrize("case,code", [c for c in BLOCK_CASES if c[0] in ("blk_opcode", "blk_ops_past", "blk_k")])
def test_rtl_invalid_blocks_end_in_the_model_error(case, code):
    p = CoreParams(groups=3, unit_rate=4, **SMALL)
    prog, img = invalid_block(case, p)
    assert run_program(prog, img, p).error == code
    got = simulate_core(p, prog, img, max_cycles=2000)
    assert got["done"] and got["error"] and got["code"] == code


# ---------------------------------------------------------------- a Verilator build of G = 3, U = 4

P_G3U4 = CoreParams(groups=3, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5,
                    unit_rate=4)


@pytest.mark.regress   # a core build of its own (minutes on 2 cores)
def test_verilator_g3_u4_random_blocks_and_invalid_blocks_match_the_model(rng):
    from sparsetrain.sim_tb.core_batch import CoreJob, run_core_programs
    jobs, models = [], []
    for _ in range(3):
        b, results = random_program(P_G3U4, rng, units_per_step=6)
        prog, img, masks = b.build()
        jobs.append(CoreJob(prog, img, masks, dir_count=len(results), watchdog_cycles=50_000))
        models.append((run_program(prog, img, P_G3U4, masks), results))
    for case, _ in BLOCK_CASES:
        prog, img = invalid_block(case, P_G3U4)
        jobs.append(CoreJob(prog, img, dir_count=4, watchdog_cycles=5000))
        models.append((run_program(prog, img, P_G3U4), []))
    out = run_core_programs(jobs, P_G3U4, ppu_status=[(g, 1) for g in range(P_G3U4.groups)])
    for (model, results), r in zip(models, out):
        assert r.done and not r.timed_out
        if model.error:
            assert r.error and r.error_code == model.error
            continue
        assert not r.error
        for d, _ in results:
            assert r.rows[d] == model.row_entries(d, P_G3U4), f"result row {d} differs"
        assert (r.cycles, r.total_cycles) == (model.cycles, model.total_cycles)
        assert [s.as_dict() for s in r.ppu_status] == [pp.status(1).as_dict() for pp in model.ppus]
