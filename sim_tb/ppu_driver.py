"""Plain Python API to run PPU command sequences on the RTL and check them against the model.

``run_ppu(txns, cfg, sim=...)`` computes every expected output entry, status and cycle count
with ``golden.bitexact.ppu_model.PPUModel`` (outside the simulator), writes them with the stimulus
into one npz, runs the cocotb test ``sim_tb.ppu_tb`` on a cached build and returns what the
RTL did. The testbench raises on any difference (entries, status after every command,
timing contract of docs/architecture.md section 7.1).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..arch.ppu import N_PE, Op, PPUCommand, PPUConfig, command_cycles
from ..golden.bitexact.ppu_model import PPUModel, PPUStatus
from ..golden.bitexact.rowops import Beat
from . import runner

TB_MODULE = "sparsetrain.sim_tb.ppu_tb"
RESET = -1  # pseudo-op in a stimulus: pulse rst between two commands (model.reset())
CMD_FIELDS = ("op", "slot", "pe_mask", "length", "shift", "relu", "acc_g", "prune", "g_first",
              "c_m", "c_shift", "bias", "value")
STATUS_FIELDS = ("row_nnz", "g_sum", "rng_state", "abs_sum", "tau_pred", "fifo_count", "fifo_full",
                 "layer_nnz", "layer_elems", "fifo_entry")


@dataclass
class PpuTxn:
    """One command with its PE beats (ACCUM) and the FIFO index the status check reads; or a reset."""

    cmd: PPUCommand | None                     # None: a reset pulse
    beats: list[list[Beat]] = field(default_factory=lambda: [[] for _ in range(N_PE)])
    index: int = 0                             # status_sel.index while this command's status is checked
    garbage_lanes: bool = False                # drive random values on lanes >= count (must be ignored)

    @classmethod
    def reset(cls) -> "PpuTxn":
        return cls(None)


@dataclass
class PpuRunResult:
    entries: list[list[tuple[int, int, int]]]  # per FINISH (in order): the entries the RTL wrote
    occupancy: np.ndarray                       # per command: cycles from accept to ready again
    blocked: np.ndarray                         # per command: cycles with out.valid & ~out.ready
    expected_cycles: np.ndarray                 # per command: sparsetrain.arch.ppu.command_cycles
    statuses: list[PPUStatus]                   # the model's status after each txn


def cfg_dict(cfg: PPUConfig) -> dict[str, int]:
    return {k: int(getattr(cfg, k)) for k in ("dw", "k_max", "w_max", "acc_w", "n_f", "n_slots", "r_w",
                                              "seed", "sum_w", "g_w", "cnt_w", "pingpong")}


def _mask_words(mask: int, w_max: int) -> list[int]:
    return [(mask >> (32 * i)) & 0xFFFFFFFF for i in range((w_max + 31) // 32)]


def write_stimulus(txns: Sequence[PpuTxn], cfg: PPUConfig, path: Path, seed: int) -> dict:
    """Run the model over ``txns``; write stimulus and expectations into ``path`` (npz)."""
    model = PPUModel(cfg)
    rng = np.random.default_rng(seed)
    cmds, sel, beats, exp_entries, exp_status, exp_mask, exp_cycles = [], [], [], [], [], [], []
    statuses: list[PPUStatus] = []
    finishes = 0
    for i, t in enumerate(txns):
        if t.cmd is None:
            model.reset()
            cmds.append([RESET] + [0] * (len(CMD_FIELDS) - 1))
            sel.append([0, 0])
            exp_cycles.append(0)
        else:
            d = t.cmd.as_dict()
            cmds.append([d[f] for f in CMD_FIELDS])
            sel.append([t.cmd.slot, t.index])
            nb = [len(t.beats[j]) if t.cmd.pe_mask >> j & 1 else 0 for j in range(N_PE)]
            exp_cycles.append(command_cycles(t.cmd, nb))
            if t.cmd.op == Op.ACCUM:
                for j in range(N_PE):
                    if not t.cmd.pe_mask >> j & 1:
                        continue
                    for b in t.beats[j]:
                        lanes = list(b.lanes) + [0] * (cfg.k_max - b.count)
                        if t.garbage_lanes:
                            lim = 1 << (cfg.acc_w - 2)
                            for k in range(b.count, cfg.k_max):
                                lanes[k] = int(rng.integers(-lim, lim))
                        beats.append([j, b.base, b.count, int(b.last)] + lanes)
            res = model.apply(t.cmd, t.beats)
            if t.cmd.op == Op.FINISH:
                for v, o, last in res.entries:
                    exp_entries.append([finishes, v, o, last])
                finishes += 1
        st = model.status(sel[-1][0], sel[-1][1])
        statuses.append(st)
        exp_status.append([getattr(st, f) for f in STATUS_FIELDS])
        exp_mask.append(_mask_words(st.relu_mask, cfg.w_max))
    np.savez(path,
             cmds=np.asarray(cmds, dtype=np.int64).reshape(-1, len(CMD_FIELDS)),
             sel=np.asarray(sel, dtype=np.int64).reshape(-1, 2),
             beats=np.asarray(beats, dtype=np.int64).reshape(-1, 4 + cfg.k_max),
             exp_entries=np.asarray(exp_entries, dtype=np.int64).reshape(-1, 4),
             exp_status=np.asarray(exp_status, dtype=np.int64).reshape(-1, len(STATUS_FIELDS)),
             exp_mask=np.asarray(exp_mask, dtype=np.int64).reshape(len(txns), -1),
             exp_cycles=np.asarray(exp_cycles, dtype=np.int64))
    return {"statuses": statuses, "finishes": finishes, "exp_cycles": np.asarray(exp_cycles, dtype=np.int64)}


def ppu_verilog(cfg: PPUConfig) -> str:
    from amaranth.back import verilog

    from ..hw.ppu import PPU
    return verilog.convert(PPU(cfg), name="ppu", emit_src=False)


def ppu_build(cfg: PPUConfig, sim: str = "verilator") -> runner.Build:
    """Compile the PPU of ``cfg`` for ``sim`` once (runner caches by parameters, on disk and per process)."""
    name = "ppu-" + "".join(f"{k[0]}{v}" for k, v in cfg_dict(cfg).items() if k != "seed") + f"s{cfg.seed:x}"
    return runner.build(lambda: ppu_verilog(cfg), "ppu", sim, name=name, params=cfg_dict(cfg))


def run_testbench(b: runner.Build, tb_module: str, cfg: PPUConfig, wdir: Path, seed: int, p_valid: float,
                  p_ready: float, n_rows: int, what: str) -> tuple[dict, list[list[tuple[int, int, int]]]]:
    """Run ``tb_module`` on the stimulus ``wdir/stim.npz``; returns the result file's arrays and
    the result entries grouped by row (the result's ``entries``: row, value, offset, last). A
    testbench failure becomes one AssertionError naming ``what``, the seed, its problems and the folder."""
    stim, result = wdir / "stim.npz", wdir / "result.npz"
    tbcfg = {"p_valid": p_valid, "p_ready": p_ready, "seed": seed, "cfg": cfg_dict(cfg)}
    env = {"PPU_STIM": str(stim), "PPU_RESULT": str(result), "PPU_TB_CFG": json.dumps(tbcfg)}
    runner.run_explained(b, tb_module, seed=seed, env=env, wdir=wdir, result=result, what=what)
    r = dict(np.load(result))
    entries: list[list[tuple[int, int, int]]] = [[] for _ in range(n_rows)]
    for row, v, o, last in r["entries"]:
        entries[int(row)].append((int(v), int(o), int(last)))
    return r, entries


def run_ppu(txns: Sequence[PpuTxn], cfg: PPUConfig, sim: str = "verilator", *, seed: int | None = None,
            p_valid: float = 1.0, p_ready: float = 1.0, workdir: Path | None = None,
            stimulus_hook: Callable[[Path], None] | None = None) -> PpuRunResult:
    """Run ``txns`` back to back on the RTL; the testbench fails on any difference from the model.

    p_valid / p_ready: per-cycle probability that a source offers / the sink accepts (1.0:
    no back-pressure; then every command's occupancy must equal the contract exactly).
    stimulus_hook: called with the written stimulus file before the simulator starts (the
    checker self-tests inject a fault there, ``sim_tb.faults``).
    """
    seed = runner.default_seed() if seed is None else seed
    runner.check_handshake_probabilities(p_valid, p_ready)
    b = ppu_build(cfg, sim)
    wdir = runner.run_folder(b, "ppu-run-", workdir)
    stim = wdir / "stim.npz"
    info = write_stimulus(txns, cfg, stim, seed)
    if stimulus_hook is not None:
        stimulus_hook(stim)
    r, entries = run_testbench(b, TB_MODULE, cfg, wdir, seed, p_valid, p_ready, info["finishes"], "PPU")
    return PpuRunResult(entries, r["occupancy"], r["blocked"], info["exp_cycles"], info["statuses"])
