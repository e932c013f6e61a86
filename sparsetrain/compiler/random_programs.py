"""Random core programs for the core model's, the core's and the testbenches' tests and benchmarks,
written with the compiler's one ``ProgramBuilder``."""
from __future__ import annotations

import numpy as np

from ..arch.fixedpoint import SparseRow
from ..arch.isa import CoreParams, Opcode
from ..arch.ppu import Op
from ..arch.timing import Mode
from .emit import ProgramBuilder



def random_program(params: CoreParams, rng: np.random.Generator, *, units_per_step: int = 4,
                   max_ops: int = 5, density: float = 0.5, end_batch: tuple[int, int] | None = None,
                   db: bool = False, blocks: bool = True) -> tuple[ProgramBuilder, list[tuple[int, int]]]:
    """A random three-step program (SRC with bias/ReLU, pruned MSRC, OSRC) for directed tests.

    Rows, weights, masks, K (up to K_MAX), stride, padding and op counts are random; returns
    the builder (call ``build()``) and (directory index, row length) of every result.
    ``end_batch`` = (C_m, C_shift): after the GTA units, ``END_BATCH`` of slot 1 on every group
    (the controller's threshold of every group's sum|g|, section 11.3), then the GTA units once
    more, pruned with the new FIFO. ``db``: every forward and GTA unit adds its row into a random
    bias-gradient entry (``db``, section 11.6), indices shared between units. ``blocks``: a step's
    units are a random mix of unit blocks of random sizes and bare units (section 12.9), else bare.
    """
    p = params
    b = ProgramBuilder(p)
    results = []
    amp = 1 << (p.dw - 4)

    def geometry() -> tuple[int, int, int, int, int]:
        """Random kernel size, stride, padding and the input/output row lengths they fit."""
        k = int(rng.integers(1, p.k_max + 1))
        s = int(rng.integers(1, 3))
        pad = int(rng.integers(0, k))
        w_in = min(int(rng.integers(max(1, k - 2 * pad), p.w_max + 1)), p.w_max - 2 * pad + k - 1)
        return k, s, pad, w_in, (w_in + 2 * pad - k) // s + 1

    def db_of() -> dict[str, int]:
        return {"db": int(rng.integers(0, min(4, p.db_depth)))} if db else {}

    # the block layout draws from its own stream, so the rows and ops do not depend on it (and
    # blocks=False gives the bare programs of before unit blocks existed, draw for draw)
    lay = np.random.default_rng(int(rng.integers(1 << 62))) if blocks else None

    def layout(first: bool) -> None:
        """Before a unit: open a block (a new one), go bare, or go on as before."""
        if not blocks:
            return
        r = lay.random()
        if r < (0.7 if first else 0.3):
            b.begin_block()
        elif r < (1.0 if first else 0.45):
            b.end_block()

    def sparse(n):
        row = np.where(rng.random(n) < density, rng.integers(-amp, amp, n), 0)
        return b.row(SparseRow.from_dense(row))

    # threshold FIFO of slot 1 full on every PPU, so GTA pruning is on
    b.instr(Opcode.PPU, all=1, op=int(Op.CLEAR_SLOT), slot=1)
    for tau in rng.integers(1, amp, p.n_f):
        b.instr(Opcode.PPU, all=1, op=int(Op.PUSH_TAU), slot=1, value=int(tau))
    b.instr(Opcode.SYNC, step=0)
    for u in range(units_per_step):   # forward
        layout(u == 0)
        k, s, pad, w_in, w_out = geometry()
        ops = [b.op(Mode.SRC, k, w_in, w_out, sparse(w_in), b.weights(rng.integers(-amp, amp, k)), stride=s, pad=pad)
               for _ in range(int(rng.integers(1, max_ops + 1)))]
        results.append((b.unit(w_out, ops, shift=int(rng.integers(0, 6)), relu=bool(rng.integers(0, 2)),
                               bias=int(rng.integers(-amp, amp)), **db_of()), w_out))
    b.instr(Opcode.SYNC, step=1)
    for batch in range(2 if end_batch else 1):
        if batch:
            b.instr(Opcode.PPU, all=1, op=int(Op.END_BATCH), slot=1, c_m=end_batch[0], c_shift=end_batch[1])
        for u in range(units_per_step):   # GTA
            layout(u == 0)
            k, s, pad, w_in, w_out = geometry()
            ops = []
            for _ in range(int(rng.integers(0 if u == 0 else 1, max_ops + 1))):
                mask = b.mask(rng.random(w_in) < 0.7)
                ops.append(b.op(Mode.MSRC, k, w_out, w_in, sparse(w_out), b.weights(rng.integers(-amp, amp, k)),
                                stride=s, pad=pad, mask_addr=mask))
            results.append((b.unit(w_in, ops, shift=int(rng.integers(2, 8)), acc_g=True, prune=True, slot=1,
                                   g_first=u == 0, **db_of()), w_in))
    b.instr(Opcode.SYNC, step=2)
    for u in range(units_per_step):   # GTW
        layout(u == 0)
        k, s, pad, w_in, w_out = geometry()
        ops = [b.op(Mode.OSRC, k, w_in, w_out, sparse(w_in), sparse(w_out), stride=s, pad=pad)
               for _ in range(int(rng.integers(1, max_ops + 1)))]
        results.append((b.unit(k, ops, shift=int(rng.integers(0, 6))), k))
    b.instr(Opcode.END)
    return b, results
