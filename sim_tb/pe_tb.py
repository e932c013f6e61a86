"""cocotb testbench of the PE: runs a batch of operations from a stimulus file.

Launched by ``sim_tb.pe_driver.run_pe_ops``. Environment: PE_STIM (npz written by
``pe_driver.write_stimulus``), PE_RESULT (npz this test writes), PE_TB_CFG (JSON: p_valid,
p_ready, resets, params, seed). ``PeTB`` checks, unless the stimulus says check = 0:

* every beat against the golden beats, bit for bit, in order (scoreboard);
* every operation's cycle count (``check_timing``): cycles - stall cycles ==
  sparsetrain.arch.timing, where a stall cycle is one in which no progress handshake (cfg,
  Port-1/2/3, final beat) happened; and with no back-pressure (p_valid = p_ready = 1) there
  must be no stall cycle;
* cfg_error set exactly for refused operations (``check_errors``).
No torch here: numpy and the stimulus file only.
"""
from __future__ import annotations

import json
import os
from collections import deque
from functools import partial
from typing import Any, Mapping

import cocotb
import numpy as np

from ..arch.pe import HwParams
from ..hw.layouts import beat_layout
from .streams import BlockTB, Scoreboard, StreamSink, StreamSource, signal_int, unpack

INPUT_PORTS = ("port1", "port2", "port3")
STIM_KEYS = {"port1": ("p1", "p1_op"), "port2": ("p2", "p2_op"), "port3": ("masks", "mask_op")}


class PeTB(BlockTB):
    """The PE under a stimulus file: drivers (cfg, Port-1/2/3 sources), a monitor (the out
    sink), a beat scoreboard, per-op cycle and stall counters, resets in the middle of ops.

    Extending it: ``check()`` calls ``check_timing(live)`` and ``check_errors(live)``; each
    appends its findings to ``self.problems`` and reads the per-op arrays ``start_cycle``,
    ``cycles``, ``stalls``, ``cfg_error``, ``aborted`` (one entry per op). A subclass that needs
    more per-op measurements (say, the cycle of every Port-2 handshake) overrides the monitors
    ``on_cfg``, ``on_input(port, item, cycle)`` and ``on_beat`` (calling super) and
    ``check_timing``."""

    def __init__(self, dut, stim: Mapping[str, np.ndarray], params: HwParams, *, seed: int,
                 p_valid: float = 1.0, p_ready: float = 1.0, resets: Mapping[int, int] | None = None):
        super().__init__(dut, seed, p_valid=p_valid, p_ready=p_ready)
        self.params = params
        self.layout = beat_layout(params)
        self.checking = bool(int(stim["check"]))
        self.n_ops = n = len(stim["cfg"])
        self.exp_cycles = stim["exp_cycles"]
        self.exp_error = stim["exp_error"]
        self.resets = dict(resets or {})  # op -> cycles after its cfg handshake at which rst is pulsed
        # which op runs, and what it measured
        self.cur = -1
        self.in_op = False
        self.progress = False
        self.finished = 0
        self.start_cycle = np.zeros(n, dtype=np.int64)
        self.cycles = np.zeros(n, dtype=np.int64)
        self.stalls = np.zeros(n, dtype=np.int64)
        self.cfg_error = np.zeros(n, dtype=np.int64)
        self.aborted = np.zeros(n, dtype=np.int64)
        self.got_beats: list[list[int]] = []
        self.board = Scoreboard("pe beats")
        # drivers and the monitor
        self.cfg_src = self.bench.add(StreamSource(dut, "cfg", None, valid=self.valid_pattern(),
                                                   on_transfer=self.on_cfg))
        self.inputs = {name: self.bench.add(StreamSource(dut, name, None, valid=self.valid_pattern(),
                                                         on_transfer=partial(self.on_input, name)))
                       for name in INPUT_PORTS}
        self.out = self.bench.add(StreamSink(dut, "out", self.layout, ready=self.ready_pattern(),
                                             on_transfer=self.on_beat, raw=True))
        self.tags: dict[str, deque[int]] = {}  # per input port: the op of each queued item
        self.load(stim)

    @classmethod
    def from_env(cls, dut) -> "PeTB":
        tb = json.loads(os.environ["PE_TB_CFG"])
        pd = tb["params"]
        params = HwParams(dw=pd["DW"], k_max=pd["K_MAX"], w_max=pd["W_MAX"], acc_w=pd["ACC_W"])
        return cls(dut, np.load(os.environ["PE_STIM"]), params, seed=int(tb["seed"]), p_valid=float(tb["p_valid"]),
                   p_ready=float(tb["p_ready"]), resets={int(op): int(at) for op, at in tb["resets"]})

    # ---- stimulus and expectations
    def load(self, stim: Mapping[str, np.ndarray]) -> None:
        """Queue every op's cfg and port items (tagged with their op) and expect its beats."""
        self.cfg_src.send(int(x) for x in stim["cfg"])
        for name, (items, ops) in STIM_KEYS.items():
            if name == "port3":  # one mask beat: the W_MAX bits, bit i = column i
                words = (int("".join(str(b) for b in row[::-1]), 2) for row in stim[items])
            else:
                words = (int(x) for x in stim[items])
            self.inputs[name].send(words)
            self.tags[name] = deque(int(x) for x in stim[ops])
        if self.checking:
            for row in stim["beats"]:
                self.board.expect((int(row[0]), int(row[1]), int(row[2]), int(row[3]),
                                   tuple(int(x) for x in row[4:])))

    # ---- monitors (called by the endpoints on each transfer)
    def on_cfg(self, _item: Any, cycle: int) -> None:
        self.cur += 1
        self.in_op = True
        self.progress = True
        self.start_cycle[self.cur] = cycle

    def on_input(self, port: str, _item: Any, _cycle: int) -> None:
        self.tags[port].popleft()  # keep each item's op tag in step with its queue
        self.progress = True

    def on_beat(self, raw: int, cycle: int) -> None:
        b = unpack(self.layout, raw)
        item = (self.cur, b["base"], b["count"], b["last"], tuple(b["lanes"]))
        self.got_beats.append([self.cur, b["base"], b["count"], b["last"], *b["lanes"]])
        if self.checking:
            self.board.observe(item)
        if b["last"]:
            self.progress = True
            self.in_op = False
            self.cycles[self.cur] = cycle - self.start_cycle[self.cur] + 1
            self.cfg_error[self.cur] = signal_int(self.dut.cfg_error)
            self.finished += 1

    # ---- per cycle
    def sample(self, cycle: int) -> None:
        if self.in_op and not self.progress:
            self.stalls[self.cur] += 1
        self.progress = False
        op = self.cur
        if self.in_op and op in self.resets and cycle - self.start_cycle[op] + 1 == self.resets[op]:
            self.abort(op)
            self.reset()

    def abort(self, op: int) -> None:
        """Op ``op`` is cut short by a reset: drop its remaining input and expected beats."""
        self.aborted[op] = 1
        self.in_op = False
        self.finished += 1
        for name, tag in self.tags.items():
            src = self.inputs[name]
            while tag and tag[0] == op:
                tag.popleft()
                src.queue.popleft()
            src.drop()
        while self.board.expected and self.board.expected[0][0] == op:
            self.board.expected.popleft()

    # ---- the run
    def done(self) -> bool:
        return self.finished == self.n_ops and not self.in_reset

    def cycle_limit(self) -> int:
        """Generous: four times the contract's cycles, slowed by the back-pressure."""
        slow = 1.0 / min(self.p_valid, self.p_ready)
        return int((int(self.exp_cycles.sum()) + 4 * self.n_ops) * slow * 4) + 1000

    async def run(self, result_path: str | None = None) -> None:
        """Run every op; save what was seen (and the problems found) to ``result_path``; raise
        one AssertionError listing every problem."""
        self.start()
        problems: list[str] = []
        try:
            await self.bench.run_until(self.done, self.cycle_limit())
            if self.checking:
                problems = self.check()
        except AssertionError as exc:  # the cycle limit
            problems = [str(exc)]
            raise
        finally:
            if result_path:
                self.save(result_path, problems)
        self.fail(problems)
        self.dut._log.info(f"{self.n_ops} ops ({int(self.aborted.sum())} aborted by reset), {self.board.matched} "
                           f"beats, {self.bench.cycle} cycles: all match")

    def save(self, path: str, problems: list[str]) -> None:
        beats = np.asarray(self.got_beats, dtype=np.int64).reshape(-1, 4 + self.params.k_max)
        np.savez(path, beats=beats, cycles=self.cycles, stalls=self.stalls, cfg_error=self.cfg_error,
                 aborted=self.aborted, problems=np.asarray(problems, dtype=str))

    # ---- checks
    def check(self) -> list[str]:
        """Every problem: the beats (scoreboard), ``check_timing``, ``check_errors``."""
        live = self.aborted == 0
        self.check_timing(live)
        self.check_errors(live)
        return self.all_problems(self.board)

    def check_timing(self, live: np.ndarray) -> None:
        """Every op not cut short by a reset: cycles - stalls == the contract (sparsetrain.arch.timing);
        no stall at all without back-pressure."""
        bad = np.flatnonzero(live & (self.cycles - self.stalls != self.exp_cycles))
        if bad.size:
            self.problems.append(f"{bad.size} ops off the timing contract, first: " + ", ".join(
                f"op {i}: {self.cycles[i]} cycles - {self.stalls[i]} stalls != {self.exp_cycles[i]}"
                for i in bad[:5]))
        if not self.backpressure and self.stalls[live].any():
            self.problems.append(f"stall cycles without back-pressure in ops "
                                 f"{np.flatnonzero(live & (self.stalls > 0))[:5]}")

    def check_errors(self, live: np.ndarray) -> None:
        bad = np.flatnonzero(live & (self.cfg_error != self.exp_error))
        if bad.size:
            self.problems.append(f"cfg_error wrong in ops {bad[:5]}")


@cocotb.test()
async def pe_ops(dut):
    tb = PeTB.from_env(dut)
    dut._log.info(f"PE testbench seed {tb.seed}, p_valid {tb.p_valid}, p_ready {tb.p_ready}")
    await tb.run(os.environ["PE_RESULT"])
