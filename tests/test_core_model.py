"""golden.bitexact.core_model and sparsetrain.arch.isa: instruction encoding, results against direct numpy
convolutions, cycle prediction against sparsetrain.arch.schedule, invalid programs."""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow, rne_shift, sat
from sparsetrain.arch.isa import CoreParams, ErrorCode, Opcode, decode, encode
from sparsetrain.arch.ppu import Op
from sparsetrain.arch.timing import Mode
from sparsetrain.compiler.emit import ProgramBuilder
from sparsetrain.compiler.random_programs import random_program
from sparsetrain.golden.bitexact.core_model import batch_threshold, run_program
from sparsetrain.golden.bitexact.ppu_model import PPUModel

P = CoreParams(groups=2, buf_depth=2048, imem_depth=512, dir_depth=64, mask_depth=64, w_max=16, k_max=5)


def test_encode_decode_roundtrip_and_range_errors(rng_for):
    rng = rng_for("isa")
    for _ in range(50):
        f = dict(n_ops=int(rng.integers(0, 1 << 16)), dir=int(rng.integers(0, 1 << 16)),
                 out_addr=int(rng.integers(0, 1 << 20)), length=int(rng.integers(0, 1 << 13)),
                 shift=int(rng.integers(0, 64)), relu=1, slot=5, bias_en=1,
                 bias=int(rng.integers(-(1 << 62), 1 << 62)))
        word = encode(Opcode.UNIT, **f)
        assert word < 1 << 160
        op, g = decode(word)
        assert op == Opcode.UNIT and all(g[k] == v for k, v in f.items())
    with pytest.raises(ValueError, match="k = 32 is out of range"):
        encode(Opcode.OP, k=32)
    with pytest.raises(ValueError, match="field = 'bogus' is unknown"):
        encode(Opcode.END, bogus=1)
    with pytest.raises(ValueError, match="G = 0 is out of range"):
        CoreParams(groups=0)


def direct_src(w, row, s, pad, w_out):
    x = np.concatenate([np.zeros(pad, np.int64), row, np.zeros(pad + len(w), np.int64)])
    return np.array([sum(int(w[k]) * int(x[o * s + k]) for k in range(len(w))) for o in range(w_out)])


def test_forward_units_equal_direct_convolution(rng_for):
    rng = rng_for("forward")
    b = ProgramBuilder(P)
    expect = []
    for _ in range(6):
        k, s = int(rng.integers(1, 6)), int(rng.integers(1, 3))
        pad = int(rng.integers(0, k))
        w_in = 12
        w_out = (w_in + 2 * pad - k) // s + 1
        ops, total = [], np.zeros(w_out, np.int64)
        for _ in range(int(rng.integers(1, 7))):
            row = np.where(rng.random(w_in) < 0.5, rng.integers(-300, 300, w_in), 0)
            w = rng.integers(-100, 100, k)
            total += direct_src(w, row, s, pad, w_out)
            ops.append(b.op(Mode.SRC, k, w_in, w_out, b.row(SparseRow.from_dense(row)), b.weights(w),
                            stride=s, pad=pad))
        bias, shift = int(rng.integers(-500, 500)), int(rng.integers(0, 5))
        d = b.unit(w_out, ops, shift=shift, relu=True, bias=bias)
        expect.append((d, np.maximum(sat(rne_shift(total + bias, shift), P.dw), 0)))
    b.instr(Opcode.END)
    run = run_program(*b.build()[:2], P)
    assert run.error == 0
    for d, e in expect:
        np.testing.assert_array_equal(run.row(d, len(e), P), e)
    assert run.step_rows[0] == len(expect)
    assert run.step_nnz[0] == sum(int(np.count_nonzero(e)) for _, e in expect)


def test_gtw_unit_equals_direct_correlation(rng_for):
    rng = rng_for("gtw")
    b = ProgramBuilder(P)
    k, s, pad, w_in = 5, 2, 2, 15
    w_out = (w_in + 2 * pad - k) // s + 1
    total = np.zeros(k, np.int64)
    ops = []
    for _ in range(4):
        x = np.where(rng.random(w_in) < 0.6, rng.integers(-200, 200, w_in), 0)
        g = np.where(rng.random(w_out) < 0.6, rng.integers(-200, 200, w_out), 0)
        xp = np.concatenate([np.zeros(pad, np.int64), x, np.zeros(pad + k, np.int64)])
        total += np.array([sum(int(g[o]) * int(xp[o * s + kk]) for o in range(w_out)) for kk in range(k)])
        ops.append(b.op(Mode.OSRC, k, w_in, w_out, b.row(SparseRow.from_dense(x)), b.row(SparseRow.from_dense(g)),
                        stride=s, pad=pad))
    d = b.unit(k, ops, shift=3)
    b.instr(Opcode.END)
    run = run_program(*b.build()[:2], P)
    np.testing.assert_array_equal(run.row(d, k, P), sat(rne_shift(total, 3), P.dw))


def test_cycles_follow_the_schedule_contract(rng_for):
    rng = rng_for("cycles")
    for groups in (1, 2, 3):
        p = CoreParams(groups=groups, buf_depth=4096, imem_depth=1024, dir_depth=64, mask_depth=128,
                       w_max=16, k_max=5)
        b, _ = random_program(p, rng, units_per_step=8)
        prog, img, masks = b.build()
        run = run_program(prog, img, p, masks)
        assert run.error == 0
        headers = sum(decode(w)[0] == Opcode.UNITS for w in prog)
        if groups == 1:
            assert run.cycles == run.cycles_contract  # one group: no dispatch latency at all
        # s.11.4: at most G-1 cycles per step more than section 10, and a cycle per unit block
        # header (12.9: the header takes a controller cycle; UNIT_RATE = 1 here)
        assert run.cycles_contract <= run.cycles <= run.cycles_contract + 3 * (groups - 1) + headers
        assert abs(run.cycles - run.cycles_contract) <= 0.05 * run.cycles_contract


def test_ops_go_to_first_free_pe_and_units_to_first_free_group():
    b = ProgramBuilder(P)
    row = b.row(SparseRow.from_dense(np.ones(8, np.int64)))
    w = b.weights([1, 1])
    for n in (4, 1, 1):
        b.unit(7, [b.op(Mode.SRC, 2, 8, 7, row, w)] * n)
    b.instr(Opcode.END)
    run = run_program(*b.build()[:2], P)
    c = 1 + 2 + 8 + 1  # one SRC op (section 6)
    u0, u1, u2 = run.units
    assert (u0.group, u1.group) == (0, 1) and u1.dispatch == 1  # one UNIT per cycle
    assert u0.end == 2 * c + 7 + 3     # 4 ops on 3 PEs: two waves, then the finish
    assert u1.end == 1 + c + 7 + 3
    assert u2.group == 1 and u2.dispatch == u1.end  # group 1 frees first


@pytest.mark.parametrize("case,code", [
    ("opcode", ErrorCode.BAD_OPCODE), ("op_outside", ErrorCode.BAD_OPCODE), ("k", ErrorCode.BAD_OP),
    ("pad", ErrorCode.BAD_OP), ("addr", ErrorCode.ADDRESS), ("no_last", ErrorCode.ADDRESS),
    ("no_end", ErrorCode.ADDRESS), ("slot", ErrorCode.BAD_UNIT), ("group", ErrorCode.BAD_UNIT)])
def test_invalid_programs_report_their_error(case, code):
    prog, img = invalid_program(case, P)
    run = run_program(prog, img, P)
    assert run.error == code, run.error_message


def invalid_program(case: str, p: CoreParams) -> tuple[list[int], list[int]]:
    """Small programs with one defect each (shared with tests/test_core.py)."""
    b = ProgramBuilder(p)
    row = b.row(SparseRow.from_dense(np.arange(1, 9)))
    w = b.weights([1, 2, 3])
    good = dict(in_len=8, out_len=6, addr1=row, addr2=w)
    if case == "opcode":
        b.words.append(0xF)
    elif case == "op_outside":
        b.words.append(b.op(Mode.SRC, 3, **good))
    elif case == "k":
        b.unit(6, [b.op(Mode.SRC, p.k_max + 1, **good)])
    elif case == "pad":
        b.unit(6, [b.op(Mode.SRC, 3, pad=3, **good)])
    elif case == "addr":
        b.unit(6, [b.op(Mode.SRC, 3, 8, 6, p.buf_depth + 3, w)])
    elif case == "no_last":
        b.image.extend([1] * 4)  # value 1, offset 0, never last, up to the end of the buffer
        b.image.extend([1] * (p.buf_depth - len(b.image) - 10))
        b.unit(6, [b.op(Mode.SRC, 3, 8, 6, len(b.image) - 4, w)])
    elif case == "slot":
        b.unit(6, [b.op(Mode.SRC, 3, **good)], slot=p.n_slots)
    elif case == "group":
        b.instr(Opcode.PPU, group=p.groups, op=int(Op.SEED), value=5)
    if case != "no_end":
        b.instr(Opcode.END)
    prog, img, _ = b.build()
    return prog, img[:p.buf_depth]


def test_batch_threshold_of_one_group_equals_the_ppu_end_batch(rng_for):
    rng = rng_for("tau")
    ppu = PPUModel(P.ppu_config())
    ppu.slots[0].abs_sum = int(rng.integers(1, 1 << 20))
    expect = batch_threshold([ppu.slots[0].abs_sum], 40000, 30, P)
    assert ppu.end_batch(0, 40000, 30) == expect
    assert batch_threshold([100, 200], 1 << 15, 15, P) == 300
