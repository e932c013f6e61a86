"""Useful PE-cycles of a program, from the operand rows its OP words read (architecture 12.7).

``program_useful`` walks a program the way ``core_model.run_program`` does (UNIT, its OP words,
PPU / SYNC / NOP, END), reads every op's operand rows from the buffer with the model's
``read_row`` and counts the op's useful cycles with the one definition,
``sparsetrain.arch.utilisation.useful_cycles``. Useful work is a property of the data: it does
not depend on the microarchitecture (an op the second generation skips has an empty row, so it has
none), and the dense baseline does the same useful cycles among its zeros.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...arch.isa import FIELDS, CoreParams, Opcode, decode
from ...arch.timing import Mode
from ...arch.utilisation import useful_cycles
from .core_model import read_row


def _nonzeros(entries, length: int, p: CoreParams) -> np.ndarray:
    row = np.zeros(length, dtype=bool)
    for v, o, _ in entries:
        if o != p.off_end and v != 0:
            if not 0 <= o < length:
                raise ValueError(f"entry offset = {o} is out of range; allowed: 0 .. {length - 1} (row length)")
            row[o] = True
    return row


def op_useful(f: Mapping[str, int], buffer: np.ndarray, masks: Sequence[int], p: CoreParams) -> int:
    """Useful cycles of one OP (decoded fields ``f``) on the rows in ``buffer``."""
    mode = Mode(f["mode"])
    k, s, pad, n_in, n_out = f["k"], 1 + f["stride2"], f["pad"], f["in_len"], f["out_len"]
    port1 = _nonzeros(read_row(buffer, f["addr1"], p), n_in, p)
    if mode is Mode.SRC:
        return useful_cycles(mode, k, s, pad, n_in, n_out, port1)
    if mode is Mode.MSRC:   # Port-1 is the dO row (in_len), the result the dI row (out_len)
        mword = int(masks[f["mask_addr"]]) if f["mask_addr"] < len(masks) else 0
        mask = np.array([(mword >> x) & 1 for x in range(n_out)], dtype=bool)
        return useful_cycles(mode, k, s, pad, n_out, n_in, port1, mask)
    grad = _nonzeros(read_row(buffer, f["addr2"], p), n_out, p)
    return useful_cycles(mode, k, s, pad, n_in, n_out, port1, grad)


def program_useful(program: Sequence[int], buffer_image: Sequence[int] | np.ndarray, params: CoreParams,
                   masks: Sequence[int] = ()) -> list[int]:
    """Useful PE-cycles of every OP of ``program`` in program order, on a buffer loaded with
    ``buffer_image`` (operand rows are read as loaded: within a step no op reads a row the same
    program writes). Raises ValueError on a word that is not an instruction."""
    p = params
    buf = np.zeros(max(p.buf_depth, len(buffer_image)), dtype=object)
    buf[:len(buffer_image)] = [int(w) for w in buffer_image]
    out: list[int] = []
    pc = 0
    while pc < len(program):
        op, f = decode(int(program[pc]))
        if op not in FIELDS or op == Opcode.OP:
            raise ValueError(f"program word {pc} (opcode {op}) is out of range; allowed: an instruction outside a unit")
        if op == Opcode.END:
            break
        if op == Opcode.UNITS:   # a unit block (section 12.9): its UNIT words, then their OPs in unit order
            n_ops = 0
            for at in range(pc + 1, pc + 1 + f["count"]):
                uop, uf = decode(int(program[at])) if at < len(program) else (None, {})
                if uop != Opcode.UNIT:
                    raise ValueError(f"program word {at} in the unit block at {pc} is not a UNIT")
                n_ops += uf["n_ops"]
            pc = _ops_useful(program, pc + 1 + f["count"], n_ops, pc, buf, masks, p, out)
            continue
        if op != Opcode.UNIT:
            pc += 1
            continue
        pc = _ops_useful(program, pc + 1, f["n_ops"], pc, buf, masks, p, out)
    return out


def _ops_useful(program: Sequence[int], start: int, n: int, at: int, buf: np.ndarray, masks: Sequence[int],
                p: CoreParams, out: list[int]) -> int:
    """Useful PE-cycles of the ``n`` OP words from ``start`` (of the unit or block at ``at``)
    appended to ``out``; returns the address after them."""
    for i in range(start, start + n):
        oop, of = decode(int(program[i])) if i < len(program) else (None, {})
        if oop != Opcode.OP:
            raise ValueError(f"program word {i} in the unit at {at} is not an OP")
        out.append(op_useful(of, buf, masks, p))
    return start + n
