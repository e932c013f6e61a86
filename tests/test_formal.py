"""Formal checks (sparsetrain.formal, SymbiYosys + Yices): the fast subset of `make formal`,
the mutation checks (a known bug must make the proof fail with a named VCD trace), and the
harness's reference functions against the golden model."""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from sparsetrain.arch.fixedpoint import rne_shift
from sparsetrain.cli import main as cli_main
from sparsetrain.formal import run_check, select
from sparsetrain.formal.mutation import MUTATIONS, run_mutation
from sparsetrain.formal.ppu_props import rne_shift_ref, xorshift32_ref
from sparsetrain.golden.bitexact.ppu_model import Xorshift32

FAST = [c.name for c in select(fast=True)]


def _explain(res) -> str:
    return "\n".join(res.summary) + f"\nlog: {res.workdir / 'sby.log'}"


@pytest.mark.parametrize("name", FAST)
def test_fast_check_passes(name, tmp_path):
    (check,) = select(names=[name])
    res = run_check(check, tmp_path)
    assert res.status == "PASS", _explain(res.sby)
    if check.mode == "cover":  # every cover reached, each with its trace
        assert res.sby.trace is not None and res.sby.trace.exists()


@pytest.mark.parametrize("mut", MUTATIONS, ids=lambda m: m.name)
def test_mutation_fails_the_proof_with_a_trace(mut, tmp_path):
    control = run_mutation(mut, tmp_path, apply=False)
    assert control.status == "PASS", "the unchanged copy must pass the same check\n" + _explain(control)
    res = run_mutation(mut, tmp_path)
    assert res.status == "FAIL", _explain(res)
    assert any("failed assertion" in line for line in res.summary), _explain(res)
    # the tool names the counterexample trace, and it is a VCD that exists
    assert res.trace is not None and res.trace.suffix == ".vcd" and res.trace.exists(), _explain(res)
    assert any(str(res.trace.relative_to(res.workdir)) in line for line in res.summary)
    assert "$var" in res.trace.read_text()[:20000]
    print(f"{mut.name}: caught, trace {res.trace}")


def _comb_eval(expr_of, inputs: list[int], width: int) -> list[int]:
    """Evaluate a combinational Amaranth function of one ``width``-bit input in simulation."""
    m = Module()
    a = Signal(width)
    y = Signal(len(expr_of(a)))
    m.d.comb += y.eq(expr_of(a))
    sim = Simulator(m)
    got = []

    async def bench(ctx):
        for v in inputs:
            ctx.set(a, v)
            got.append(ctx.get(y))

    sim.add_testbench(bench)
    sim.run()
    return got


def test_xorshift_reference_matches_golden():
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rnd = random.Random(seed)
    xs = [1, 0xFFFFFFFF, 0x80000000] + [rnd.randrange(1, 1 << 32) for _ in range(200)]
    assert _comb_eval(xorshift32_ref, xs, 32) == [Xorshift32.next_state(x) for x in xs]


@pytest.mark.parametrize("s", [0, 1, 2, 3])
def test_rne_shift_reference_matches_golden(s):
    xs = list(range(64))
    assert _comb_eval(lambda a: rne_shift_ref(a, s), xs, 6) == [rne_shift(x, s) for x in xs]


def test_cli_list_and_bad_input(capsys):
    assert cli_main(["formal", "--list"]) == 0
    out = capsys.readouterr().out
    for block in ("pe.", "ppu.", "group.", "core."):
        assert block in out
    assert cli_main(["formal", "--block", "nosuch"]) == 2
    assert "block = 'nosuch'" in capsys.readouterr().err
    assert cli_main(["formal", "--depth", "0"]) == 2
    assert "--depth = 0" in capsys.readouterr().err
