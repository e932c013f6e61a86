"""PPU RTL (hw/ppu.py) against golden.bitexact.ppu_model on Verilator (and Icarus), via sim_tb.ppu_tb.

Every run's testbench compares every output entry, the whole status after every command and
the timing contract of docs/architecture.md section 7.1; these tests add checks of their
own on what the run returned.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib.wiring import In

from sparsetrain.arch.fixedpoint import choose_frac_bits, quantize
from sparsetrain.arch.ppu import Op, PPUConfig
from sparsetrain.golden.bitexact.ppu_model import threshold_constant
from sparsetrain.golden.training.tensors import load_golden
from sparsetrain.hw.blocks import to_verilog
from sparsetrain.hw.lint import lint_file
from sparsetrain.hw.ppu import PPU
from sparsetrain.sim_tb import ppu_pingpong as pp
from sparsetrain.sim_tb import ppu_stimulus as stim
from sparsetrain.sim_tb.core_driver import verilog_ports
from sparsetrain.sim_tb.faults import PPU_FAULTS
from sparsetrain.sim_tb.ppu_driver import PpuTxn, run_ppu

# make test: a small configuration (fast to compile); make regress: the default one too
SMALL = PPUConfig(dw=8, k_max=3, w_max=16, n_f=4, n_slots=4, r_w=8, cnt_w=10)
DEFAULT = PPUConfig()


def _finish_txns(txns):
    return [t for t in txns if t.cmd is not None and t.cmd.op == Op.FINISH]


def test_directed_no_backpressure_exact_timing(seed):
    txns = stim.directed_txns(SMALL)
    r = run_ppu(txns, SMALL, seed=seed)
    assert np.array_equal(r.occupancy[r.expected_cycles > 0], r.expected_cycles[r.expected_cycles > 0])
    assert len(r.entries) == len(_finish_txns(txns))
    # the first FINISH is an all-zero row: exactly the empty-row marker
    assert r.entries[0] == [(0, (1 << 5) - 1, 1)]


def test_directed_and_random_with_backpressure(seed):
    rng = np.random.default_rng(seed)
    txns = stim.directed_txns(SMALL) + stim.random_txns(rng, SMALL, 250)
    r = run_ppu(txns, SMALL, seed=seed, p_valid=0.6, p_ready=0.5)
    assert (r.occupancy[r.expected_cycles > 0] >= r.expected_cycles[r.expected_cycles > 0]).all()
    assert r.blocked.sum() > 0  # back-pressure really happened


@pytest.mark.parametrize("fault", list(PPU_FAULTS))
def test_checker_catches_a_wrong_expectation(fault, seed):
    """The checker can fail: one wrong expectation in the stimulus (an output entry, a status
    field, a command's cycle count; sim_tb.faults) and the run of the correct PPU must fail, for
    that reason."""
    hook, reason = PPU_FAULTS[fault]
    with pytest.raises(AssertionError, match=reason):
        run_ppu(stim.directed_txns(SMALL)[:8], SMALL, seed=seed, stimulus_hook=hook)


def test_algorithm1_multi_layer_multi_batch(seed):
    """3 layers x 7 batches of GTA rows: pruning off until each FIFO holds N_F thresholds, then
    every value pruned with that layer's predicted threshold; statuses checked after each command."""
    cfg = SMALL
    rng = np.random.default_rng(seed)
    txns: list[PpuTxn] = []
    rows_per_batch, shift = 3, 4
    c_m, c_shift = threshold_constant(0.9, rows_per_batch * cfg.w_max)
    for _batch in range(7):
        for slot in range(3):
            g = quantize(rng.normal(0, 0.1 * (slot + 1), (rows_per_batch, cfg.w_max)), 6 + shift, cfg.acc_w)
            txns += stim.gradient_row_txns(g, cfg, slot=slot, shift=shift, g_first=True)
            txns.append(PpuTxn(stim.Cmd(Op.END_BATCH, slot=slot, c_m=c_m, c_shift=c_shift), index=cfg.n_f - 1))
    r = run_ppu(txns, cfg, seed=seed, p_valid=0.8, p_ready=0.8)
    ends = [s for t, s in zip(txns, r.statuses) if t.cmd is not None and t.cmd.op == Op.END_BATCH]
    assert [s.fifo_count for s in ends[:3 * cfg.n_f:3]] == list(range(1, cfg.n_f + 1))
    assert all(s.fifo_full for s in ends[3 * (cfg.n_f - 1):])
    assert len(r.entries) == 7 * 3 * rows_per_batch


def test_golden_training_gradients(small_golden_run, seed):
    """dI of a real pruned training step, requantised by the PPU and pruned with its FIFO."""
    run = load_golden(small_golden_run)
    layer = next(name for name in run.layers if run[name, "dI"].shape[-1] <= SMALL.w_max)
    d_i = run[layer, "dI"]
    cfg = SMALL
    rows = d_i.reshape(-1, d_i.shape[-1])[:24]
    f = choose_frac_bits(rows, cfg.dw)
    shift = 6
    acc = quantize(rows, f + shift, cfg.acc_w)
    c_m, c_shift = threshold_constant(run.manifest["run"]["p"], rows.size)
    txns: list[PpuTxn] = []
    for _batch in range(cfg.n_f + 1):  # the last batch is pruned (FIFO full)
        txns += stim.gradient_row_txns(acc, cfg, slot=1, shift=shift, g_first=True)
        txns.append(PpuTxn(stim.Cmd(Op.END_BATCH, slot=1, c_m=c_m, c_shift=c_shift)))
    r = run_ppu(txns, cfg, seed=seed)
    last = r.entries[-len(rows):]
    dense = np.zeros(rows.shape, np.int64)
    for i, ents in enumerate(last):
        for v, o, _l in ents:
            if o < cfg.w_max:
                dense[i, o] = v
    assert np.count_nonzero(dense) < np.count_nonzero(quantize(rows, f, cfg.dw))  # pruning removed values


def test_icarus_second_opinion(seed):
    txns = stim.directed_txns(SMALL)[:40] + stim.random_txns(np.random.default_rng(seed), SMALL, 20)
    run_ppu(txns, SMALL, "icarus", seed=seed, p_valid=0.7, p_ready=0.7)


@pytest.mark.parametrize("kwargs, name", [({"n_f": 0}, "N_F"), ({"n_f": 6}, "N_F"), ({"seed": 0}, "seed"),
                                          ({"dw": 2}, "DW"), ({"acc_w": 10}, "ACC_W"), ({"sum_w": 100}, "SUM_W")])
def test_invalid_parameters_raise_at_elaboration(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PPU(PPUConfig(**kwargs))
    with pytest.raises(ValueError, match=name):
        to_verilog("ppu", {k.upper(): v for k, v in kwargs.items()})


def signature_ports(ppu: PPU) -> list[tuple[str, str, int]]:
    """(direction, name, width) of every port the component's signature says the Verilog has."""
    ppu._MustUse__silence = True  # only its signature is read here, never elaborated
    ports = [("input", "clk", 1), ("input", "rst", 1)]
    for path, member in ppu.signature.members.flatten():
        if member.is_port:
            ports.append(("input" if member.flow is In else "output", "__".join(map(str, path)),
                          Shape.cast(member.shape).width))
    return sorted(ports)


def emitted_ports(text: str, top: str) -> list[tuple[str, str, int]]:
    out = []
    for direction, _signed, rng, name in verilog_ports(text, top):
        msb, lsb = map(int, re.findall(r"\d+", rng)) if rng else (0, 0)
        out.append((direction, name, msb - lsb + 1))
    return sorted(out)


def test_verilog_block_emits_the_ppu_of_its_parameters(tmp_path):
    """`sparsetrain verilog --block ppu` with N_F=8 ...: the module's ports are exactly those of
    the PPU of those parameters (names, directions, widths from its signature), they differ from
    the default's where the parameters change a width, and the text is lint-clean."""
    params = {"N_F": 8, "W_MAX": 16, "K_MAX": 3, "DW": 8, "R_W": 8}
    text, used = to_verilog("ppu", params)
    assert {k: used[k] for k in params} == params
    want = signature_ports(PPU(PPUConfig(n_f=8, w_max=16, k_max=3, dw=8, r_w=8)))
    assert emitted_ports(text, "ppu") == want
    assert want != signature_ports(PPU(PPUConfig()))  # the parameters reached the ports
    vpath = tmp_path / "ppu.v"
    vpath.write_text(text)
    res = lint_file(vpath)
    assert res.ok, res.failures


def test_small_config_verilog_has_the_signature_ports():
    ppu = PPU(SMALL)
    assert emitted_ports(verilog.convert(ppu, name="ppu_small", emit_src=False), "ppu_small") == signature_ports(ppu)


@pytest.mark.regress
@pytest.mark.parametrize("chunk", range(10))
def test_regress_random_rows(seed, chunk):
    """10 x 10,000 random rows on the default configuration with back-pressure."""
    rng = np.random.default_rng([seed, chunk])
    txns = stim.random_txns(rng, DEFAULT, 10_000)
    if chunk == 0:
        txns = stim.directed_txns(DEFAULT) + txns
    run_ppu(txns, DEFAULT, seed=seed + chunk, p_valid=0.9 if chunk % 2 else 1.0, p_ready=0.8 if chunk % 2 else 1.0)


@pytest.mark.regress
@pytest.mark.parametrize("chunk", range(2))
def test_regress_random_rows_small_config(seed, chunk):
    """2 x 10,000 random rows on the small configuration (where the 4-slot, 4-deep FIFO and
    the 8-bit random draw wrap far more often); cheap enough to run with HDL coverage."""
    rng = np.random.default_rng([seed, 100 + chunk])
    txns = stim.directed_txns(SMALL) + stim.random_txns(rng, SMALL, 10_000)
    run_ppu(txns, SMALL, seed=seed + 100 + chunk, p_valid=0.8 if chunk else 1.0, p_ready=0.7 if chunk else 1.0)


# ---- PINGPONG=1 (docs/architecture.md 7.1 and 12.3): two accumulators, FINISH overlapping beats
PINGPONG = PPUConfig(dw=8, k_max=3, w_max=16, n_f=4, n_slots=4, r_w=8, cnt_w=10, pingpong=1)


def test_pingpong_exact_timing_no_backpressure(seed):
    """Random rows alternating between the accumulators, beats of two rows interleaved on the
    PE ports, FINISHes overlapping the next row's beats and STARTs: bit-exact against the model,
    every FINISH length + 3 cycles, every command accepted in the first cycle the contract allows."""
    rows = pp.random_rows(np.random.default_rng(seed), PINGPONG, 120)
    r = pp.run_ppu_pingpong(rows, PINGPONG, seed=seed)
    assert (r.finish_cycles == np.array([row.finish.length + 3 for row in rows])).all()
    assert r.concurrent_starts > 0 and r.mixed_cycles > 0  # the overlaps really happened
    assert len(r.entries) == len(rows)


def test_pingpong_random_backpressure(seed):
    rows = pp.random_rows(np.random.default_rng(seed + 1), PINGPONG, 150)
    r = pp.run_ppu_pingpong(rows, PINGPONG, seed=seed, p_valid=0.7, p_ready=0.6)
    assert r.blocked.sum() > 0 and r.mixed_cycles > 0 and r.concurrent_starts > 0


def test_pingpong_checker_catches_a_wrong_entry(seed):
    """The ping-pong testbench can fail: one wrong expected entry and the correct PPU fails."""
    def hook(path):
        a = dict(np.load(path))
        a["exp_entries"][len(a["exp_entries"]) // 2, 1] ^= 1
        np.savez(path, **a)
    with pytest.raises(AssertionError, match="mismatches"):
        pp.run_ppu_pingpong(pp.random_rows(np.random.default_rng(seed), PINGPONG, 10), PINGPONG, seed=seed,
                            stimulus_hook=hook)


def test_pingpong_parameter_and_ports():
    """PINGPONG is validated; PINGPONG=1 adds exactly the sideband pe_acc and the command's acc bit."""
    with pytest.raises(ValueError, match="PINGPONG"):
        PPUConfig(pingpong=2)
    with pytest.raises(ValueError, match="PINGPONG"):
        to_verilog("ppu", {"PINGPONG": -1})
    p0 = {n: (d, w) for d, n, w in signature_ports(PPU(SMALL))}
    p1 = {n: (d, w) for d, n, w in signature_ports(PPU(PINGPONG))}
    assert sorted(set(p1) - set(p0)) == ["pe_acc"] and p1["pe_acc"] == ("input", 3)
    assert p1["cmd__payload"] == ("input", p0["cmd__payload"][1] + 1)
    assert {n: p1[n] for n in p0 if n != "cmd__payload"} == {n: p0[n] for n in p0 if n != "cmd__payload"}


@pytest.mark.regress
@pytest.mark.parametrize("chunk", range(2))
def test_regress_pingpong_random_rows(seed, chunk):
    """2 x 5,000 random rows on the PINGPONG=1 small configuration, with and without back-pressure."""
    rows = pp.random_rows(np.random.default_rng([seed, 200 + chunk]), PINGPONG, 5_000)
    r = pp.run_ppu_pingpong(rows, PINGPONG, seed=seed + 200 + chunk, p_valid=0.8 if chunk else 1.0,
                            p_ready=0.7 if chunk else 1.0)
    assert r.concurrent_starts > 0 and r.mixed_cycles > 0
