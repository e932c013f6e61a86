"""The controller's unit rate in the section 12 schedule (F, docs/architecture.md 12.9): the hand-out
rule by hand and against a cycle-by-cycle reference, unit_rate = 0 the section 10 rule, the
contract at UNIT_RATE = 1 equal to the bit-accurate core model (bare UNITs, one a cycle, 11.4),
and the closed form's unit-rate bound against the event level."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sparsetrain.arch.group_timing import GroupClock
from sparsetrain.arch.isa import CoreParams
from sparsetrain.arch.microarch import MicroArch
from sparsetrain.arch.schedule import ArchParams, schedule_units
from sparsetrain.arch.group_timing import UnitHandout
from sparsetrain.arch.schedule2 import schedule_units2
from sparsetrain.arch.steps import Step
from sparsetrain.arch.timing import Mode
from sparsetrain.compiler import compile_step
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.perf.decompose import exact_units
from sparsetrain.perf.densities import LayerDensity
from sparsetrain.perf.model import analytic_layer, exact_layer
from sparsetrain.perf.ops2 import UnitOps, unit_ops
from test_compiler import random_layer
from test_perf_gen2 import CLOSED_FORM_BOUND, patterns, shape


@dataclass
class _U:
    row_len: int
    cycles: np.ndarray = None


def _src_unit(load: int, compute: int, issued: bool = True) -> UnitOps:
    one = lambda v: np.array([v], np.int64)  # noqa: E731
    return UnitOps(np.array([issued]), one(load), one(compute), one(0), Mode.SRC)


@pytest.mark.parametrize("rate,cycles", [(0, 20), (1, 27), (2, 23), (4, 21), (8, 20)])
def test_rate_by_hand(rate, cycles):
    """16 units of 10 cycles each (first generation: cfg t0 + 1, a weight, an entry, final beat
    t0 + 4, finish 3 + 3) on 8 groups. U = 1: units 0..7 in cycles 0..7, unit 8 when group 0 is
    free (10), then one a cycle: the last in 17, ends 27. U = 2: two a cycle (0, 0, 1, 1, .., 3, 3),
    units 8..15 in 10, 10, 11, 11, .., 13, 13: 23. U = 4: 0 and 1, then 10 and 11: 21.
    Unlimited (and U = 8 = G): 8 in cycle 0, 8 in cycle 10: 20 (section 10)."""
    units, rules = [_U(3)] * 16, [_src_unit(1, 1)] * 16
    micro = MicroArch(unit_rate=rate)
    s = schedule_units2(units, rules, ArchParams(groups=8), micro)
    assert s.cycles == cycles
    if rate == 0:
        assert s.cycles == schedule_units([_U(3, np.array([4]))] * 16, ArchParams(groups=8)).cycles


def test_a_group_takes_one_unit_a_cycle_and_the_lowest_free_group_wins():
    """Groups that could take a unit in the very cycle they took one (free_at = c): with a rate
    each takes its next no earlier than c + 1 and units go to the lowest-index free group; unlimited
    (the section 10 rule) lets group 0 take them all in cycle 0."""
    def hand_out(rate: int, n: int) -> list[tuple[int, int]]:
        groups = [GroupClock() for _ in range(3)]
        h, out, c = UnitHandout(rate), [], 0
        for _ in range(n):
            c, g = h.take(c, groups)      # a block: each unit reached in the cycle of the previous one
            groups[g].free_at = c         # could take another in this cycle
            h.took(groups[g], c)
            out.append((c, g))
        return out
    assert hand_out(2, 6) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert hand_out(3, 6) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert hand_out(1, 3) == [(0, 0), (1, 0), (2, 0)]
    assert hand_out(0, 4) == [(0, 0)] * 4


def _reference(units, rules, arch: ArchParams, micro: MicroArch) -> list[int]:
    """12.9 cycle by cycle: in each cycle, units in order, each to the lowest-index group that can
    take a unit and has not taken one in this cycle, at most U of them."""
    groups = [GroupClock(micro.pingpong) for _ in range(arch.groups)]
    ends, i, c = [], 0, 0
    while i < len(units):
        took: set[int] = set()
        while i < len(units) and len(took) < micro.unit_rate:
            free = [g for g in range(arch.groups) if groups[g].free_at <= c and g not in took]
            if not free:
                break
            g = free[0]
            ends.append(groups[g].unit(c, rules[i], 0, False, micro, finish=arch.ppu_finish(units[i].row_len)))
            took.add(g)
            i += 1
        c += 1
    return ends


@pytest.mark.parametrize("spec", ["U1", "A+B+C+D4+U1", "A+B+C+D4+U2", "A+D4+U3", "A+C+D+U2"])
def test_rate_rule_against_a_cycle_by_cycle_reference(spec, rng):
    """Random sparse layers (GTW with few dO non-zeros: many units of skipped ops, the rate binds)
    on 8 groups: every unit's end equals the cycle-by-cycle reference of 12.9."""
    micro = MicroArch.parse(spec)
    sh = shape(6, 6, 8, 10)
    pats = patterns(rng, sh, 0.5, 0.05)
    arch = ArchParams(groups=8, micro=micro)
    for step in ("forward", "gta", "gtw"):
        units = exact_units(step, sh, pats["in"], pats["grad"], None, None, None)
        rules = unit_ops(step, sh, units, pats["in"], pats["grad"], None, micro)
        s = schedule_units2(units, rules, arch, micro)
        assert s.unit_end == _reference(units, rules, arch, micro), (spec, step)
        free = schedule_units2(units, rules, arch, micro.with_(unit_rate=0))
        print(f"{spec} {step}: {len(units)} units, {s.cycles} cycles (unlimited rate: {free.cycles})")
        assert s.cycles >= free.cycles and s.cycles >= -(-len(units) // micro.unit_rate)


CONFIGS = [dict(), dict(prefetch=1), dict(lookahead=2), dict(skip_empty=1, op_scan=1),
           dict(prefetch=1, lookahead=2, skip_empty=1, op_scan=4),
           dict(prefetch=1, lookahead=2, skip_empty=1, op_scan=4, pingpong=1), dict(prefetch=1, pingpong=1)]
BASE = dict(buf_depth=1 << 16, imem_depth=1 << 14, dir_depth=1 << 13, mask_depth=256, w_max=16, k_max=5, acc_w=48)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "+".join(f"{k}{v}" for k, v in kw.items()) or "gen1")
def test_contract_at_unit_rate_one_is_the_core_models_count(kw, seed):
    """Bare UNITs (UNIT_RATE = 1, 11.4): the contract (arch.schedule2 at unit_rate 1, the group rule
    of arch.group_timing) equals CoreRun.cycles (the RTL's count) on random programs (biases, all-
    skipped units) and compiled sparse layers, 1 to 3 groups, every switch set."""
    print(f"seed {seed} {kw}")
    rng = np.random.default_rng(seed)
    for groups in (1, 2, 3):
        p = CoreParams(groups=groups, **BASE, **kw)
        assert p.microarch().unit_rate == 1
        # bare units (a unit block's header mid-step costs a controller cycle the contract's unit
        # list does not see; compiled steps below are one block per step)
        b, _ = random_program(p, rng, units_per_step=6, density=0.15, blocks=False)
        prog, img, masks = b.build()
        run = run_program(prog, img, p, masks, directory=b.directory_image() or None)
        assert run.error == 0, run.error_message
        assert run.cycles == run.cycles_contract, (groups, run.cycles, run.cycles_contract)
        data = random_layer(rng, n=1, c=4, f=4, h=8, w=10, density=0.15)
        for step in Step:
            for pr in (p, CoreParams(groups=groups, **BASE, **kw, unit_rate=4)):   # compiled: unit blocks
                for ch in compile_step(data, step, pr).chunks:
                    r = run_program_fast(ch.program, ch.buffer_image, pr, masks=ch.masks, directory=ch.directory)
                    assert r.error == 0
                    assert r.cycles == r.cycles_contract, (groups, step, pr.unit_rate, r.cycles, r.cycles_contract)



def test_closed_form_keeps_its_tolerance_where_the_rate_binds(rng_for):
    """16 groups, one unit a cycle: sparse GTA / GTW steps are rate-bound; the closed form's bound
    (12.9, analytic2.makespan) stays within the closed form's tolerance of the event level."""
    m = MicroArch.parse("A+B+C+D4+U1")
    worst = 0.0
    for sh, di, dg in [(shape(16, 16, 12, 16), 0.5, 0.02), (shape(8, 8, 13, 15, 3, 2, 1), 0.6, 0.1)]:
        arch = ArchParams(groups=16, micro=m)
        an = analytic_layer(sh, LayerDensity(di, dg), arch)
        runs = [exact_layer(sh, patterns(rng_for("rate", i), sh, di, dg), arch) for i in range(3)]
        free = analytic_layer(sh, LayerDensity(di, dg), ArchParams(groups=16, micro=m.with_(unit_rate=0)))
        assert an.cycles() > free.cycles(), "the rate binds here"
        for st in an.steps:
            for dense in (False, True):
                e = float(np.mean([(r.steps[st].dense if dense else r.steps[st].sparse).cycles for r in runs]))
                a = (an.steps[st].dense if dense else an.steps[st].sparse).cycles
                worst = max(worst, abs(a - e) / e)
                assert abs(a - e) <= CLOSED_FORM_BOUND * e, (sh, st, dense, a, e)
    print(f"worst closed-form error with U = 1: {100 * worst:.1f} %")


def test_a_reader_block_that_never_fits_the_issue_queue_is_an_error():
    """12.4: a block is taken only when the issue queue (4) has room for what the 3 PEs do not
    take, so a block of 8 kept ops (OP_SCAN = 8) would wait forever: the model says so by name
    rather than hang; 7 kept ops fit."""
    from sparsetrain.arch.group_timing import unit_time
    ops = _src_unit(3, 4)
    many = UnitOps(np.ones(8, bool), np.full(8, 3, np.int64), np.full(8, 4, np.int64), np.zeros(8, np.int64), Mode.SRC)
    with pytest.raises(ValueError, match="op_scan = 8 is out of range"):
        unit_time(many, 8, False, MicroArch(prefetch=True, skip_empty=True, op_scan=8))
    assert unit_time(many, 8, False, MicroArch(prefetch=True, skip_empty=True, op_scan=7)) > \
        unit_time(ops, 8, False, MicroArch(prefetch=True, skip_empty=True, op_scan=7))
