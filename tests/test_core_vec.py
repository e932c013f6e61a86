"""golden.bitexact.core_vec (the vectorised core model) against golden.bitexact.core_model (the scalar oracle):
every result word, directory entry, counter, cycle figure, unit trace and PPU state equal, on
random programs, on programs whose units share their geometry (the grouped matrix-product
path), on programs that can saturate or are invalid (the scalar fallback) and on compiled
layer steps of a real training run."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow
from sparsetrain.arch.isa import CoreParams, Opcode, encode
from sparsetrain.arch.ppu import Op
from sparsetrain.arch.timing import Mode
from sparsetrain.compiler.emit import ProgramBuilder
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import CoreRun, run_program
from sparsetrain.golden.bitexact.core_vec import run_program_fast

P = CoreParams(groups=2, buf_depth=2048, imem_depth=512, dir_depth=64, mask_depth=64, w_max=16, k_max=5)
P_WIDE = CoreParams(dw=8, acc_w=17, groups=3, buf_depth=8192, imem_depth=512, dir_depth=64, mask_depth=64,
                    w_max=64, k_max=11)
P_NARROW = CoreParams(dw=6, acc_w=13, groups=1, buf_depth=2048, imem_depth=512, dir_depth=64, mask_depth=64,
                      w_max=10, k_max=3)
# unit blocks handed out 4 per cycle (section 12.9) on 3 groups
P_RATE = CoreParams(groups=3, buf_depth=2048, imem_depth=512, dir_depth=64, mask_depth=64, w_max=16, k_max=5,
                    unit_rate=4)


def state(r: CoreRun) -> dict:
    """Everything a run leaves behind, as plain Python values."""
    return dict(
        buffer=[int(x) for x in r.buffer], directory=[int(x) for x in r.directory], error=(r.error, r.error_message),
        cycles=(r.cycles, r.cycles_contract), steps=(r.step_nnz, r.step_rows, r.step_elems),
        units=[(u.group, u.dispatch, u.end, list(u.op_cycles), u.length, u.step) for u in r.units],
        ppus=[(list(pp.acc), pp.rng.state, pp.g_sum, pp.row_nnz, pp.relu_mask,
               [(list(s.fifo.entries), s.abs_sum, s.layer_nnz, s.layer_elems) for s in pp.slots]) for pp in r.ppus])


def assert_equal_runs(program, image, masks, p: CoreParams) -> CoreRun:
    scalar = run_program(program, image, p, masks=masks)
    fast = run_program_fast(program, image, p, masks=masks)
    a, b = state(scalar), state(fast)
    for key in a:
        assert a[key] == b[key], f"{key} differs"
    return fast


@pytest.mark.parametrize("p", [P, P_WIDE, P_NARROW, P_RATE], ids=["default", "wide", "narrow", "rate4"])
def test_random_programs_equal_the_scalar_model(p, rng_for):
    rng = rng_for(f"random-{p.w_max}")
    for _ in range(25):
        b, _ = random_program(p, rng, density=float(rng.random()), max_ops=int(rng.integers(1, 9)))
        run = assert_equal_runs(*b.build(), p)
        assert run.vectorised, "the fast path fell back on a valid program that cannot saturate"


def uniform_program(p: CoreParams, rng: np.random.Generator, amp: int, units: int = 6):
    """Three steps whose units each share one geometry (and, for GTA, one mask), as compiled
    layers do; op counts vary (weight sparsity leaves ops out)."""
    b = ProgramBuilder(p)
    b.instr(Opcode.PPU, all=1, op=int(Op.CLEAR_SLOT), slot=1)
    for tau in rng.integers(1, amp, p.n_f):
        b.instr(Opcode.PPU, all=1, op=int(Op.PUSH_TAU), slot=1, value=int(tau))
    stride = int(rng.integers(1, 3))

    def geometry():
        k = int(rng.integers(1, p.k_max + 1))
        pad = int(rng.integers(0, k))
        w_in = min(int(rng.integers(max(1, k - 2 * pad), p.w_max + 1)), p.w_max - 2 * pad + k - 1)
        return k, pad, w_in, (w_in + 2 * pad - k) // stride + 1

    def sparse(n, density=0.6):
        return b.row(SparseRow.from_dense(np.where(rng.random(n) < density, rng.integers(-amp, amp, n), 0)))

    b.instr(Opcode.SYNC, step=0)
    for _ in range(units):
        k, pad, w_in, w_out = geometry()
        ops = [b.op(Mode.SRC, k, w_in, w_out, sparse(w_in), b.weights(rng.integers(-amp, amp, k)), stride=stride,
                    pad=pad) for _ in range(int(rng.integers(1, 12)))]
        b.unit(w_out, ops, shift=int(rng.integers(0, 6)), relu=True, bias=int(rng.integers(-amp, amp)))
    b.instr(Opcode.SYNC, step=1)
    for u in range(units):
        k, pad, w_in, w_out = geometry()
        mask = b.mask(rng.random(w_in) < 0.7)
        ops = [b.op(Mode.MSRC, k, w_out, w_in, sparse(w_out, 0.3), b.weights(rng.integers(-amp, amp, k)),
                    stride=stride, pad=pad, mask_addr=mask) for _ in range(int(rng.integers(1, 12)))]
        b.unit(w_in, ops, shift=int(rng.integers(2, 8)), acc_g=True, prune=True, slot=1, g_first=u == 0)
    b.instr(Opcode.SYNC, step=2)
    for _ in range(units):
        k, pad, w_in, w_out = geometry()
        ops = [b.op(Mode.OSRC, k, w_in, w_out, sparse(w_in), sparse(w_out), stride=stride, pad=pad)
               for _ in range(int(rng.integers(1, 12)))]
        b.unit(k, ops, shift=int(rng.integers(0, 6)))
    b.instr(Opcode.END)
    return b.build()


def test_uniform_units_take_the_grouped_path_and_equal_the_scalar_model(rng_for):
    rng = rng_for("uniform")
    p = CoreParams(groups=2, buf_depth=8192, imem_depth=1024, dir_depth=64, mask_depth=64, w_max=32, k_max=5)
    for _ in range(15):
        run = assert_equal_runs(*uniform_program(p, rng, amp=1 << 10), p)
        assert run.vectorised


def test_sums_that_could_saturate_fall_back_to_the_scalar_model(rng_for):
    """DW = 8, ACC_W = 17: full-scale values over many ops saturate the accumulator."""
    rng = rng_for("saturate")
    p = CoreParams(dw=8, acc_w=17, groups=2, buf_depth=8192, imem_depth=1024, dir_depth=64, mask_depth=64,
                   w_max=32, k_max=5)
    fell_back = 0
    for _ in range(6):
        run = assert_equal_runs(*uniform_program(p, rng, amp=127), p)
        fell_back += not run.vectorised
    assert fell_back, "no program could saturate: the test does not reach the fallback"


def test_invalid_programs_give_the_scalar_models_error():
    b = ProgramBuilder(P)
    w = b.weights([1, 2, 3])
    row = b.row(SparseRow.from_dense([0, 4, 0, 5, 6, 0, 0, 1]))
    b.unit(6, [b.op(Mode.SRC, 3, 8, 6, row, w)])
    b.instr(Opcode.END)
    program, image, masks = b.build()
    bad_address = list(program)
    bad_address[1] = encode(Opcode.OP, mode=0, k=3, in_len=8, out_len=6, addr1=P.buf_depth - 1, addr2=w)
    bad_opcode = list(program)
    bad_opcode[1] = encode(Opcode.SYNC, step=1)
    for prog in (program, bad_address, bad_opcode, [encode(Opcode.NOP)] * P.imem_depth):
        run = assert_equal_runs(prog, image, masks, P)
        assert run.vectorised == (prog is program)


def test_compiled_layer_steps_of_a_real_run_equal_the_scalar_model(small_golden_run):
    from sparsetrain.compiler import LayerData, compile_step
    from sparsetrain.check import sim_params
    from sparsetrain.golden.training.tensors import load_golden
    p = sim_params()
    data = LayerData.from_golden(load_golden(small_golden_run), "features.4.conv")
    for step in ("forward", "gta", "gtw"):
        c = compile_step(data, step, p, samples=1)
        for ch in c.chunks:
            assert assert_equal_runs(ch.program, ch.buffer_image, ch.masks, p).vectorised, step
