"""Run PE operations on the RTL from plain Python: ``run_pe_ops(ops, params, sim=...)``.

Everything that needs numpy-heavy work (golden results, packing) happens here, outside the
simulator; the cocotb process (``sim_tb.pe_tb``) only reads the stimulus file, drives the
ports, compares with the expected beats and cycle counts and writes what it saw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..arch.fixedpoint import SparseRow, check_param
from ..arch.pe import HwParams
from ..arch.timing import Mode, OpTiming, msrc_skips, op_timing, osrc_skips, schedule
from ..golden.bitexact.rowops import Beat, RowOpResult, conv_out_len, msrc, osrc, src
from . import runner

TB_MODULE = "sparsetrain.sim_tb.pe_tb"
CFG_FIELDS = ("mode", "k", "stride2", "pad", "in_len", "out_len")


@dataclass
class PeOp:
    """One PE operation (docs/architecture.md section 5).

    ``row`` is the Port-1 row (I for SRC/OSRC, dO for MSRC); ``grad`` the Port-2 dO row
    (OSRC); ``weights`` the K weights (SRC/MSRC); ``mask`` the dI mask (MSRC, its length is
    the dI row length). ``raw_cfg`` sends these cfg fields as they are and expects the PE
    to refuse the operation (used to test out-of-range run-time values).
    """

    mode: Mode
    k: int
    stride: int = 1
    pad: int = 0
    weights: Sequence[int] | None = None
    row: SparseRow | None = None
    grad: SparseRow | None = None
    mask: Sequence[int] | None = None
    out_len: int | None = None
    raw_cfg: dict | None = None

    @classmethod
    def src(cls, weights: Sequence[int], row: SparseRow, stride: int = 1, pad: int = 0,
            out_len: int | None = None) -> "PeOp":
        return cls(Mode.SRC, len(weights), stride, pad, weights=list(weights), row=row, out_len=out_len)

    @classmethod
    def msrc(cls, weights: Sequence[int], grad: SparseRow, mask: Sequence[int], stride: int = 1,
             pad: int = 0) -> "PeOp":
        return cls(Mode.MSRC, len(weights), stride, pad, weights=list(weights), row=grad, mask=list(mask))

    @classmethod
    def osrc(cls, row: SparseRow, grad: SparseRow, k: int, stride: int = 1, pad: int = 0) -> "PeOp":
        return cls(Mode.OSRC, k, stride, pad, row=row, grad=grad)

    @classmethod
    def refused(cls, **cfg: int) -> "PeOp":
        return cls(Mode.SRC, 1, raw_cfg=cfg)

    def cfg(self) -> dict[str, int]:
        if self.raw_cfg is not None:
            return {f: int(self.raw_cfg.get(f, 0)) for f in CFG_FIELDS}
        if self.mode is Mode.SRC:
            out_len = self.out_len or conv_out_len(self.row.length, self.k, self.stride, self.pad)
            in_len = self.row.length
        elif self.mode is Mode.MSRC:
            in_len, out_len = self.row.length, len(self.mask)
        else:
            in_len, out_len = self.row.length, self.grad.length
        return {"mode": int(self.mode), "k": self.k, "stride2": int(self.stride == 2), "pad": self.pad,
                "in_len": in_len, "out_len": out_len}

    def golden(self, acc_w: int, lookahead: int = 1) -> RowOpResult | None:
        """The bit-accurate reference, or None for a refused operation."""
        if self.raw_cfg is not None:
            return None
        if self.mode is Mode.SRC:
            return src(self.weights, self.row, stride=self.stride, pad=self.pad, out_len=self.out_len, acc_w=acc_w)
        if self.mode is Mode.MSRC:
            return msrc(self.weights, self.row, self.mask, stride=self.stride, pad=self.pad, acc_w=acc_w,
                        lookahead=lookahead)
        return osrc(self.row, self.grad, self.k, stride=self.stride, pad=self.pad, acc_w=acc_w)


    def timing(self, lookahead: int = 1, osrc_window: int = 1) -> OpTiming:
        """L and C of this op for arch.timing.schedule (docs/architecture.md 6.1)."""
        if self.raw_cfg is not None:
            return op_timing(Mode.SRC, 0, 0, refused=True)
        skips = None
        if self.mode is Mode.MSRC and lookahead != 1:
            skips = msrc_skips(self.row.offsets.tolist(), list(self.mask), self.k, self.stride, self.pad)
        if self.mode is Mode.OSRC and osrc_window != 1:
            skips = osrc_skips(self.row.offsets.tolist(), self.grad.offsets.tolist(), self.k, self.stride, self.pad)
        n2 = self.grad.entries if self.mode is Mode.OSRC else 0
        return op_timing(self.mode, self.k, self.row.entries, n2, skips=skips, lookahead=lookahead,
                         osrc_window=osrc_window)


@dataclass
class PeConfig:
    """The second-generation elaboration parameters of the PE under test (defaults: first gen)."""

    prefetch: bool = False
    lookahead: int = 1
    osrc_window: int = 1

    @property
    def tag(self) -> str:
        return ("p" if self.prefetch else "") + (f"l{self.lookahead}" if self.lookahead != 1 else "") + \
            (f"o{self.osrc_window}" if self.osrc_window != 1 else "")


@dataclass
class PeOpResult:
    """What the RTL did for one operation."""

    beats: list[Beat]
    cycles: int          # cfg handshake to final-beat handshake, inclusive
    stalls: int          # cycles in that span in which the PE made no progress
    cfg_error: bool      # the cfg_error output when the final beat left
    expected: RowOpResult | None = None
    aborted: bool = False  # the op was cut short by a reset (no beats/cycles checked)
    cfg_cycle: int = 0     # testbench cycle of the cfg handshake
    final_cycle: int = 0   # testbench cycle of the final-beat handshake

    @property
    def dense(self) -> np.ndarray:
        return _beats_dense(self.beats, len(self.expected.dense) if self.expected is not None else 0)


def _beats_dense(beats: Iterable[Beat], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for b in beats:
        out[b.base:b.base + b.count] = b.lanes[:b.count]
    return out


def _pack_entries(entries: list[tuple[int, int, int]], p: HwParams) -> list[int]:
    vmask = (1 << p.dw) - 1
    return [(v & vmask) | (o << p.dw) | (last << (p.dw + p.off_w)) for v, o, last in entries]


def _pack_cfg(cfg: dict[str, int], p: HwParams) -> int:
    widths = {"mode": 2, "k": p.k_w, "stride2": 1, "pad": p.k_w, "in_len": p.off_w, "out_len": p.off_w}
    out, pos = 0, 0
    for f in CFG_FIELDS:
        val = cfg[f]
        if not 0 <= val < (1 << widths[f]):
            raise ValueError(f"cfg.{f} = {val} is out of range; allowed: 0 .. {(1 << widths[f]) - 1}")
        out |= val << pos
        pos += widths[f]
    return out


def check_op(op: PeOp, p: HwParams) -> None:
    """Reject operations the PE instance cannot represent (ValueError naming the field)."""
    if op.raw_cfg is not None:
        return
    check_param("K", op.k, 1, p.k_max)
    check_param("stride", op.stride)
    check_param("pad", op.pad, 0, op.k - 1)
    cfg = op.cfg()
    check_param("in_len", cfg["in_len"], 1, p.w_max)
    check_param("out_len", cfg["out_len"], 1, p.w_max)
    if op.mode is not Mode.OSRC:
        if op.weights is None or len(op.weights) != op.k:
            raise ValueError(f"weights = {op.weights!r} is out of range; allowed: exactly K = {op.k} values")


def write_stimulus(ops: Sequence[PeOp], p: HwParams, path: Path, *, check: bool = True,
                   config: PeConfig = PeConfig()) -> list[RowOpResult | None]:
    """Pack ``ops`` and their golden results into ``path`` (npz); returns the golden results.

    exp_cycles: each op's cycles alone (arch.timing, cfg to final beat); exp_a / exp_f: the
    cfg and final-beat cycles of the whole back-to-back sequence with no stalls (cycle 1 = the
    first cfg), from arch.timing.schedule."""
    cfg, p1, p1_op, p2, p2_op, masks, mask_op = [], [], [], [], [], [], []
    exp_cycles, exp_error, beats = [], [], []
    goldens = []
    timings = []
    lim = (1 << (p.dw - 1))
    for i, op in enumerate(ops):
        check_op(op, p)
        cfg.append(_pack_cfg(op.cfg(), p))
        g = op.golden(p.acc_w, config.lookahead)
        goldens.append(g)
        t = op.timing(config.lookahead, config.osrc_window)
        timings.append(t)
        exp_cycles.append(schedule([t], config.prefetch)[0].cycles)
        if g is None:
            exp_error.append(1)
            beats.append([i, 0, 0, 1] + [0] * p.k_max)
            continue
        exp_error.append(0)
        for b in g.beats:
            beats.append([i, b.base, b.count, int(b.last)] + list(b.lanes) + [0] * (p.k_max - b.count))
        row_entries = op.row.stream(p.w_max)
        if any(not -lim < v < lim for v, _, _ in row_entries):
            raise ValueError(f"row value is out of range; allowed: +-{lim - 1} (DW = {p.dw})")
        e1 = _pack_entries(row_entries, p)
        p1 += e1
        p1_op += [i] * len(e1)
        if op.mode is Mode.OSRC:
            e2 = _pack_entries(op.grad.stream(p.w_max), p)
        else:
            e2 = _pack_entries([(int(w), j, int(j == op.k - 1)) for j, w in enumerate(op.weights)], p)
        p2 += e2
        p2_op += [i] * len(e2)
        if op.mode is Mode.MSRC:
            bits = np.zeros(p.w_max, dtype=np.uint8)
            bits[:len(op.mask)] = np.asarray(op.mask, dtype=bool)
            masks.append(bits)
            mask_op.append(i)
    sched = schedule(timings, config.prefetch)
    np.savez(path,
             cfg=np.asarray(cfg, dtype=np.uint64), p1=np.asarray(p1, dtype=np.uint64),
             p1_op=np.asarray(p1_op, dtype=np.int64), p2=np.asarray(p2, dtype=np.uint64),
             p2_op=np.asarray(p2_op, dtype=np.int64),
             masks=np.asarray(masks, dtype=np.uint8).reshape(-1, p.w_max),
             mask_op=np.asarray(mask_op, dtype=np.int64),
             exp_cycles=np.asarray(exp_cycles, dtype=np.int64), exp_error=np.asarray(exp_error, dtype=np.int64),
             exp_a=np.asarray([c.cfg for c in sched], dtype=np.int64),
             exp_f=np.asarray([c.final for c in sched], dtype=np.int64),
             beats=np.asarray(beats, dtype=np.int64).reshape(-1, 4 + p.k_max),
             check=np.asarray(int(check)))
    return goldens


def pe_verilog(p: HwParams, config: PeConfig = PeConfig()) -> str:
    from amaranth.back import verilog

    from ..hw.pe import PE
    return verilog.convert(PE(p, prefetch=config.prefetch, lookahead=config.lookahead, osrc_window=config.osrc_window),
                           name="pe", emit_src=False)


def pe_build(p: HwParams, sim: str = "verilator", config: PeConfig = PeConfig()) -> runner.Build:
    """Compile the PE of ``p`` for ``sim`` once (runner caches by parameters, on disk and per process)."""
    params = p.as_dict()
    if config.tag:
        params.update(PREFETCH=int(config.prefetch), LOOKAHEAD=config.lookahead)
        if config.osrc_window != 1:
            params.update(OSRC_WINDOW=config.osrc_window)
    return runner.build(lambda: pe_verilog(p, config), "pe", sim,
                        name=f"pe-d{p.dw}k{p.k_max}w{p.w_max}a{p.acc_w}{config.tag}", params=params)


def run_pe_ops(ops: Sequence[PeOp], params: HwParams, sim: str = "verilator", *, seed: int | None = None,
               p_valid: float = 1.0, p_ready: float = 1.0, resets: Sequence[tuple[int, int]] = (),
               check: bool = True, workdir: Path | None = None, config: PeConfig = PeConfig(),
               serial: bool = False, stimulus_hook: Callable[[Path], None] | None = None) -> list[PeOpResult]:
    """Run ``ops`` back to back on the RTL; return the beats and measured cycles of each.

    p_valid / p_ready: per-cycle probability that a source offers / the sink accepts (1.0 =
    no back-pressure, where the cycle count must equal the contract exactly). resets:
    (op index, cycles after its cfg handshake) at which rst is pulsed; that op is abandoned
    and its remaining input dropped. check: the testbench compares every beat with the
    golden model and every cycle count with sparsetrain.arch.timing and fails (AssertionError) on any
    difference (its message lists every problem found). config: the PE's prefetch / lookahead /
    osrc_window.
    serial: offer each cfg only once the previous op's final beat has left (one op in flight, so
    that ``cycles - stalls`` is exact under back-pressure with prefetch too); otherwise cfgs are
    offered as early as the PE takes them, and with prefetch and back-pressure only the results
    are checked, not the cycles. stimulus_hook: called with the written stimulus file before the
    simulator starts (the checker self-tests inject a fault there, ``sim_tb.faults``).
    """
    seed = runner.default_seed() if seed is None else seed
    runner.check_handshake_probabilities(p_valid, p_ready)
    b = pe_build(params, sim, config)
    wdir = runner.run_folder(b, "pe-ops-", workdir)
    stim, result = wdir / "stim.npz", wdir / "result.npz"
    goldens = write_stimulus(ops, params, stim, check=check, config=config)
    if stimulus_hook is not None:
        stimulus_hook(stim)
    cfg = {"p_valid": p_valid, "p_ready": p_ready, "resets": [list(r) for r in resets],
           "params": params.as_dict(), "seed": seed, "prefetch": config.prefetch, "lookahead": config.lookahead,
           "osrc_window": config.osrc_window,
           "serial": serial}
    env = {"PE_STIM": str(stim), "PE_RESULT": str(result), "PE_TB_CFG": json.dumps(cfg)}
    runner.run_explained(b, TB_MODULE, seed=seed, env=env, wdir=wdir, result=result, what="PE")
    return read_results(result, goldens, params)


def read_results(path: Path, goldens: Sequence[RowOpResult | None], p: HwParams) -> list[PeOpResult]:
    r = np.load(path)
    out: list[PeOpResult] = []
    beats = r["beats"]
    for i, g in enumerate(goldens):
        mine = beats[beats[:, 0] == i]
        bl = [Beat(int(row[1]), int(row[2]), tuple(int(x) for x in row[4:4 + int(row[2])]), bool(row[3]))
              for row in mine]
        out.append(PeOpResult(bl, int(r["cycles"][i]), int(r["stalls"][i]), bool(r["cfg_error"][i]), g,
                              bool(r["aborted"][i]), int(r["cfg_cycle"][i]), int(r["final_cycle"][i])))
    return out
