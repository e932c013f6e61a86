"""Buffer layout of one layer step: which operand rows, weight rows and mask words each program
holds (docs/architecture.md sections 3 and 11).

A step's units (one result row each, section 10.1) are packed greedily, in issue order, into
programs that fit the core's memories (buffer, instruction memory, directory, mask memory): a
``ChunkPlan`` lists a program's units and the rows and masks they read, each once, in first-use
order; ``emit.emit_chunk`` turns a plan into words. A unit that cannot fit even alone is refused,
naming the memory size that would do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arch.geometry import ConvShape
from ..arch.isa import FIELDS, CoreParams, Opcode
from ..arch.steps import Step
from ..golden.bitexact.rowconv import RowOp
from .geometry import check_field, check_fits
from .quantise import StepTensors


Key = tuple[int, int, int]
Unit = tuple[Key, list[RowOp]]   # (result row, its row ops in issue order)

# A unit block (section 12.9) holds at most UNITS_MAX units (its `count` field); a program's units
# go into as few blocks as that allows, one UNITS header word each.
UNITS_MAX = (1 << dict((n, w) for n, w, _ in FIELDS[Opcode.UNITS])["count"]) - 1
FIXED_WORDS = 3   # a program's SYNC, first UNITS header and END


def block_headers(units: int) -> int:
    """UNITS header words of ``units`` consecutive units emitted as unit blocks."""
    return -(-units // UNITS_MAX)


def row_words(q: np.ndarray) -> np.ndarray:
    """Buffer words of every row of a 4-D tensor in the sparse row format (section 3): its
    non-zeros, or the one empty-row marker."""
    return np.maximum(1, np.count_nonzero(q, axis=-1))


def mask_words(mask: np.ndarray) -> np.ndarray:
    """Every (n, c, r) row of the GTA mask as one W_MAX-bit word (bit x = column x wanted)."""
    bits = np.array([1 << i for i in range(mask.shape[-1])], dtype=object)
    words = np.zeros(mask.shape[:-1], dtype=object)
    for idx in np.ndindex(*mask.shape[:-1]):
        words[idx] = int(np.sum(bits[mask[idx]])) if mask[idx].any() else 0
    return words


@dataclass
class StepOperands:
    """The operand tensors of one step as buffer rows: Port-1 rows (I, or dO for GTA), Port-2 rows
    (weight rows of K words, or dO rows for GTW), their sizes in words, and the GTA mask words."""

    step: Step
    shape: ConvShape
    q1: np.ndarray
    q2: np.ndarray
    words1: np.ndarray
    words2: np.ndarray
    masks: np.ndarray | None
    length: int                  # words of one result row (output row, input row, or K for GTW)

    @classmethod
    def of(cls, step: Step, shape: ConvShape, t: StepTensors) -> "StepOperands":
        q1 = t.q["dO"] if step is Step.GTA else t.q["I"]
        q2 = t.q["dO"] if step is Step.GTW else t.q["W"]
        words2 = row_words(q2) if step is Step.GTW else np.full(q2.shape[:-1], shape.kernel)  # weights: K words
        length = {Step.FORWARD: shape.out_width, Step.GTA: shape.width, Step.GTW: shape.kernel}[step]
        return cls(step, shape, q1, q2, row_words(q1), words2, mask_words(t.mask) if step is Step.GTA else None,
                   length)

    def keys(self, op: RowOp) -> tuple[tuple, tuple, int | None]:
        """(Port-1 row, Port-2 row, mask word or None) that ``op`` reads."""
        wc = self.shape.weight_channel(op.c)
        if self.step is Step.FORWARD:
            return (op.n, op.c, op.in_row), (op.f, wc, op.kr), None
        if self.step is Step.GTA:
            return (op.n, op.f, op.out_row), (op.f, wc, op.kr), self.masks[op.n, op.c, op.in_row]
        return (op.n, op.c, op.in_row), (op.n, op.f, op.out_row), None

    def single_program_words(self, units: list[Unit]) -> int:
        """Buffer words of one program holding every row of the step and every result row."""
        return int(self.words1.sum() + self.words2.sum() + len(units) * self.length)


@dataclass
class ChunkPlan:
    """One program's contents: its units, and the rows and masks they read (first-use order)."""

    units: list[Unit] = field(default_factory=list)
    rows1: dict[tuple, None] = field(default_factory=dict)
    rows2: dict[tuple, None] = field(default_factory=dict)
    masks: dict[int, int] = field(default_factory=dict)   # mask word -> index in the mask memory
    operand_words: int = 0
    instructions: int = 0


class ChunkPacker:
    """Greedy packing of consecutive units into programs that fit the core's memories."""

    def __init__(self, operands: StepOperands, p: CoreParams, header_words: int) -> None:
        self.o, self.p, self.header_words = operands, p, header_words
        self.plans: list[ChunkPlan] = []
        self._new()

    def _new(self) -> None:
        self.plan = ChunkPlan(instructions=self.header_words + FIXED_WORDS)  # + SYNC + UNITS + END

    def _cost(self, ops: list[RowOp]) -> tuple[int, int, int, list, list, list]:
        plan, o = self.plan, self.o
        new1, new2, newm, words = {}, {}, {}, 0
        for op in ops:
            k1, k2, m = o.keys(op)
            if k1 not in plan.rows1 and k1 not in new1:
                new1[k1] = 1
                words += int(o.words1[k1])
            if k2 not in plan.rows2 and k2 not in new2:
                new2[k2] = 1
                words += int(o.words2[k2])
            if m is not None and m not in plan.masks and m not in newm:
                newm[m] = 1
        units = len(plan.units)
        header = int(units > 0 and units % UNITS_MAX == 0)   # the unit opens the program's next block
        return words, len(newm), len(ops) + 1 + header, list(new1), list(new2), list(newm)

    def _fits(self, words: int, masks: int, instr: int, units: int, rows: int = 0) -> bool:
        """``rows``: data rows of the program, each with a directory entry under SKIP_EMPTY."""
        p, plan = self.p, self.plan
        dirs = units + (rows if p.skip_empty else 0)
        return (plan.operand_words + words + units * self.o.length <= p.buf_depth
                and plan.instructions + instr <= p.imem_depth and dirs <= min(p.dir_depth, 1 << 16)
                and len(plan.masks) + masks <= p.mask_depth)

    def _data_rows(self, new1: list, new2: list) -> int:
        """Data rows (each with a directory entry) the plan holds with these new rows: the Port-1
        rows, and the Port-2 rows of GTW (dO; the other steps' Port-2 rows are weights)."""
        plan = self.plan
        rows = len(plan.rows1) + len(new1)
        if self.o.step is Step.GTW:
            rows += len(plan.rows2) + len(new2)
        return rows

    def add(self, key: Key, ops: list[RowOp]) -> None:
        check_field(self.o.shape, "n_ops of a unit", len(ops), 16)
        words, masks, instr, new1, new2, newm = self._cost(ops)
        if not self._fits(words, masks, instr, len(self.plan.units) + 1, self._data_rows(new1, new2)):
            if not self.plan.units:
                self._refuse(words, masks, instr)
            self.close()
            words, masks, instr, new1, new2, newm = self._cost(ops)
            if not self._fits(words, masks, instr, 1, self._data_rows(new1, new2)):
                self._refuse(words, masks, instr)
        plan = self.plan
        plan.rows1.update(dict.fromkeys(new1))
        plan.rows2.update(dict.fromkeys(new2))
        for m in newm:
            plan.masks[m] = len(plan.masks)
        plan.operand_words += words
        plan.instructions += instr
        plan.units.append((key, ops))

    def _refuse(self, words: int, masks: int, instr: int) -> None:
        shape, p = self.o.shape, self.p
        what = f"one result row of {self.o.step.value} and its operands"
        check_fits(shape, f"buffer words for {what}", words + self.o.length, p.buf_depth, "BUF_DEPTH", 1 << 20)
        check_fits(shape, f"instruction words for {what}", instr + self.header_words + FIXED_WORDS, p.imem_depth,
                   "IMEM_DEPTH", 1 << 20)
        check_fits(shape, f"mask words for {what}", masks, p.mask_depth, "MASK_DEPTH", 1 << 16)

    def close(self) -> None:
        if self.plan.units:
            self.plans.append(self.plan)
        self._new()

    def finish(self) -> list[ChunkPlan]:
        self.close()
        return self.plans
