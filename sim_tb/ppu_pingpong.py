"""PINGPONG=1 PPU runs: rows into both accumulators with interleaved beats and concurrent FINISHes.

``random_rows`` makes a constrained-random row sequence (the k-th row uses accumulator k mod 2,
as the group's k-th unit, docs/architecture.md 12.3); ``run_ppu_pingpong`` computes every
expected entry and status with ``golden.bitexact.ppu_model.PPUModel`` (PINGPONG=1), writes them
with the stimulus into one npz and runs the cocotb test ``sim_tb.ppu_pingpong_tb`` on a cached
build. The testbench orders the commands and beats as the group does (``ppu_pingpong_tb``) and
raises on any difference. numpy and the model only (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..arch.ppu import N_PE, Op, PPUCommand as Cmd, PPUConfig
from ..golden.bitexact.ppu_model import PPUModel
from ..golden.bitexact.rowops import Beat
from . import runner
from .ppu_driver import STATUS_FIELDS, _mask_words, cfg_dict, ppu_build, run_testbench

TB_MODULE = "sparsetrain.sim_tb.ppu_pingpong_tb"
CMD_FIELDS = ("op", "slot", "pe_mask", "length", "shift", "relu", "acc_g", "prune", "g_first",
              "c_m", "c_shift", "bias", "value", "acc")
# what a command in the stream is: a row's START, a row's FINISH, or another command
KIND_START, KIND_FINISH, KIND_OTHER = 0, 1, 2


@dataclass
class PingPongRow:
    """One result row: optional START(bias), the beats of each PE (into ``acc``), its FINISH, and
    the commands after it. ``start_late``: the next row's START follows this FINISH in the
    command stream (so the PPU takes it while the FINISH runs) instead of preceding it."""

    acc: int
    bias: int | None
    beats: list[list[Beat]]
    finish: Cmd
    after: list[Cmd] = field(default_factory=list)
    start_late: bool = False


@dataclass
class PingPongResult:
    entries: list[list[tuple[int, int, int]]]  # per FINISH (row order): the entries the RTL wrote
    finish_cycles: np.ndarray                   # per row: FINISH accept to last entry, inclusive
    blocked: np.ndarray                         # per row: cycles with out.valid & ~out.ready in it
    concurrent_starts: int                      # STARTs accepted while the other accumulator finished
    mixed_cycles: int                           # cycles with beats into both accumulators


def _log_uniform(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    mag = np.floor(2.0 ** (rng.random(n) * bits)).astype(np.int64) - 1
    return mag * rng.choice([-1, 1], n)


def _pe_beats(rng: np.random.Generator, cfg: PPUConfig, bits: int) -> list[Beat]:
    """0 .. 3 ops' beats (each ends with a ``last`` beat), as a PE sends them."""
    out: list[Beat] = []
    for _op in range(int(rng.integers(0, 4))):
        col, n = int(rng.integers(0, 4)), 0
        while col < cfg.w_max and n < 6 and rng.random() < 0.8:
            cnt = int(rng.integers(0, cfg.k_max + 1))
            out.append(Beat(col, cnt, tuple(int(v) for v in _log_uniform(rng, cnt, bits)), False))
            col += cnt + int(rng.integers(0, 3))
            n += 1
        out.append(Beat(min(col, cfg.w_max - 1), 0, (), True))
    return out


def random_rows(rng: np.random.Generator, cfg: PPUConfig, rows: int) -> list[PingPongRow]:
    """``rows`` random rows, row k into accumulator k mod 2, with random FINISH flags, FIFO pushes,
    batch ends, counter clears, re-seeds and (no-op) ACCUMs after some of them. The accumulator
    never saturates with mixed signs, so the result does not depend on the beats' timing."""
    w, dw = cfg.w_max, cfg.dw
    max_shift = min(cfg.acc_w - dw - 4, 20)
    out: list[PingPongRow] = []
    for k in range(rows):
        slot = int(rng.integers(cfg.n_slots))
        shift = int(rng.integers(0, max_shift + 1))
        bits = dw + shift - 2
        bias = int(_log_uniform(rng, 1, bits)[0]) if rng.random() < 0.6 else None
        beats = [_pe_beats(rng, cfg, bits - 1) for _ in range(N_PE)]
        fin = Cmd(Op.FINISH, slot=slot, length=int(rng.integers(0, w + 1)) if rng.random() < 0.9 else w,
                  shift=shift, relu=bool(rng.random() < 0.3), acc_g=bool(rng.random() < 0.6),
                  prune=bool(rng.random() < 0.7), g_first=bool(rng.random() < 0.2), acc=k % 2)
        after: list[Cmd] = []
        u = rng.random()
        if u < 0.2:
            tau = int(abs(_log_uniform(rng, 1, dw - 2)[0]))
            after.append(Cmd(Op.PUSH_TAU, slot=slot, value=tau))
        elif u < 0.27:
            after.append(Cmd(Op.END_BATCH, slot=slot, c_m=int(rng.integers(1 << 15, 1 << 16)),
                             c_shift=int(rng.integers(14, 30))))
        elif u < 0.3:
            after.append(Cmd(Op.CLEAR_COUNTS, slot=slot))
        elif u < 0.33:
            after.append(Cmd(Op.SEED, value=int(rng.integers(0, 1 << 32))))
        elif u < 0.36:
            after.append(Cmd(Op.ACCUM, pe_mask=int(rng.integers(0, 8))))
        out.append(PingPongRow(k % 2, bias, beats, fin, after, start_late=bool(rng.random() < 0.5)))
    return out


def command_stream(rows: Sequence[PingPongRow]) -> list[tuple[Cmd, int, int]]:
    """The commands in stream order as (command, kind, row): START(0), then per row k its FINISH
    with START(k+1) before or after it (``start_late``), then the row's other commands."""
    cmds: list[tuple[Cmd, int, int]] = []

    def start(k: int) -> None:
        if k < len(rows) and rows[k].bias is not None:
            cmds.append((Cmd(Op.START, bias=rows[k].bias, acc=rows[k].acc), KIND_START, k))

    start(0)
    for k, r in enumerate(rows):
        if not r.start_late:
            start(k + 1)
        cmds.append((r.finish, KIND_FINISH, k))
        if r.start_late:
            start(k + 1)
        cmds += [(c, KIND_OTHER, k) for c in r.after]
    return cmds


def write_stimulus(rows: Sequence[PingPongRow], cfg: PPUConfig, path: Path) -> dict:
    """Expected entries and statuses from the model (row order); the stimulus into ``path``."""
    if not cfg.pingpong:
        raise ValueError(f"PINGPONG = {cfg.pingpong} is out of range for a ping-pong run; allowed: 1")
    model = PPUModel(cfg)
    exp_entries, exp_status, exp_mask, beats = [], [], [], []
    for k, r in enumerate(rows):
        if r.bias is not None:
            model.start(r.bias, r.acc)
        for j in range(N_PE):
            for b in r.beats[j]:
                model.accumulate_cycle([b if i == j else None for i in range(N_PE)], [r.acc] * N_PE)
                beats.append([k, j, b.base, b.count, int(b.last)] + list(b.lanes) + [0] * (cfg.k_max - b.count))
        res = model.apply(r.finish)
        exp_entries += [[k, v, o, last] for v, o, last in res.entries]
        st = model.status(r.finish.slot)
        exp_status.append([getattr(st, f) for f in STATUS_FIELDS])
        exp_mask.append(_mask_words(st.relu_mask, cfg.w_max))
        for c in r.after:
            model.apply(c)
    final = model.status(rows[-1].finish.slot)
    cmds = command_stream(rows)
    np.savez(path,
             cmds=np.asarray([[c.as_dict()[f] for f in CMD_FIELDS] for c, _, _ in cmds], np.int64),
             kinds=np.asarray([[kind, k] for _, kind, k in cmds], np.int64).reshape(-1, 2),
             rows=np.asarray([[r.acc, r.bias is not None, r.finish.slot, r.finish.length] for r in rows], np.int64),
             beats=np.asarray(beats, np.int64).reshape(-1, 5 + cfg.k_max),
             exp_entries=np.asarray(exp_entries, np.int64).reshape(-1, 4),
             exp_status=np.asarray(exp_status, np.int64).reshape(-1, len(STATUS_FIELDS)),
             exp_mask=np.asarray(exp_mask, np.int64).reshape(len(rows), -1),
             final_status=np.asarray([getattr(final, f) for f in STATUS_FIELDS], np.int64),
             final_mask=np.asarray(_mask_words(final.relu_mask, cfg.w_max), np.int64))
    return {"finishes": len(rows)}


def run_ppu_pingpong(rows: Sequence[PingPongRow], cfg: PPUConfig, sim: str = "verilator", *,
                     seed: int | None = None, p_valid: float = 1.0, p_ready: float = 1.0,
                     workdir: Path | None = None,
                     stimulus_hook: Callable[[Path], None] | None = None) -> PingPongResult:
    """Run ``rows`` on the PINGPONG=1 RTL of ``cfg``; the testbench fails on any difference from
    the model or from the timing of docs/architecture.md 7.1 / 12.3 (with p_valid = p_ready = 1:
    every FINISH takes length + 3 cycles and starts, like every START, in the first cycle the
    contract allows)."""
    seed = runner.default_seed() if seed is None else seed
    runner.check_handshake_probabilities(p_valid, p_ready)
    b = ppu_build(cfg, sim)
    wdir = runner.run_folder(b, "ppu-pp-run-", workdir)
    stim = wdir / "stim.npz"
    write_stimulus(rows, cfg, stim)
    if stimulus_hook is not None:
        stimulus_hook(stim)
    r, entries = run_testbench(b, TB_MODULE, cfg, wdir, seed, p_valid, p_ready, len(rows), "PPU ping-pong")
    return PingPongResult(entries, r["finish_cycles"], r["blocked"], int(r["concurrent_starts"]),
                          int(r["mixed_cycles"]))
