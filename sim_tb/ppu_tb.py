"""cocotb testbench of the PPU: runs a command sequence from a stimulus file.

Launched by ``sim_tb.ppu_driver.run_ppu``. Environment: PPU_STIM (npz written by
``ppu_driver.write_stimulus``), PPU_RESULT (npz this test writes), PPU_TB_CFG (JSON:
p_valid, p_ready, seed, cfg). ``PpuTB`` checks (scoreboard against golden.bitexact.ppu_model):

* every output entry (value, offset, last), in order;
* the whole readback status (and the ReLU mask) after every command, sampled in the cycle
  the next command is accepted (or once idle after the last one);
* the timing contract of section 7.1 (``check_timing``): with no back-pressure every
  command's occupancy equals ``command_cycles``; with back-pressure ACCUM ends the cycle after
  its last beat, FINISH lies between the contract and the contract plus its blocked-output
  cycles, and every other command is exact.
The testbench checks what the stimulus file expects and nothing else: the checker self-tests
change that file before the run (``sim_tb.faults``), never the testbench.
No torch here: numpy and the stimulus file only.
"""
from __future__ import annotations

import json
import os
from collections import deque
from typing import Any, Mapping

import cocotb
import numpy as np

from ..arch.ppu import N_PE, Op, PPUConfig
from ..hw.layouts import beat_layout, entry_layout
from ..hw.ppu import hw_params, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout
from .ppu_driver import CMD_FIELDS, RESET, STATUS_FIELDS
from .streams import BlockTB, Scoreboard, StreamSink, StreamSource, pack, signal_int, unpack


class PpuTB(BlockTB):
    """The PPU under a stimulus file: a command driver that issues one command at a time (and
    the reset pseudo-commands), one beat source per PE, the out sink with its entry scoreboard,
    a status checker and per-command occupancy counters."""

    def __init__(self, dut, stim: Mapping[str, np.ndarray], cfg: PPUConfig, *, seed: int,
                 p_valid: float = 1.0, p_ready: float = 1.0):
        super().__init__(dut, seed, p_valid=p_valid, p_ready=p_ready)
        self.cfg = cfg
        p = hw_params(cfg)
        self.cmd_l, self.sel_l, self.st_l = ppu_cmd_layout(cfg), ppu_status_sel_layout(cfg), ppu_status_layout(cfg)
        self.ent_l, self.beat_l = entry_layout(p), beat_layout(p)
        self.cmds, self.sels = stim["cmds"], stim["sel"]
        self.n = n = len(self.cmds)
        self.ops = np.asarray([int(c[0]) for c in self.cmds], dtype=np.int64)
        self.exp_status, self.exp_mask, self.exp_cycles = stim["exp_status"], stim["exp_mask"], stim["exp_cycles"]
        # per command: accept cycle, occupancy, cycles with the output blocked, cycle of its last PE beat
        self.accept = np.full(n, -1, dtype=np.int64)
        self.occupancy = np.zeros(n, dtype=np.int64)
        self.blocked = np.zeros(n, dtype=np.int64)
        self.last_beat = np.full(n, -1, dtype=np.int64)
        self.got_entries: list[list[int]] = []
        self.board = Scoreboard("ppu entries")
        self.status_problems = 0
        self.next = 0             # next command (index into cmds) to issue
        self.pending = -1         # the command queued on the cmd source
        self.inflight = -1        # the command accepted last, until its occupancy is known
        self.inflight_done = True
        self.done_prev = -1       # the command whose status is checked next
        self.finishes = 0         # FINISH rows whose last entry left
        self.finish_cmds = 0      # FINISH commands accepted
        # drivers and the monitor
        self.cmd_src = self.bench.add(StreamSource(dut, "cmd", None, valid=self.valid_pattern(),
                                                   on_transfer=self._on_cmd))
        self.beat_owner: list[deque] = [deque() for _ in range(N_PE)]  # (txn, last) per queued beat
        self.pe_srcs = [self.bench.add(StreamSource(dut, f"pe{j}", None, valid=self.valid_pattern(),
                                                    on_transfer=lambda _item, cycle, j=j: self._on_beat(j, cycle)))
                        for j in range(N_PE)]
        self.sink = self.bench.add(StreamSink(dut, "out", self.ent_l, ready=self.ready_pattern(),
                                              on_transfer=self._on_entry, raw=True))
        self.load(stim)

    @classmethod
    def from_env(cls, dut) -> "PpuTB":
        tb = json.loads(os.environ["PPU_TB_CFG"])
        return cls(dut, np.load(os.environ["PPU_STIM"]), PPUConfig(**tb["cfg"]), seed=int(tb["seed"]),
                   p_valid=float(tb["p_valid"]), p_ready=float(tb["p_ready"]))

    # ---- stimulus and expectations
    def load(self, stim: Mapping[str, np.ndarray]) -> None:
        """Expect every entry; queue every PE beat up front, tagged with the ACCUM it belongs to."""
        for f, v, o, last in stim["exp_entries"]:
            self.board.expect((int(f), int(v), int(o), int(last)))
        accum_ids = [k for k in range(self.n) if self.ops[k] == Op.ACCUM]
        per_pe: list[list] = [[] for _ in range(N_PE)]
        for row in stim["beats"]:
            per_pe[int(row[0])].append(row)
        mask_col = CMD_FIELDS.index("pe_mask")
        for j in range(N_PE):
            owners = iter([k for k in accum_ids if int(self.cmds[k][mask_col]) >> j & 1])
            txn = None
            for row in per_pe[j]:
                if txn is None:
                    txn = next(owners)
                lanes = [int(x) for x in row[4:]]
                raw = pack(self.beat_l, {"base": int(row[1]), "count": int(row[2]), "last": int(row[3]),
                                         "lanes": lanes})
                self.pe_srcs[j].send([raw])
                self.beat_owner[j].append((txn, int(row[3])))
                if int(row[3]):
                    txn = None

    # ---- monitors
    def _on_cmd(self, _item: Any, cycle: int) -> None:
        k = self.pending
        self._finalize(self.inflight, cycle)
        if self.done_prev >= 0:
            self.check_status(self.done_prev)
        self.accept[k] = cycle
        self.inflight = self.done_prev = k
        if self.ops[k] == Op.FINISH:
            self.finish_cmds += 1

    def _on_beat(self, j: int, cycle: int) -> None:
        txn, last = self.beat_owner[j].popleft()
        if last:
            self.last_beat[txn] = max(self.last_beat[txn], cycle)

    def _on_entry(self, raw: int, _cycle: int) -> None:
        e = unpack(self.ent_l, raw)
        item = (self.finishes, e["value"], e["offset"], e["last"])
        self.got_entries.append(list(item))
        self.board.observe(item)
        if e["last"]:
            self.finishes += 1

    def _finalize(self, k: int, cycle: int) -> None:
        if k >= 0 and self.occupancy[k] == 0:
            self.occupancy[k] = cycle - self.accept[k]

    def check_status(self, txn: int) -> None:
        """The readback status (status_sel of ``txn``) against the model's status after ``txn``."""
        got = unpack(self.st_l, signal_int(self.dut.status))
        want = {f: int(v) for f, v in zip(STATUS_FIELDS, self.exp_status[txn])}
        want["relu_mask"] = sum(int(w) << (32 * i) for i, w in enumerate(self.exp_mask[txn]))
        bad = {k: (w, got[k]) for k, w in want.items() if got[k] != w}
        if not bad:
            return
        self.status_problems += 1
        if self.status_problems <= 5:
            self.problems.append(f"status after txn {txn} (op {self.ops[txn]}): "
                                 + ", ".join(f"{k} expected {w} got {g}" for k, (w, g) in bad.items()))
        elif self.status_problems == 6:
            self.problems.append("...")

    # ---- per cycle
    def idle(self) -> bool:
        return (signal_int(self.dut.cmd__ready) == 1 and not self.cmd_src.offering and not self.cmd_src.queue
                and signal_int(self.dut.out__valid) == 0 and self.finishes == self.finish_cmds)

    def drive(self, _cycle: int) -> None:
        if self.done_prev >= 0:
            s = self.sels[self.done_prev]
            self.dut.status_sel.value = pack(self.sel_l, {"slot": int(s[0]), "index": int(s[1])})
        k = self.next
        if k >= self.n or self.cmd_src.queue or self.cmd_src.offering:
            return
        if self.ops[k] == RESET:  # once the PPU is idle: the reset starts in this cycle
            if self.idle() and self.inflight_done:
                self._finalize(self.inflight, self.bench.cycle)
                if self.done_prev >= 0:
                    self.check_status(self.done_prev)
                self.inflight = -1
                self.done_prev = k
                self.next = k + 1
                self.reset()
        else:
            self.pending = k
            self.next = k + 1
            self.cmd_src.send([pack(self.cmd_l, {f: int(v) for f, v in zip(CMD_FIELDS, self.cmds[k])})])

    def sample(self, cycle: int) -> None:
        k = self.inflight
        self.inflight_done = k < 0 or self.occupancy[k] > 0
        if k >= 0 and self.occupancy[k] == 0 and cycle > self.accept[k]:
            if self.sink.blocked:
                self.blocked[k] += 1
            if signal_int(self.dut.cmd__ready):
                self._finalize(k, cycle)
                self.inflight_done = True

    # ---- the run
    def done(self) -> bool:
        return self.next >= self.n and self.inflight_done and self.idle() and not self.in_reset

    def cycle_limit(self) -> int:
        slow = 1.0 / min(self.p_valid, self.p_ready)
        return int((int(self.exp_cycles.sum()) + 10 * self.n) * slow * 4) + 1000

    def where(self) -> str:
        return (f"next txn {self.next} of {self.n}, in flight {self.inflight}, busy "
                f"{unpack(self.st_l, signal_int(self.dut.status))['busy']}, {self.board.matched} entries matched, "
                f"{len(self.board.expected)} expected left, mismatches {self.board.mismatches[:3]}")

    async def run(self, result_path: str | None = None) -> None:
        """Run every command; save what was seen (and the problems found) to ``result_path``;
        raise one AssertionError listing every problem."""
        self.dut.status_sel.value = 0
        self.start()
        problems: list[str] = []
        try:
            await self.bench.run_until(self.done, self.cycle_limit())
            await self.bench.step()  # status_sel of the last command settles
            self.check_status(self.n - 1)
            problems = self.check()
        except AssertionError as exc:  # the cycle limit
            problems = [f"{exc}; {self.where()}"]
            raise AssertionError(f"seed {self.seed}: {problems[0]}") from None
        finally:
            if result_path:
                self.save(result_path, problems)
        self.fail(problems)
        self.dut._log.info(f"{self.n} commands, {self.board.matched} entries, {self.bench.cycle} cycles: all match")

    def save(self, path: str, problems: list[str]) -> None:
        np.savez(path, entries=np.asarray(self.got_entries, dtype=np.int64).reshape(-1, 4),
                 occupancy=self.occupancy, blocked=self.blocked, problems=np.asarray(problems, dtype=str))

    # ---- checks
    def check(self) -> list[str]:
        """Every problem: the entries (scoreboard), the statuses, ``check_timing``."""
        self.check_timing()
        return self.all_problems(self.board)

    def check_timing(self) -> None:
        live = self.ops != RESET
        ops, occ, exp = self.ops, self.occupancy, self.exp_cycles
        if not self.backpressure:
            bad = np.flatnonzero(live & (occ != exp))
        else:
            accum = live & (ops == Op.ACCUM) & (self.last_beat >= 0)
            fin = live & (ops == Op.FINISH)
            other = live & ~accum & ~fin & ~((ops == Op.ACCUM) & (self.last_beat < 0))
            bad = np.flatnonzero((accum & (occ != self.last_beat - self.accept + 1))
                                 | (fin & ((occ < exp) | (occ > exp + self.blocked)))
                                 | (other & (occ != exp)))
        if bad.size:
            self.problems.append(f"{bad.size} commands off the timing contract, first: " + ", ".join(
                f"txn {i} op {ops[i]}: {occ[i]} cycles, contract {exp[i]}, blocked {self.blocked[i]}"
                for i in bad[:5]))


@cocotb.test()
async def ppu_commands(dut):
    tb = PpuTB.from_env(dut)
    dut._log.info(f"PPU testbench seed {tb.seed}, p_valid {tb.p_valid}, p_ready {tb.p_ready}")
    await tb.run(os.environ["PPU_RESULT"])
