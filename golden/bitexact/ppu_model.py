"""Bit-accurate model of the PPU (docs/architecture.md sections 7 and 7.1).

Every PPU operation is modelled on Python ints: the row accumulator, requantisation, ReLU,
the g / |g| accumulators, the xorshift32 sequence, stochastic pruning, compression into the
sparse row format, the per-layer threshold FIFOs and the fixed-point threshold arithmetic.
``PPUModel`` is the transaction-level reference that testbench scoreboards compare the RTL
with, bit for bit. The PPU's parameters, commands and command timing (section 7.1) are the
contract in ``sparsetrain.arch.ppu``.

No torch, no simulator: the model is importable anywhere (including inside cocotb).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

from ...arch.dbtd import ThresholdFIFO, threshold_coefficient
from ...arch.fixedpoint import check_param, off_end, rne_shift, sat, sat_unsigned
from ...arch.ppu import C_M_BITS, C_SHIFT_MAX, DEFAULT_SEED, MASK32, N_PE, Op, PPUCommand, PPUConfig, _is_pow2
from .rowops import Beat


# ----------------------------------------------------------------------------- random numbers

class Xorshift32:
    """Marsaglia's xorshift32 (13, 17, 5): the PPU's pseudo-random generator (section 7)."""

    def __init__(self, seed: int = DEFAULT_SEED):
        check_param("seed", seed, 1, MASK32, allowed="1 .. 2**32-1 (xorshift32 state, non-zero)")
        self.state = int(seed)

    @staticmethod
    def next_state(x: int) -> int:
        x ^= (x << 13) & MASK32
        x ^= x >> 17
        x ^= (x << 5) & MASK32
        return x

    def step(self) -> int:
        self.state = self.next_state(self.state)
        return self.state

    def draw(self, r_w: int) -> int:
        """Step once and return the top r_w bits of the new state."""
        return self.step() >> (32 - r_w)


# ----------------------------------------------------------------------------- threshold arithmetic

def threshold_constant(p: float, n: int, estimator: str = "unbiased") -> tuple[int, int]:
    """(C_m, C_shift) with C_m in 2**15 .. 2**16-1, C_m * 2**-C_shift nearest to c_p / n."""
    check_param("n", n, 1, 1 << 62)
    c_p = threshold_coefficient(p, estimator)
    if c_p == 0.0:
        raise ValueError(f"p = {p!r} is out of range for a threshold constant (c_p = 0: switch pruning off "
                         "instead); allowed: 0 < p < 1")
    c = c_p / n
    shift = (C_M_BITS - 1) - math.floor(math.log2(c))
    c_m = round(c * 2.0 ** shift)
    if c_m >= 1 << C_M_BITS:     # rounding carried into a new bit
        c_m >>= 1
        shift -= 1
    if c_m < 1 << (C_M_BITS - 1):  # log2 rounded the other way
        shift += 1
        c_m = round(c * 2.0 ** shift)
    if not 0 <= shift <= C_SHIFT_MAX:
        raise ValueError(f"C_shift = {shift} is out of range; allowed: 0 .. {C_SHIFT_MAX} "
                         f"(c_p / n = {c!r} for p = {p}, n = {n})")
    return int(c_m), int(shift)


def tau_batch(abs_sum: int, c_m: int, c_shift: int, dw: int) -> int:
    """Threshold of a batch: sat_(DW-1)u(rne_shift(C_m * A, C_shift))."""
    check_param("C_m", c_m, 0, (1 << C_M_BITS) - 1)
    check_param("C_shift", c_shift, 0, C_SHIFT_MAX)
    return int(sat_unsigned(rne_shift(int(c_m) * int(abs_sum), int(c_shift)), dw - 1))


def prune_value(g: int, tau: int, rng: Xorshift32, r_w: int) -> int:
    """Stochastic pruning of one requantised gradient (section 7); steps rng only if 0 < |g| < tau."""
    a = abs(int(g))
    if a >= tau or a == 0:
        return int(g)
    r = rng.draw(r_w)
    if (a << r_w) > tau * r:
        return tau if g > 0 else -tau
    return 0


class PPUThresholdFIFO(ThresholdFIFO):
    """The PPU's threshold FIFO of one slot: integer thresholds, N_F a power of two, and the mean
    is ``rne_shift(sum, log2 N_F)``, reported in every state (meaningful once full)."""

    def __init__(self, n_f: int):
        if not _is_pow2(n_f):
            raise ValueError(f"N_F = {n_f} is out of range; allowed: a power of two in 1 .. 64")
        super().__init__(n_f)

    def mean(self) -> int:
        return int(rne_shift(int(self.total), self.depth.bit_length() - 1))

    def push(self, tau: int) -> None:
        super().push(int(tau))


# ----------------------------------------------------------------------------- transactions

@dataclass
class PPUStatus:
    """What the readback interface shows for one slot (and one FIFO entry index)."""

    row_nnz: int
    g_sum: int
    relu_mask: int
    rng_state: int
    abs_sum: int
    tau_pred: int
    fifo_count: int
    fifo_full: int
    layer_nnz: int
    layer_elems: int
    fifo_entry: int

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass
class FinishResult:
    entries: list[tuple[int, int, int]]  # (value, offset, last) as on the out stream
    dense: np.ndarray                    # the row after pruning (length long)
    unpruned: np.ndarray                 # requantised (and ReLU'd) row before pruning
    draws: int                           # random numbers drawn


@dataclass
class _Slot:
    fifo: PPUThresholdFIFO
    abs_sum: int = 0
    layer_nnz: int = 0
    layer_elems: int = 0


@dataclass
class PPUModel:
    """Transaction-level, bit-accurate PPU: apply commands, read the status.

    With ``cfg.pingpong`` (section 12.3) there are two row accumulators (``accs``): START and
    FINISH name one (``acc``), every beat names the one it adds into, and ACCUM is a no-op
    (the beats are taken at any time). ``acc`` is accumulator 0."""

    cfg: PPUConfig = field(default_factory=PPUConfig)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        self.accs = [[0] * c.w_max for _ in range(c.n_acc)]
        self.rng = Xorshift32(c.seed)
        self.slots = [_Slot(PPUThresholdFIFO(c.n_f)) for _ in range(c.n_slots)]
        self.g_sum = 0
        self.row_nnz = 0
        self.relu_mask = 0

    @property
    def acc(self) -> list[int]:
        return self.accs[0]

    @acc.setter
    def acc(self, lanes: list[int]) -> None:
        self.accs[0] = lanes

    # -- validation shared by the ops
    def _slot(self, slot: int) -> _Slot:
        return self.slots[check_param("slot", slot, 0, self.cfg.n_slots - 1)]

    def _acc(self, acc: int) -> int:
        return check_param("acc", acc, 0, self.cfg.n_acc - 1,
                           allowed=f"0 .. {self.cfg.n_acc - 1} (PINGPONG={self.cfg.pingpong})")

    # -- the operations
    def start(self, bias: int = 0, acc: int = 0) -> None:
        lim = (1 << (self.cfg.acc_w - 1)) - 1
        check_param("bias", bias, -lim, lim)
        self.accs[self._acc(acc)] = [int(bias)] * self.cfg.w_max

    def accumulate_cycle(self, beats: Sequence[Beat | None], accs: Sequence[int] | None = None) -> None:
        """Add the beats accepted in one cycle (one per PE at most): exact sum, one saturation
        per accumulator; ``accs[j]`` is the accumulator of PE j's beat (default 0)."""
        adds = [[0] * self.cfg.w_max for _ in range(self.cfg.n_acc)]
        for j, beat in enumerate(beats):
            if beat is None:
                continue
            add = adds[self._acc(accs[j] if accs is not None else 0)]
            for i in range(beat.count):
                x = beat.base + i
                if x < self.cfg.w_max:
                    add[x] += int(beat.lanes[i])
        for a, add in enumerate(adds):
            if any(add):
                self.accs[a] = [sat(v + d, self.cfg.acc_w) for v, d in zip(self.accs[a], add)]

    def accumulate(self, beats_per_pe: Sequence[Sequence[Beat]], pe_mask: int | None = None) -> int:
        """ACCUM with no stalls: PE j's t-th beat is accepted in cycle t (lock-step order).

        Returns the number of beat cycles (max over the PEs in the mask). Without saturation
        the result does not depend on the order (section 2); with saturation only
        same-sign contributions are order-independent.
        """
        if pe_mask is None:
            pe_mask = sum(1 << j for j, b in enumerate(beats_per_pe) if b)
        check_param("pe_mask", pe_mask, 0, (1 << N_PE) - 1)
        if self.cfg.pingpong:  # beats are taken at any time (accumulate_cycle); ACCUM does nothing
            return 0
        lists = [list(beats_per_pe[j]) if pe_mask >> j & 1 else [] for j in range(N_PE)]
        for j, bl in enumerate(lists):
            if bl and (not bl[-1].last or any(b.last for b in bl[:-1])):
                raise ValueError(f"beats of PE {j} must end with exactly one last beat")
            if pe_mask >> j & 1 and not bl:
                raise ValueError(f"pe_mask = {pe_mask} names PE {j}, which has no beats")
        n = max((len(bl) for bl in lists), default=0)
        for t in range(n):
            self.accumulate_cycle([bl[t] if t < len(bl) else None for bl in lists])
        return n

    def finish(self, length: int, shift: int, *, relu: bool = False, acc_g: bool = False,
               prune: bool = False, g_first: bool = False, slot: int = 0, acc: int = 0) -> FinishResult:
        c = self.cfg
        a = self._acc(acc)
        check_param("length", length, 0, c.w_max)
        check_param("shift", shift, 0, c.acc_w - 1)
        st = self._slot(slot)
        prune_on = prune and st.fifo.full
        tau = st.fifo.mean()
        cnt_max = (1 << c.cnt_w) - 1
        if g_first:
            self.g_sum = 0
        self.row_nnz, self.relu_mask = 0, 0
        out = np.zeros(length, np.int64)
        unpruned = np.zeros(length, np.int64)
        draws = 0
        for x in range(length):
            q = int(sat(rne_shift(self.accs[a][x], shift), c.dw))
            if relu:
                q = max(q, 0)
            if q > 0:
                self.relu_mask |= 1 << x
            unpruned[x] = q
            if acc_g:
                self.g_sum = sat(self.g_sum + q, c.g_w)
                st.abs_sum = sat_unsigned(st.abs_sum + abs(q), c.sum_w)
            if prune_on:
                before = self.rng.state
                q = prune_value(q, tau, self.rng, c.r_w)
                draws += self.rng.state != before
            out[x] = q
            if q != 0:
                self.row_nnz += 1
                st.layer_nnz = min(cnt_max, st.layer_nnz + 1)
            st.layer_elems = min(cnt_max, st.layer_elems + 1)
        self.accs[a] = [0] * c.w_max
        offs = np.flatnonzero(out)
        if offs.size == 0:
            entries = [(0, off_end(c.w_max), 1)]
        else:
            entries = [(int(out[o]), int(o), int(i == offs.size - 1)) for i, o in enumerate(offs)]
        return FinishResult(entries, out, unpruned, draws)

    def end_batch(self, slot: int, c_m: int, c_shift: int, tau: int | None = None) -> int:
        """Push tau_batch of the slot's own sum|g| (or ``tau``: the core controller's threshold of
        every group's sum, section 11.3) and clear the sum."""
        st = self._slot(slot)
        if tau is None:
            tau = tau_batch(st.abs_sum, c_m, c_shift, self.cfg.dw)
        else:
            check_param("tau", tau, 0, (1 << self.cfg.tau_w) - 1)
        st.fifo.push(tau)
        st.abs_sum = 0
        return tau

    def push_tau(self, slot: int, value: int) -> None:
        check_param("value", value, 0, (1 << self.cfg.tau_w) - 1)
        self._slot(slot).fifo.push(value)

    def clear_slot(self, slot: int) -> None:
        st = self._slot(slot)
        st.fifo.clear()
        st.abs_sum = st.layer_nnz = st.layer_elems = 0

    def clear_counts(self, slot: int) -> None:
        st = self._slot(slot)
        st.layer_nnz = st.layer_elems = 0

    def seed(self, value: int) -> None:
        check_param("value", value, 0, MASK32)
        self.rng.state = int(value) or self.cfg.seed

    # -- dispatch used by scoreboards
    def apply(self, cmd: PPUCommand, beats: Sequence[Sequence[Beat]] | None = None) -> FinishResult | int | None:
        """Apply one command; FINISH returns its FinishResult, END_BATCH the pushed tau."""
        op = Op(cmd.op)
        if op is Op.START:
            return self.start(cmd.bias, cmd.acc)
        if op is Op.ACCUM:
            return self.accumulate(beats or [[]] * N_PE, cmd.pe_mask)
        if op is Op.FINISH:
            return self.finish(cmd.length, cmd.shift, relu=cmd.relu, acc_g=cmd.acc_g, prune=cmd.prune,
                               g_first=cmd.g_first, slot=cmd.slot, acc=cmd.acc)
        if op is Op.END_BATCH:
            return self.end_batch(cmd.slot, cmd.c_m, cmd.c_shift,
                                  cmd.value & ((1 << self.cfg.tau_w) - 1) if cmd.tau_ext else None)
        if op is Op.PUSH_TAU:
            return self.push_tau(cmd.slot, cmd.value)
        if op is Op.CLEAR_SLOT:
            return self.clear_slot(cmd.slot)
        if op is Op.CLEAR_COUNTS:
            return self.clear_counts(cmd.slot)
        return self.seed(cmd.value)

    def status(self, slot: int, index: int = 0) -> PPUStatus:
        st = self._slot(slot)
        check_param("index", index, 0, self.cfg.n_f - 1)
        entries = st.fifo.entries
        return PPUStatus(
            row_nnz=self.row_nnz, g_sum=self.g_sum, relu_mask=self.relu_mask,
            rng_state=self.rng.state, abs_sum=st.abs_sum, tau_pred=st.fifo.mean(),
            fifo_count=len(entries), fifo_full=int(st.fifo.full), layer_nnz=st.layer_nnz,
            layer_elems=st.layer_elems, fifo_entry=entries[index] if index < len(entries) else 0)


def prune_row(g: Sequence[int] | np.ndarray, tau: int, rng: Xorshift32, r_w: int) -> np.ndarray:
    """Stochastic pruning of a row of requantised gradients in column order (the FINISH order)."""
    return np.array([prune_value(int(v), int(tau), rng, r_w) for v in np.asarray(g).ravel()], np.int64)
