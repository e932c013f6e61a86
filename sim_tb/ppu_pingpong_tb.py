"""cocotb testbench of the PINGPONG=1 PPU: rows into both accumulators, FINISH overlapping beats.

Launched by ``sim_tb.ppu_pingpong.run_ppu_pingpong``. Environment: PPU_STIM (npz written by
``ppu_pingpong.write_stimulus``), PPU_RESULT (npz this test writes), PPU_TB_CFG (JSON: p_valid,
p_ready, seed, cfg). The bench orders commands and beats as the group does (docs/architecture.md
12.3): row k's beats (sideband ``pe_acc`` = k mod 2) are offered once its START (if any) is
accepted and the FINISH of row k - 2 (same accumulator) has written its last entry; row k's FINISH
is offered once every beat of row k has been taken. ``PingPongTB`` checks:

* every output entry (value, offset, last), in row order;
* the whole status after each FINISH (sampled with its last entry) and at the end;
* that no beat is ever refused (``pe<j>.ready`` high whenever ``valid``);
* timing: every FINISH takes ``length + 3`` cycles from acceptance to the cycle after its last
  entry (up to its blocked-output cycles more under back-pressure); with no back-pressure every
  command is accepted in the first cycle the contract allows (a START of the other accumulator
  during a FINISH at once, anything else once the previous command's occupancy is over).
"""
from __future__ import annotations

import json
import os
from collections import deque

import cocotb
import numpy as np

from ..arch.ppu import N_PE, Op, PPUCommand, PPUConfig, accepts_during_finish, command_cycles
from ..hw.layouts import beat_layout, entry_layout
from ..hw.ppu import hw_params, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout
from .ppu_driver import STATUS_FIELDS
from .ppu_pingpong import CMD_FIELDS, KIND_FINISH, KIND_START
from .streams import BlockTB, Scoreboard, StreamSink, StreamSource, pack, signal_int, unpack


class PingPongTB(BlockTB):
    def __init__(self, dut, stim, cfg: PPUConfig, *, seed: int, p_valid: float = 1.0, p_ready: float = 1.0):
        super().__init__(dut, seed, p_valid=p_valid, p_ready=p_ready)
        self.cfg = cfg
        p = hw_params(cfg)
        self.cmd_l, self.sel_l, self.st_l = ppu_cmd_layout(cfg), ppu_status_sel_layout(cfg), ppu_status_layout(cfg)
        self.ent_l, self.beat_l = entry_layout(p), beat_layout(p)
        self.cmds = [PPUCommand.from_dict(dict(zip(CMD_FIELDS, (int(v) for v in c)))) for c in stim["cmds"]]
        self.raw_cmds = [pack(self.cmd_l, c.as_dict()) for c in self.cmds]
        self.kinds = stim["kinds"]
        self.rows = stim["rows"]
        self.exp_status, self.exp_mask = stim["exp_status"], stim["exp_mask"]
        self.final_status, self.final_mask = stim["final_status"], stim["final_mask"]
        nr, n = len(self.rows), len(self.cmds)
        self.row_beats: list[list[list]] = [[[] for _ in range(N_PE)] for _ in range(nr)]
        for b in stim["beats"]:
            self.row_beats[int(b[0])][int(b[1])].append(b)
        self.beats_left = np.array([sum(len(x) for x in rb) for rb in self.row_beats], np.int64)
        self.released = 0                                  # rows whose beats were queued
        self.start_at = np.full(nr, -1, np.int64)          # START accept cycle per row
        self.fin_accept = np.full(nr, -1, np.int64)
        self.fin_end = np.full(nr, -1, np.int64)           # cycle of the FINISH's last entry
        self.blocked = np.zeros(nr, np.int64)
        self.send_at = np.full(n, -1, np.int64)
        self.accept = np.full(n, -1, np.int64)
        self.next = 0
        self.pending = -1
        self.finishes = 0
        self.concurrent_starts = 0
        self.beat_accs: dict[int, set] = {}
        self.refused = 0
        self.late: list[str] = []
        # the PPU's occupancy as the contract says (no back-pressure only)
        self.busy_until, self.busy_finish, self.busy_acc = 0, False, 0
        self.got_entries: list[list[int]] = []
        self.board = Scoreboard("ppu entries")
        for k, v, o, last in stim["exp_entries"]:
            self.board.expect((int(k), int(v), int(o), int(last)))
        self.status_problems = 0
        self.cmd_src = self.bench.add(StreamSource(dut, "cmd", None, valid=self.valid_pattern(),
                                                   on_transfer=self._on_cmd))
        self.pe_tags: list[deque] = [deque() for _ in range(N_PE)]  # (row, acc) per queued beat
        self.pe_srcs = [self.bench.add(StreamSource(dut, f"pe{j}", None, valid=self.valid_pattern(),
                                                    on_transfer=lambda _i, cycle, j=j: self._on_beat(j, cycle)))
                        for j in range(N_PE)]
        self.sink = self.bench.add(StreamSink(dut, "out", self.ent_l, ready=self.ready_pattern(),
                                              on_transfer=self._on_entry, raw=True))

    @classmethod
    def from_env(cls, dut) -> "PingPongTB":
        tb = json.loads(os.environ["PPU_TB_CFG"])
        return cls(dut, np.load(os.environ["PPU_STIM"]), PPUConfig(**tb["cfg"]), seed=int(tb["seed"]),
                   p_valid=float(tb["p_valid"]), p_ready=float(tb["p_ready"]))

    # ---- monitors
    def _on_cmd(self, _item, cycle: int) -> None:
        k = self.pending
        cmd, (kind, row) = self.cmds[k], (int(x) for x in self.kinds[k])
        self.accept[k] = cycle
        in_finish = self.finishes < len(self.rows) and self.fin_accept[self.finishes] >= 0
        if cmd.op == Op.START and in_finish:
            self.concurrent_starts += 1
        if not self.backpressure:
            during = self.busy_finish and self.send_at[k] < self.busy_until  # offered while a FINISH runs
            concurrent = during and accepts_during_finish(cmd, self.busy_acc, 1)
            want = self.send_at[k] if concurrent else max(self.send_at[k], self.busy_until)
            if cycle != want and len(self.late) < 5:
                self.late.append(f"command {k} (op {int(cmd.op)}, row {row}) accepted in cycle {cycle}, "
                                 f"contract {want}")
            if not concurrent:
                self.busy_until = cycle + command_cycles(cmd, pingpong=1)
                self.busy_finish, self.busy_acc = cmd.op == Op.FINISH, cmd.acc
        if kind == KIND_START:
            self.start_at[row] = cycle
        elif kind == KIND_FINISH:
            self.fin_accept[row] = cycle

    def _on_beat(self, j: int, cycle: int) -> None:
        row, acc = self.pe_tags[j].popleft()
        self.beats_left[row] -= 1
        self.beat_accs.setdefault(cycle, set()).add(acc)

    def _on_entry(self, raw: int, cycle: int) -> None:
        e = unpack(self.ent_l, raw)
        row = self.finishes
        item = (row, e["value"], e["offset"], e["last"])
        self.got_entries.append(list(item))
        self.board.observe(item)
        if e["last"]:
            self.fin_end[row] = cycle
            self.check_status(f"after the FINISH of row {row}", self.exp_status[row], self.exp_mask[row])
            self.finishes += 1

    def check_status(self, what: str, exp_status, exp_mask) -> None:
        got = unpack(self.st_l, signal_int(self.dut.status))
        want = {f: int(v) for f, v in zip(STATUS_FIELDS, exp_status)}
        want["relu_mask"] = sum(int(w) << (32 * i) for i, w in enumerate(exp_mask))
        bad = {k: (w, got[k]) for k, w in want.items() if got[k] != w}
        if bad:
            self.status_problems += 1
            if self.status_problems <= 5:
                self.problems.append(f"status {what}: " + ", ".join(
                    f"{k} expected {w} got {g}" for k, (w, g) in bad.items()))

    # ---- per cycle
    def _release(self, cycle: int) -> None:
        """Queue the beats of the next rows whose accumulator is free and START taken."""
        while self.released < len(self.rows):
            k = self.released
            acc, has_start = int(self.rows[k][0]), bool(self.rows[k][1])
            if has_start and self.start_at[k] < 0:
                return
            if k >= 2 and not 0 <= self.fin_end[k - 2] < cycle:
                return
            for j in range(N_PE):
                for b in self.row_beats[k][j]:
                    raw = pack(self.beat_l, {"base": int(b[2]), "count": int(b[3]), "last": int(b[4]),
                                             "lanes": [int(x) for x in b[5:]]})
                    self.pe_srcs[j].send([raw])
                    self.pe_tags[j].append((k, acc))
            self.released += 1

    def drive(self, cycle: int) -> None:
        row = min(self.finishes, len(self.rows) - 1)
        self.dut.status_sel.value = pack(self.sel_l, {"slot": int(self.rows[row][2]), "index": 0})
        self._release(cycle)
        self.dut.pe_acc.value = sum((self.pe_tags[j][0][1] if self.pe_tags[j] else 0) << j for j in range(N_PE))
        k = self.next
        if k >= len(self.cmds) or self.cmd_src.queue or self.cmd_src.offering:
            return
        kind, r = (int(x) for x in self.kinds[k])
        if kind == KIND_FINISH and (self.released <= r or self.beats_left[r] > 0):
            return
        self.pending, self.next = k, k + 1
        self.send_at[k] = cycle
        self.cmd_src.send([self.raw_cmds[k]])

    def sample(self, cycle: int) -> None:
        for j in range(N_PE):
            if signal_int(getattr(self.dut, f"pe{j}__valid")) and not signal_int(getattr(self.dut, f"pe{j}__ready")):
                self.refused += 1
        if self.sink.blocked and self.finishes < len(self.rows):
            self.blocked[self.finishes] += 1

    def done(self) -> bool:
        return (self.next >= len(self.cmds) and not self.cmd_src.queue and self.finishes == len(self.rows)
                and self.released == len(self.rows) and not any(s.queue for s in self.pe_srcs)
                and signal_int(self.dut.cmd__ready) == 1)

    def cycle_limit(self) -> int:
        slow = 1.0 / min(self.p_valid, self.p_ready)
        work = int(self.rows[:, 3].sum()) + 10 * len(self.cmds) + int(self.beats_left.sum())
        return int(work * slow * 4) + 1000

    async def run(self, result_path: str) -> None:
        self.dut.status_sel.value = 0
        self.dut.pe_acc.value = 0
        self.start()
        problems: list[str] = []
        try:
            await self.bench.run_until(self.done, self.cycle_limit())
            await self.bench.step()  # drive() selects the last row's slot
            self.check_status("at the end", self.final_status, self.final_mask)
            problems = self.check()
        except AssertionError as exc:
            problems = [f"{exc}; next command {self.next} of {len(self.cmds)}, {self.finishes} rows finished"]
            raise AssertionError(f"seed {self.seed}: {problems[0]}") from None
        finally:
            self.save(result_path, problems)
        self.fail(problems)
        self.dut._log.info(f"{len(self.rows)} rows, {self.board.matched} entries, {self.bench.cycle} cycles, "
                           f"{self.concurrent_starts} concurrent STARTs: all match")

    def finish_cycles(self) -> np.ndarray:
        return np.where(self.fin_end >= 0, self.fin_end - self.fin_accept + 1, -1)

    def check(self) -> list[str]:
        occ, length = self.finish_cycles(), self.rows[:, 3] + 3
        bad = np.flatnonzero((occ < length) | (occ > length + self.blocked))
        if bad.size:
            self.problems.append(f"{bad.size} FINISHes off the timing contract, first: " + ", ".join(
                f"row {i}: {occ[i]} cycles, contract {length[i]}, blocked {self.blocked[i]}" for i in bad[:5]))
        if self.late:
            self.problems.append("commands not accepted when the contract says: " + "; ".join(self.late))
        if self.refused:
            self.problems.append(f"{self.refused} beat offers refused (beats are never refused with PINGPONG=1)")
        return self.all_problems(self.board)

    def save(self, path: str, problems: list[str]) -> None:
        mixed = sum(1 for accs in self.beat_accs.values() if len(accs) > 1)
        np.savez(path, entries=np.asarray(self.got_entries, np.int64).reshape(-1, 4),
                 finish_cycles=self.finish_cycles(), blocked=self.blocked,
                 concurrent_starts=self.concurrent_starts, mixed_cycles=mixed,
                 problems=np.asarray(problems, dtype=str))


@cocotb.test()
async def ppu_pingpong(dut):
    tb = PingPongTB.from_env(dut)
    dut._log.info(f"PPU ping-pong testbench seed {tb.seed}, p_valid {tb.p_valid}, p_ready {tb.p_ready}")
    await tb.run(os.environ["PPU_RESULT"])
