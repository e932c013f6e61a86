"""The PPU's contract (docs/architecture.md sections 7 and 7.1): its elaboration parameters,
its command stream (opcodes and fields) and the command timing.

The bit-accurate behaviour is ``golden.bitexact.ppu_model``; the RTL is ``hw.ppu``. No amaranth,
no torch: importable anywhere (including inside cocotb).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from amaranth.lib.enum import IntEnum
from typing import Sequence

from .fixedpoint import DatapathParams, check_param

MASK32 = (1 << 32) - 1
DEFAULT_SEED = 0x2545F491
C_M_BITS = 16        # mantissa width of the threshold constant
C_SHIFT_MAX = 63     # largest shift of the threshold constant
N_PE = 3             # PEs of a group (the PPU has one Beat input per PE)
PPU_LAT = 3          # FINISH of a row of length L takes L + PPU_LAT cycles (sections 7.1, 10.3)


class Op(IntEnum, shape=3):
    """PPU command opcodes (section 7.1)."""

    START = 0         # preload every lane of the row accumulator with `bias`
    ACCUM = 1         # add the beats of the PEs in `pe_mask` until each sent its last beat
    FINISH = 2        # requantise, ReLU, accumulate g/|g|, prune, compress, count a row
    END_BATCH = 3     # tau_batch from the slot's sum|g| (or `value` with tau_ext), push it into the slot's FIFO, clear the sum
    PUSH_TAU = 4      # push `value` into the slot's FIFO (restores a saved FIFO)
    CLEAR_SLOT = 5    # empty the slot's FIFO, clear its sum|g| and counters
    CLEAR_COUNTS = 6  # clear the slot's non-zero and element counters
    SEED = 7          # load `value` into the xorshift state (0 loads the elaboration seed)


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class PPUConfig(DatapathParams):
    """Elaboration parameters of one PPU, validated on creation (section 1 and 7.1)."""

    n_f: int = 4
    n_slots: int = 4
    r_w: int = 16
    seed: int = DEFAULT_SEED
    sum_w: int | None = None   # width of the unsigned sum|g| accumulator of a slot
    g_w: int | None = None     # width of the signed bias-gradient accumulator
    cnt_w: int = 32            # width of the non-zero / element counters
    pingpong: int = 0          # 1: two row accumulators, beats taken at any time (section 12.3)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param("N_F", self.n_f)
        if not _is_pow2(self.n_f):
            raise ValueError(f"N_F = {self.n_f} is out of range; allowed: a power of two in 1 .. 64")
        check_param("N_SLOTS", self.n_slots, 1, 64)
        check_param("R_W", self.r_w)
        check_param("seed", self.seed, 1, MASK32, allowed="1 .. 2**32-1 (xorshift32 state, non-zero)")
        if self.sum_w is None:
            object.__setattr__(self, "sum_w", min(64, self.dw + 24))
        if self.g_w is None:
            object.__setattr__(self, "g_w", min(64, self.dw + 24))
        check_param("SUM_W", self.sum_w, self.dw - 1, 64, allowed=f"{self.dw - 1} .. 64 (DW-1 .. 64)")
        check_param("G_W", self.g_w, self.dw, 64, allowed=f"{self.dw} .. 64 (DW .. 64)")
        check_param("CNT_W", self.cnt_w, 8, 64)
        check_param("PINGPONG", self.pingpong, 0, 1,
                    allowed="0 .. 1 (0: one accumulator, ACCUM takes the beats; 1: two, section 12.3)")

    @property
    def tau_w(self) -> int:
        """Width of a threshold: DW-1 bits unsigned (|g| of a stored value fits)."""
        return self.dw - 1

    @property
    def log2_n_f(self) -> int:
        return self.n_f.bit_length() - 1

    @property
    def n_acc(self) -> int:
        """Row accumulators: 1, or 2 with PINGPONG=1."""
        return 1 + self.pingpong


@dataclass(frozen=True)
class PPUCommand:
    """One command on the PPU's command stream; unused fields are ignored by the op."""

    op: Op
    slot: int = 0
    pe_mask: int = 0
    length: int = 0
    shift: int = 0
    relu: bool = False
    acc_g: bool = False
    prune: bool = False
    g_first: bool = False
    c_m: int = 0
    c_shift: int = 0
    bias: int = 0
    value: int = 0
    acc: int = 0      # the accumulator START / FINISH name (PINGPONG=1; always 0 otherwise)
    tau_ext: bool = False   # END_BATCH: push `value` (the controller's tau_batch of every group) instead

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "PPUCommand":
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["op"] = Op(kw["op"])
        for flag in ("relu", "acc_g", "prune", "g_first", "tau_ext"):
            if flag in kw:
                kw[flag] = bool(kw[flag])
        return cls(**kw)


# Timing (section 7.1)

def command_cycles(cmd: PPUCommand, beats_per_pe: Sequence[int] = (0, 0, 0), pingpong: int = 0) -> int:
    """Cycles from accepting ``cmd`` to the cycle before the next command can be accepted,
    with no stalls; ``beats_per_pe`` are the beats each PE sends for ACCUM. With ``pingpong``
    ACCUM is a no-op (beats are taken at any time), and during a FINISH a START of the other
    accumulator is accepted as well (``accepts_during_finish``), without changing its cycles."""
    op = Op(cmd.op)
    if op is Op.ACCUM and pingpong:
        return 1
    if op is Op.ACCUM:
        n = max((beats_per_pe[j] for j in range(N_PE) if cmd.pe_mask >> j & 1), default=0)
        return 1 + n
    if op is Op.FINISH:
        return cmd.length + PPU_LAT
    if op is Op.END_BATCH:
        return 2
    return 1


def accepts_during_finish(cmd: PPUCommand, finish_acc: int, pingpong: int) -> bool:
    """PINGPONG=1: the one command a PPU accepts while a FINISH of ``finish_acc`` runs (from
    the cycle after its acceptance to the end of its occupancy): START of the other accumulator."""
    return bool(pingpong) and Op(cmd.op) is Op.START and int(cmd.acc) != int(finish_acc)
