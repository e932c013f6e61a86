"""The batch threshold and the bias gradients computed by the core RTL (docs/architecture.md
sections 11.3 END_BATCH and 11.6), against golden.bitexact.core_model bit for bit and cycle for
cycle, with G = 1, 2 and 3 groups.

END_BATCH with all = 1: the controller sums every group's sum|g| of the slot, computes tau_batch
once and pushes it into every PPU's FIFO; every group's whole FIFO, read back through the PPU
status port, must equal the model's, and the pushed threshold must be the one of the sum over
all groups (the programs are chosen so that any single group's sum gives another threshold).
Bias gradients: units with db_en add their written row into their group's bank; the host read
(host_rsel = 2) is the sum over the groups' banks.
"""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.isa import CoreParams, ErrorCode, Opcode, decode, encode
from sparsetrain.arch.ppu import Op
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import batch_threshold, run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.sim_tb.core_driver import run_core_program

SLOT = 1  # random_program's pruned slot


def params(groups: int) -> CoreParams:
    """G = 2: test_core's configuration (the same Verilator build); G = 1, 3: a smaller datapath."""
    if groups == 2:
        return CoreParams(groups=2, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=16, k_max=5)
    return CoreParams(groups=groups, buf_depth=1024, imem_depth=256, dir_depth=64, mask_depth=64, w_max=8, k_max=3)


def simulator(groups: int) -> str:
    """Verilator for G = 2; Icarus for G = 1 and 3 (a few seconds to compile, where another Verilator
    build of the core takes minutes of `make test`; the programs are a few hundred cycles)."""
    return "verilator" if groups == 2 else "icarus"


def fifo_status(p: CoreParams) -> list[tuple[int, int, int]]:
    return [(g, SLOT, i) for g in range(p.groups) for i in range(p.n_f)]


def group_sums_before_end_batch(prog: list[int], img: list[int], masks: list[int], p: CoreParams) -> list[int]:
    """Every group's sum|g| of the slot just before the END_BATCH word (the program cut there)."""
    at = next(i for i, w in enumerate(prog) if decode(w)[0] == Opcode.PPU and decode(w)[1]["op"] == Op.END_BATCH)
    cut = run_program(prog[:at] + [encode(Opcode.END)], img, p, masks)
    return [pp.slots[SLOT].abs_sum for pp in cut.ppus]


# G = 1 and 3 simulate on Icarus (a build each): make regress; make test runs G = 2 on the shared Verilator build
@pytest.mark.parametrize("groups", [pytest.param(1, marks=pytest.mark.regress), 2,
                                    pytest.param(3, marks=pytest.mark.regress)])
def test_end_batch_sums_every_group_and_pushes_into_every_fifo(groups, seed):
    p = params(groups)
    rng = np.random.default_rng(seed)
    print(f"seed {seed} G {groups}")
    c_m, c_shift = int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(22, 27))
    b, results = random_program(p, rng, units_per_step=2 * groups + 1, end_batch=(c_m, c_shift))
    prog, img, masks = b.build()
    sums = group_sums_before_end_batch(prog, img, masks, p)
    tau_all = batch_threshold(sums, c_m, c_shift, p)
    # the program exercises the reduction: with G > 1 no single group's sum gives the same threshold
    if groups > 1:
        assert all(batch_threshold([s], c_m, c_shift, p) != tau_all for s in sums), (sums, tau_all)
    model = run_program(prog, img, p, masks)
    assert model.error == 0, model.error_message
    fast = run_program_fast(prog, img, p, masks=masks)
    assert fast.total_cycles == model.total_cycles and fast.cycles == model.cycles
    for pp in model.ppus:   # the model pushed tau of the sum over the groups into every FIFO
        assert pp.slots[SLOT].fifo.entries[-1] == tau_all and pp.slots[SLOT].abs_sum != 0
    r = run_core_program(prog, img, p, masks=masks, dir_count=len(results), ppu_status=fifo_status(p),
                         watchdog_cycles=40000, sim=simulator(groups))
    assert r.done and not r.timed_out and not r.error
    expect = [model.ppus[g].status(SLOT, i).as_dict() for g, _, i in fifo_status(p)]
    got = [s.as_dict() for s in r.ppu_status]
    for (g, _, i), e, h in zip(fifo_status(p), expect, got):
        assert h == e, f"group {g} FIFO entry {i}: RTL {h}, model {e}"
    for d, _ in results:   # the second batch was pruned with the FIFO the END_BATCH filled
        assert r.rows[d] == model.row_entries(d, p), f"result row {d} differs"
    assert (r.cycles, r.total_cycles) == (model.cycles, model.total_cycles)
    print(f"sums {sums} -> tau {tau_all}; cycles {r.cycles}, total {r.total_cycles}")


@pytest.mark.parametrize("groups", [pytest.param(1, marks=pytest.mark.regress), 2])
def test_bias_gradient_banks_sum_over_groups(groups, seed):
    p = params(groups)
    rng = np.random.default_rng(seed + 7)
    print(f"seed {seed + 7} G {groups}")
    b, results = random_program(p, rng, units_per_step=3 * groups + 2, db=True)
    prog, img, masks = b.build()
    model = run_program(prog, img, p, masks)
    assert model.error == 0, model.error_message
    # independent of the bank code: the sum of every written row of each db entry
    expect = [0] * 4
    units = [decode(w)[1] for w in prog if decode(w)[0] == Opcode.UNIT]
    for f, (d, length) in zip(units, results):
        if f["db_en"]:
            expect[f["db"]] += int(model.row(d, length, p).sum())
    assert [model.db_read(i, p) for i in range(4)] == expect
    if groups > 1:   # rows of one entry came from more than one group
        used = {(u.group, f["db"]) for u, f in zip(model.units, units) if f["db_en"]}
        assert any(len({g for g, i in used if i == idx}) > 1 for idx in range(4)), used
    assert run_program_fast(prog, img, p, masks=masks).db_banks == model.db_banks
    r = run_core_program(prog, img, p, masks=masks, dir_count=len(results), db_count=p.db_depth,
                         watchdog_cycles=40000, sim=simulator(groups))
    assert r.done and not r.error
    assert r.db[:4] == expect and r.db[4:] == [0] * (p.db_depth - 4)
    assert (r.cycles, r.total_cycles) == (model.cycles, model.total_cycles)
    print(f"db {r.db[:4]}")


def test_db_index_out_of_range_is_a_unit_error():
    p = params(2)
    b, _ = random_program(p, np.random.default_rng(1), units_per_step=1, db=True)
    prog, img, masks = b.build()
    at = next(i for i, w in enumerate(prog) if decode(w)[0] == Opcode.UNIT)
    f = decode(prog[at])[1]
    prog[at] = encode(Opcode.UNIT, **{**f, "db_en": 1, "db": p.db_depth})
    model = run_program(prog, img, p, masks)
    assert model.error == ErrorCode.BAD_UNIT
    r = run_core_program(prog, img, p, masks=masks, dir_count=4, watchdog_cycles=5000)
    assert r.done and r.error and r.error_code == ErrorCode.BAD_UNIT
