"""Emission: program words, buffer image and mask words (docs/architecture.md section 11.3).

``ProgramBuilder`` is the one program builder: it writes rows and weight rows into a buffer
image, mask words into the mask memory, and instructions (UNIT with its OPs, unit blocks, SYNC,
PPU, END) into the program, placing every unit's result row. The compiler (``emit_chunk``: one program of a
layer step from its ``layout.ChunkPlan``) and the core-model, core and testbench tests
(``random_programs``) use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..arch.fixedpoint import SparseRow
from ..arch.isa import CoreParams, Opcode, decode, dir_encode, encode, entry_encode, field_position
from ..arch.ppu import Op as PPUOp
from ..arch.steps import Step
from ..arch.timing import Mode
from ..golden.bitexact.ppu_model import threshold_constant
from .layout import UNITS_MAX, ChunkPlan, Key, StepOperands
from .quantise import StepTensors, tau_to_int


STEP_INDEX = {Step.FORWARD: 0, Step.GTA: 1, Step.GTW: 2}  # SYNC step = per-step counter index
PRUNE_SLOT = 0


def encode_row(row: np.ndarray | SparseRow, p: CoreParams, keep_zeros: bool = False) -> list[int]:
    """One row in the sparse row format (section 3) as buffer words: a dense row's non-zeros (every
    column with keep_zeros: a weight row, exactly K words, offsets 0..K-1, last on the K-th), or a
    SparseRow's entries; an empty row is the one end marker."""
    if isinstance(row, SparseRow):
        return [entry_encode(v, o, last, p) for v, o, last in row.stream(p.w_max)]
    cols = np.arange(row.size) if keep_zeros else np.flatnonzero(row)
    if cols.size == 0:
        return [entry_encode(0, p.off_end, 1, p)]
    last = cols.size - 1
    return [entry_encode(int(row[c]), int(c), int(j == last), p) for j, c in enumerate(cols)]


class ProgramBuilder:
    """Lays out rows, weights and masks in a buffer image and emits the instruction words.

    Result rows get ``max(1, length)`` words each (the worst case of the sparse row format) and
    directory entries in order. Where they go: by default at the next instruction (``instr``,
    ``extend``, ``build``), after every row written until then; with ``results_last`` after every
    operand, in unit order (the compiler's layout: operand rows first, then one result slot per unit).
    ``build()`` returns (program, buffer_image, masks); ``results`` holds (out_addr, length) per
    directory entry.

    With SKIP_EMPTY (section 12.4) every data row (``row``) also gets a directory entry (start,
    entries, nnz, written), from the top of the directory down (``directory_image()``), and the OP
    words name the entries of their operand rows (``dir1``: the Port-1 row; ``dir2``: the Port-2
    row when it is a data row, the dO row of OSRC).

    Units are bare (``UNIT`` then its ``OP`` words) or, between ``begin_block()`` and the next
    non-unit instruction (or ``end_block()``), a unit block (section 12.9): ``UNITS(count)``, the
    ``count`` UNIT words, then their OP words unit by unit (a block of more than UNITS_MAX units
    is split into several).
    """

    def __init__(self, params: CoreParams, *, results_last: bool = False):
        self.p = params
        self.results_last = results_last
        self.words: list[int] = []
        self.image: list[int] = []
        self.masks: list[int] = []
        self.results: list[tuple[int, int]] = []  # (out_addr, length) per directory entry
        self._pending: list[tuple[int, dict]] = []  # (index of the UNIT word, its fields)
        self.row_dirs: dict[int, int] = {}       # data row address -> its directory entry (SKIP_EMPTY)
        self.dir_words: dict[int, int] = {}      # directory entry -> word, of the data rows
        self._block: list[tuple[dict, list[int]]] | None = None   # the open unit block's (fields, ops)

    def _alloc(self, words: Sequence[int]) -> int:
        addr = len(self.image)
        self.image.extend(int(w) for w in words)
        return addr

    def row(self, row: np.ndarray | SparseRow) -> int:
        """A data row (dense values or a SparseRow) in the sparse row format; returns its address.
        With SKIP_EMPTY the row gets a directory entry too (``row_dirs``)."""
        words = encode_row(row, self.p)
        addr = self._alloc(words)
        if self.p.skip_empty:
            d = self.p.dir_depth - 1 - len(self.dir_words)
            if d < len(self.results):
                raise ValueError(f"DIR_DEPTH = {self.p.dir_depth} is out of range for this program; allowed: at "
                                 f"least {len(self.results) + len(self.dir_words) + 1} (result rows + data rows)")
            off_end = self.p.off_end
            nnz = sum(1 for w in words if (w >> self.p.dw) & ((1 << self.p.off_w) - 1) != off_end)
            self.dir_words[d] = dir_encode(addr, len(words), nnz)
            self.row_dirs[addr] = d
        return addr

    def directory_image(self) -> list[int]:
        """The directory words the host loads (section 11.2): zero up to the data rows' entries
        (none without SKIP_EMPTY)."""
        if not self.dir_words:
            return []
        if min(self.dir_words) < len(self.results):
            raise ValueError(f"DIR_DEPTH = {self.p.dir_depth} is out of range for this program; allowed: at least "
                             f"{len(self.results) + len(self.dir_words)} (result rows + data rows)")
        image = [0] * self.p.dir_depth
        for d, w in self.dir_words.items():
            image[d] = w
        return image

    def weights(self, w: Sequence[int] | np.ndarray) -> int:
        """A weight row: K words, every column (zeros too); returns its address."""
        return self._alloc(encode_row(np.asarray(w, dtype=np.int64), self.p, keep_zeros=True))

    def mask(self, bits: Sequence[int]) -> int:
        return self.mask_word(sum(1 << x for x, b in enumerate(bits) if b))

    def mask_word(self, word: int) -> int:
        """A W_MAX-bit mask word (bit x = column x wanted); returns its index in the mask memory."""
        self.masks.append(int(word))
        return len(self.masks) - 1

    def op_encoder(self, mode: Mode, k: int, in_len: int, out_len: int, *, stride: int = 1,
                   pad: int = 0) -> Callable[[int, int, int], int]:
        """OP words that differ only in addr1, addr2 and mask_addr: the word is encoded once and
        those fields OR-ed in (addresses < BUF_DEPTH <= 2**ADDR_W and mask indices < MASK_DEPTH
        <= 2**16 fit their fields), which is what makes whole layers fast to compile."""
        base = encode(Opcode.OP, mode=int(mode), k=k, stride2=int(stride == 2), pad=pad, in_len=in_len,
                      out_len=out_len)
        sh1, sh2, shm, sd1, sd2 = (field_position(Opcode.OP, f)[0]
                                   for f in ("addr1", "addr2", "mask_addr", "dir1", "dir2"))
        dirs = self.row_dirs
        return lambda addr1, addr2, mask_addr=0: (base | addr1 << sh1 | addr2 << sh2 | mask_addr << shm
                                                  | dirs.get(addr1, 0) << sd1 | dirs.get(addr2, 0) << sd2)

    def op(self, mode: Mode, k: int, in_len: int, out_len: int, addr1: int, addr2: int, *, stride: int = 1,
           pad: int = 0, mask_addr: int = 0) -> int:
        """One OP word, every field range-checked."""
        return encode(Opcode.OP, mode=int(mode), k=k, stride2=int(stride == 2), pad=pad, in_len=in_len,
                      out_len=out_len, addr1=addr1, addr2=addr2, mask_addr=mask_addr,
                      dir1=self.row_dirs.get(addr1, 0), dir2=self.row_dirs.get(addr2, 0))

    def unit(self, length: int, ops: Sequence[int], *, shift: int = 0, relu: bool = False, acc_g: bool = False,
             prune: bool = False, g_first: bool = False, slot: int = 0, bias: int | None = None,
             db: int | None = None) -> int:
        """A UNIT and its OP words; returns its directory index (the result row is placed later).
        ``db``: the bias-gradient bank entry the written row's sum is added to (section 11.6)."""
        d = len(self.results)
        self.results.append((-1, length))
        fields = dict(
            n_ops=len(ops), dir=d, length=length, shift=shift, relu=int(relu), acc_g=int(acc_g), prune=int(prune),
            g_first=int(g_first), slot=slot, bias_en=int(bias is not None), bias=int(bias or 0),
            db_en=int(db is not None), db=int(db or 0))
        if self._block is not None:
            self._block.append((fields, [int(w) for w in ops]))
            return d
        self._pending.append((len(self.words), fields))
        self.words.append(0)  # the UNIT word, written when its out_addr is known
        self.words.extend(int(w) for w in ops)
        return d

    def begin_block(self) -> None:
        """The following units (up to the next other instruction) form unit blocks (section 12.9)."""
        self.end_block()
        self._block = []

    def end_block(self) -> None:
        """Emit the open block's words: per UNITS_MAX units a ``UNITS`` header, the UNIT words (written
        when their out_addr is known), then their OP words unit by unit."""
        units, self._block = self._block or [], None
        for start in range(0, len(units), UNITS_MAX):
            part = units[start:start + UNITS_MAX]
            self.words.append(encode(Opcode.UNITS, count=len(part)))
            for f, _ in part:
                self._pending.append((len(self.words), f))
                self.words.append(0)
            for _, ops in part:
                self.words.extend(ops)

    def instr(self, opcode: Opcode, **fields: int) -> None:
        self.end_block()
        if not self.results_last:
            self._place()
        self.words.append(encode(opcode, **fields))

    def extend(self, words: Sequence[int]) -> None:
        """Instruction words encoded elsewhere (a shared header)."""
        self.end_block()
        if not self.results_last:
            self._place()
        self.words.extend(int(w) for w in words)

    def _place(self) -> None:
        for at, f in self._pending:
            addr = self._alloc([0] * max(1, f["length"]))
            self.results[f["dir"]] = (addr, f["length"])
            self.words[at] = encode(Opcode.UNIT, out_addr=addr, **f)
        self._pending = []

    @property
    def buffer_words(self) -> int:
        """Buffer words the program uses: its image and every result slot."""
        pending = [f for _, f in self._pending] + [f for f, _ in self._block or []]
        return len(self.image) + sum(max(1, f["length"]) for f in pending)

    def build(self) -> tuple[list[int], list[int], list[int]]:
        """(program, buffer image, masks); with ``results_last`` the image holds the operands only
        and the result slots lie right above it."""
        self.end_block()
        operands = len(self.image)
        self._place()
        image = self.image[:operands] if self.results_last else self.image
        return list(self.words), list(image), list(self.masks)


# ----------------------------------------------------------------------------- the compiler's programs

@dataclass
class ResultRow:
    """Where one unit's result row lands: program chunk, directory index, buffer slot, tensor place."""

    chunk: int
    dir: int
    out_addr: int
    index: Key   # (n, channel, row) of O / dI, or (f, weight channel, kr) of dW
    length: int


@dataclass
class Chunk:
    """One program that fits the core's memories: a run of consecutive units of the step."""

    program: list[int]                  # instruction words (section 11.3)
    buffer_image: list[int]             # operand rows (words 0 .. len-1); result slots lie above
    masks: list[int]                    # mask words its MSRC ops use
    results: list[ResultRow]
    buffer_words: int                   # operands + result slots
    n_ops: int
    directory: list[int] = field(default_factory=list)  # directory image to load (SKIP_EMPTY: data rows)


def emit_chunk(index: int, plan: ChunkPlan, o: StepOperands, p: CoreParams, t: StepTensors, header: list[int], *,
               relu: bool, prune: bool, tail: Sequence[int] = ()) -> Chunk:
    """Program ``index`` of a step: operand rows in first-use order (Port-1 rows, then Port-2 rows),
    the header, SYNC, the units as one unit block (section 12.9: UNITS, the UNIT words, their ops),
    the ``tail`` words (END_BATCH), END; one result slot per unit above the operands."""
    step, shape = o.step, o.shape
    b = ProgramBuilder(p, results_last=True)
    addr1 = {k: b.row(o.q1[k]) for k in plan.rows1}
    addr2 = {k: b.row(o.q2[k]) if step is Step.GTW else b.weights(o.q2[k]) for k in plan.rows2}
    for m in plan.masks:
        b.mask_word(m)
    b.extend(header)
    b.instr(Opcode.SYNC, step=STEP_INDEX[step])
    if step is Step.GTA:
        lens = dict(in_len=shape.out_width, out_len=shape.width)
    else:
        lens = dict(in_len=shape.width, out_len=shape.out_width)
    op_word = b.op_encoder(step.mode, shape.kernel, stride=shape.stride, pad=shape.pad, **lens)
    keys: list[Key] = []
    b.begin_block()
    for key, ops in plan.units:
        words = []
        for op in ops:
            k1, k2, m = o.keys(op)
            words.append(op_word(addr1[k1], addr2[k2], plan.masks[m] if m is not None else 0))
        bias = int(t.bias_preload[key[1]]) if step is Step.FORWARD and t.bias_preload is not None else None
        b.unit(o.length, words, shift=t.shift, relu=relu, acc_g=step is Step.GTA, prune=prune, slot=PRUNE_SLOT,
               bias=bias)
        keys.append(key)
    b.extend(tail)
    b.instr(Opcode.END)
    buffer_words = b.buffer_words
    program, image, masks = b.build()
    results = [ResultRow(index, d, addr, key, length) for d, ((addr, length), key) in enumerate(zip(b.results, keys))]
    return Chunk(program, image, masks, results, buffer_words, sum(len(ops) for _, ops in plan.units),
                 b.directory_image())


def threshold_program(fifo: Sequence[float], seed: int, p_prune: float, estimator: str, t: StepTensors,
                      p: CoreParams, n_gradients: int) -> tuple[list[int], dict[str, int]]:
    """GTA of a pruned layer: restore the layer's threshold FIFO in every PPU, seed the generators.

    The FIFO holds the golden run's thresholds converted to dI's integer scale; C_m/C_shift
    (c_p / n for this batch's n gradients) are kept for the host's end-of-batch threshold.
    Returns (the words, the threshold record: c_m, c_shift, fifo, fifo_full).
    """
    b = ProgramBuilder(p)
    b.instr(Opcode.PPU, all=1, op=int(PPUOp.CLEAR_SLOT), slot=PRUNE_SLOT)
    taus = [tau_to_int(v, t.frac["dI"], p.dw) for v in fifo][-p.n_f:]
    for v in taus:
        b.instr(Opcode.PPU, all=1, op=int(PPUOp.PUSH_TAU), slot=PRUNE_SLOT, value=v)
    for g in range(p.groups):  # one distinct, reproducible stream per PPU
        b.instr(Opcode.PPU, group=g, op=int(PPUOp.SEED), value=group_seed(seed, g))
    c_m, c_shift = threshold_constant(p_prune, n_gradients, estimator)
    return b.build()[0], dict(c_m=c_m, c_shift=c_shift, fifo=taus, fifo_full=int(len(taus) == p.n_f),
                              n=int(n_gradients))


def continuation_header(header: Sequence[int], threshold: dict[str, int]) -> list[int]:
    """The header of a step's second and later programs, run after the first without a reset: no
    CLEAR_SLOT (the slot's sum|g| of the batch so far stays for END_BATCH), the FIFO restore only
    when it fills the FIFO (N_F pushes replace every entry, whatever the state), the same seeds.
    So every program prunes with the same FIFO and random streams, run alone or after the others."""
    out = []
    for w in header:
        _, f = decode(w)
        if f.get("op") == int(PPUOp.CLEAR_SLOT) or (f.get("op") == int(PPUOp.PUSH_TAU)
                                                    and not threshold.get("fifo_full")):
            continue
        out.append(int(w))
    return out


def end_batch_word(threshold: dict[str, int], p: CoreParams) -> int:
    """END_BATCH of the pruned slot on every group (all = 1): the controller sums every group's
    sum|g|, computes tau_batch with the batch's C_m / C_shift and pushes it into every FIFO (11.3)."""
    return encode(Opcode.PPU, all=1, op=int(PPUOp.END_BATCH), slot=PRUNE_SLOT, c_m=threshold["c_m"],
                  c_shift=threshold["c_shift"])


def group_seed(layer_seed: int, group: int) -> int:
    """A non-zero 32-bit xorshift seed per (layer, group)."""
    v = (0x9E3779B9 * (int(layer_seed) + 1) + 0x85EBCA6B * (group + 1)) & 0xFFFFFFFF
    return v or 1
