"""PPU stimulus: directed cases and constrained-random command sequences (numpy only).

Every function returns a list of ``ppu_driver.PpuTxn``; the expected results come from
``golden.bitexact.ppu_model`` when the driver writes the stimulus.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..arch.fixedpoint import sat_limit
from ..arch.ppu import N_PE, Op, PPUCommand as Cmd, PPUConfig
from ..golden.bitexact.ppu_model import threshold_constant
from ..golden.bitexact.rowops import Beat
from .ppu_driver import PpuTxn


def row_beats(values: Sequence[int], k_max: int, *, base: int = 0) -> list[Beat]:
    """A dense run of values starting at column ``base`` as consecutive full beats (+ last)."""
    vals = [int(v) for v in values]
    beats = [Beat(base + i, min(k_max, len(vals) - i), tuple(vals[i:i + k_max]), False)
             for i in range(0, len(vals), k_max)]
    if not beats:
        return [Beat(0, 0, (), True)]
    b = beats[-1]
    beats[-1] = Beat(b.base, b.count, b.lanes, True)
    return beats


def load_row(values: Sequence[int], cfg: PPUConfig, *, pe: int = 0, bias: int = 0) -> list[PpuTxn]:
    """START + one ACCUM from one PE that puts ``values`` (accumulator scale) into the row."""
    beats = [[] for _ in range(N_PE)]
    beats[pe] = row_beats(values, cfg.k_max)
    return [PpuTxn(Cmd(Op.START, bias=bias)), PpuTxn(Cmd(Op.ACCUM, pe_mask=1 << pe), beats)]


def fill_fifo(slot: int, tau: int, n_f: int) -> list[PpuTxn]:
    return [PpuTxn(Cmd(Op.PUSH_TAU, slot=slot, value=tau), index=i) for i in range(n_f)]


def directed_txns(cfg: PPUConfig) -> list[PpuTxn]:
    """Each operation alone with its corner cases (docs/verification.md, PPU)."""
    w, k, dw = cfg.w_max, cfg.k_max, cfg.dw
    lim, acc_lim = sat_limit(dw), sat_limit(cfg.acc_w)
    t: list[PpuTxn] = []
    # all-zero rows: no START at all, a cleared row with pruning on (FIFO not full), full length
    t.append(PpuTxn(Cmd(Op.FINISH, length=w, shift=0, prune=True, gta=True, g_first=True)))
    t.append(PpuTxn(Cmd(Op.FINISH, length=1, shift=3)))
    t.append(PpuTxn(Cmd(Op.FINISH, length=0, shift=0)))
    # bias preload only, ReLU with positive and negative bias (mask all / none)
    t += [PpuTxn(Cmd(Op.START, bias=5)), PpuTxn(Cmd(Op.FINISH, length=w, shift=1, relu=True))]
    t += [PpuTxn(Cmd(Op.START, bias=-5)), PpuTxn(Cmd(Op.FINISH, length=w, shift=1, relu=True))]
    # negative values rounding to zero and ties to even, both signs, every small shift
    ties = [-1, -2, -3, -4, -5, -6, 1, 2, 3, 5, 6, -7, 7, -8, 8, -12][:w]
    for s in (1, 2, 3):
        t += load_row(ties, cfg) + [PpuTxn(Cmd(Op.FINISH, length=len(ties), shift=s))]
    # requantisation saturation (both signs, shift 0 and a large shift), ReLU on a saturated row
    big = [lim + 1, -(lim + 1), acc_lim, -acc_lim, lim, -lim, (lim + 1) << 9, -((lim + 1) << 9)]
    for s, relu in ((0, False), (9, False), (0, True), (cfg.acc_w - 1, False)):
        t += load_row(big, cfg) + [PpuTxn(Cmd(Op.FINISH, length=len(big), shift=s, relu=relu))]
    # accumulator saturation: every PE adds the largest same-sign lanes to a saturated bias
    for sign in (1, -1):
        beats = [row_beats([sign * acc_lim] * w, k) for _ in range(N_PE)]
        t += [PpuTxn(Cmd(Op.START, bias=sign * acc_lim)), PpuTxn(Cmd(Op.ACCUM, pe_mask=7), beats),
              PpuTxn(Cmd(Op.ACCUM, pe_mask=7), [row_beats([sign * acc_lim] * w, k) for _ in range(N_PE)]),
              PpuTxn(Cmd(Op.FINISH, length=w, shift=cfg.acc_w - dw))]
    # beats with garbage above count, a beat crossing W_MAX, an empty last beat, 3 PEs at once
    cross = [Beat(w - 2, min(k, 4), tuple(range(1, min(k, 4) + 1)), True)]
    mixed = [row_beats(range(1, 9), k), [Beat(3, 2, (100, -100), False), Beat(0, 0, (), True)], cross]
    t += [PpuTxn(Cmd(Op.START)), PpuTxn(Cmd(Op.ACCUM, pe_mask=7), mixed, garbage_lanes=True),
          PpuTxn(Cmd(Op.ACCUM, pe_mask=0)), PpuTxn(Cmd(Op.FINISH, length=w, shift=0))]
    # FIFO not yet full: pruning requested but off (no draw: rng_state must not move)
    t += [PpuTxn(Cmd(Op.CLEAR_SLOT, slot=1))] + fill_fifo(1, 40, cfg.n_f - 1)
    ramp = [(7 * i) % 61 - 30 for i in range(w)]
    t += load_row(ramp, cfg) + [PpuTxn(Cmd(Op.FINISH, length=w, shift=0, prune=True, slot=1))]
    # values exactly at tau, one below / above, both signs; then the same rows with tau = 0
    at = [40, -40, 39, -39, 41, -41, 1, -1, 0, 20, -20]
    t += fill_fifo(1, 40, 1)  # now full with all entries 40: predicted tau = 40
    for _ in range(3):
        t += load_row(at, cfg) + [PpuTxn(Cmd(Op.FINISH, length=len(at), shift=0, prune=True, slot=1,
                                               gta=True))]
    t += fill_fifo(2, 0, cfg.n_f)
    t += load_row(at, cfg) + [PpuTxn(Cmd(Op.FINISH, length=len(at), shift=0, prune=True, slot=2))]
    # FIFO wrapping: 3 * N_F + 1 pushes of distinct values, predicted mean after each
    for i in range(3 * cfg.n_f + 1):
        t.append(PpuTxn(Cmd(Op.PUSH_TAU, slot=3 % cfg.n_slots, value=(97 * i + 13) % (lim + 1)),
                        index=i % cfg.n_f))
    t.append(PpuTxn(Cmd(Op.PUSH_TAU, slot=0, value=lim)))  # largest threshold
    # END_BATCH arithmetic: rounding, saturation of tau (shift 0), the largest shift, C_m = 0
    t += [PpuTxn(Cmd(Op.CLEAR_SLOT, slot=0))]
    t += load_row([lim, -lim, 3, -7] * (w // 4), cfg) + [
        PpuTxn(Cmd(Op.FINISH, length=w, shift=0, gta=True, g_first=True, slot=0))]
    c_m, c_sh = threshold_constant(0.9, w)
    for cm, cs in ((c_m, c_sh), (0xFFFF, 0), (0x8000, 63), (0, 5), (0x8001, 16)):
        t += load_row([lim, -lim, 3, -7] * (w // 4), cfg) + [
            PpuTxn(Cmd(Op.FINISH, length=w, shift=0, gta=True, slot=0)),
            PpuTxn(Cmd(Op.END_BATCH, slot=0, c_m=cm, c_shift=cs), index=cfg.n_f - 1)]
    # counters: clear counts, clear slot
    t += [PpuTxn(Cmd(Op.CLEAR_COUNTS, slot=1)), PpuTxn(Cmd(Op.CLEAR_SLOT, slot=3 % cfg.n_slots))]
    # re-seeding: explicit seed, seed 0 (= elaboration seed), pruning after each
    for seed in (1, 0xFFFFFFFF, 0):
        t.append(PpuTxn(Cmd(Op.SEED, value=seed)))
        t += load_row([5, -5, 17, -33, 2, -2] * 2, cfg) + [
            PpuTxn(Cmd(Op.FINISH, length=12, shift=0, prune=True, slot=1))]
    # reset in the middle of a sequence: every state returns to its reset value
    t.append(PpuTxn.reset())
    t += load_row([5, -5, 17, -33], cfg) + [PpuTxn(Cmd(Op.FINISH, length=4, shift=0, prune=True, slot=1))]
    return t


def _log_uniform(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Signed values with log-uniform magnitudes up to 2**bits (zeros and tiny values included)."""
    mag = np.floor(2.0 ** (rng.random(n) * bits)).astype(np.int64) - 1
    return mag * rng.choice([-1, 1], n)


def random_txns(rng: np.random.Generator, cfg: PPUConfig, rows: int, *, with_status_ops: bool = True
                ) -> list[PpuTxn]:
    """``rows`` random rows (START, 0-3 ACCUMs of random PE sets, FINISH with random flags) with
    random FIFO pushes, batch ends, counter clears and re-seeds in between. The accumulator
    never saturates with mixed signs, so the result is independent of beat timing."""
    w, k, dw = cfg.w_max, cfg.k_max, cfg.dw
    max_shift = min(cfg.acc_w - dw - 4, 20)
    t: list[PpuTxn] = []
    for _ in range(rows):
        slot = int(rng.integers(cfg.n_slots))
        shift = int(rng.integers(0, max_shift + 1))
        bits = dw + shift + 1
        t.append(PpuTxn(Cmd(Op.START, bias=int(_log_uniform(rng, 1, bits - 2)[0]))))
        for _a in range(int(rng.integers(0, 4))):
            mask = int(rng.integers(0, 1 << N_PE))
            beats: list[list[Beat]] = [[] for _ in range(N_PE)]
            for j in range(N_PE):
                if mask >> j & 1:
                    col, bl = int(rng.integers(0, 4)), []
                    while col < w and rng.random() < 0.85:
                        cnt = int(rng.integers(0, k + 1))
                        bl.append(Beat(col, cnt, tuple(int(v) for v in _log_uniform(rng, cnt, bits - 3)), False))
                        col += cnt + int(rng.integers(0, 3))
                    bl.append(Beat(min(col, w - 1), 0, (), True) if rng.random() < 0.3 or not bl
                              else Beat(bl[-1].base, bl[-1].count, bl[-1].lanes, True))
                    if len(bl) > 1 and bl[-1].count:
                        bl.pop(-2)
                    beats[j] = bl
            t.append(PpuTxn(Cmd(Op.ACCUM, pe_mask=mask), beats, garbage_lanes=bool(rng.random() < 0.2)))
        t.append(PpuTxn(Cmd(Op.FINISH, slot=slot, length=int(rng.integers(1, w + 1)), shift=shift,
                            relu=bool(rng.random() < 0.3), gta=bool(rng.random() < 0.6),
                            prune=bool(rng.random() < 0.7), g_first=bool(rng.random() < 0.2)),
                        index=int(rng.integers(cfg.n_f))))
        if with_status_ops:
            u = rng.random()
            if u < 0.25:
                tau = int(_log_uniform(rng, 1, dw - 2)[0])
                t.append(PpuTxn(Cmd(Op.PUSH_TAU, slot=slot, value=abs(tau)), index=int(rng.integers(cfg.n_f))))
            elif u < 0.32:
                t.append(PpuTxn(Cmd(Op.END_BATCH, slot=slot, c_m=int(rng.integers(1 << 15, 1 << 16)),
                                    c_shift=int(rng.integers(14, 30))), index=int(rng.integers(cfg.n_f))))
            elif u < 0.34:
                t.append(PpuTxn(Cmd(Op.CLEAR_COUNTS, slot=slot)))
            elif u < 0.36:
                t.append(PpuTxn(Cmd(Op.SEED, value=int(rng.integers(0, 1 << 32)))))
            elif u < 0.37:
                t.append(PpuTxn(Cmd(Op.CLEAR_SLOT, slot=slot)))
    return t


def gradient_row_txns(g_rows: np.ndarray, cfg: PPUConfig, *, slot: int, shift: int, g_first: bool,
                      prune: bool = True) -> list[PpuTxn]:
    """GTA rows: each row of accumulator-scale integers enters through PE 0 (and PE 1 adds the
    second half, so two PEs overlap), then FINISH with g/|g| accumulation and pruning."""
    t: list[PpuTxn] = []
    for r, row in enumerate(np.asarray(g_rows, dtype=np.int64)):
        half = row // 2
        beats = [row_beats(half, cfg.k_max), row_beats(row - half, cfg.k_max), []]
        t += [PpuTxn(Cmd(Op.START)), PpuTxn(Cmd(Op.ACCUM, pe_mask=0b011), beats),
              PpuTxn(Cmd(Op.FINISH, slot=slot, length=len(row), shift=shift, gta=True, prune=prune,
                         g_first=g_first and r == 0))]
    return t
