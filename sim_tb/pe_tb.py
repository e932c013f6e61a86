"""cocotb testbench of the PE: runs a batch of operations from a stimulus file.

Launched by ``sim_tb.pe_driver.run_pe_ops``. Environment: PE_STIM (npz written by
``pe_driver.write_stimulus``), PE_RESULT (npz this test writes), PE_TB_CFG (JSON: p_valid,
p_ready, resets, params, seed, prefetch, lookahead, osrc_window, serial). ``PeTB`` checks, unless the
stimulus says check = 0:

* every beat against the golden beats, bit for bit, in order (scoreboard);
* every operation's cycle count (``check_timing``): cycles - stall cycles ==
  sparsetrain.arch.timing, where a stall cycle is one in which no progress handshake (cfg,
  Port-1/2/3, final beat) happened; and with no back-pressure (p_valid = p_ready = 1) there
  must be no stall cycle at all and every op's cfg and final-beat cycle must equal
  arch.timing.schedule (back-to-back ops, cfgs offered early). With prefetch and overlapping
  ops under back-pressure the per-op count is not defined (ops share cycles), so only the
  beats are checked there (``serial`` runs one op at a time to check the count under
  back-pressure);
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
from ..hw.layouts import beat_layout, entry_layout
from .streams import BlockTB, Scoreboard, StreamSink, StreamSource, payload_width, signal_int, unpack

INPUT_PORTS = ("port1", "port2", "port3")
STIM_KEYS = {"port1": ("p1", "p1_op"), "port2": ("p2", "p2_op"), "port3": ("masks", "mask_op")}


class PairSource(StreamSource):
    """Port-1 with look-ahead (LOOKAHEAD = 2 or OSRC_WINDOW = 2), Port-2 with OSRC_WINDOW = 2:
    offers the first two pending entries of the row (the second only when the first is not the
    row's last) and takes one or two per handshake, as the PE's ``<port>_take2`` says.
    ``on_transfer`` is called once per entry taken."""

    def __init__(self, dut, name: str, *, entry_w: int, last_bit: int, **kw):
        super().__init__(dut, name, None, **kw)
        self.entry_w, self.last_bit = entry_w, last_bit
        self.take2 = getattr(dut, f"{name}_take2")

    def drive(self) -> None:
        if self.hold:
            self.offering = False
        elif not self.offering and self.queue and next(self.pattern):
            self.offering = True
            first = self.queue[0]
            pair = first
            if not (first >> self.last_bit) & 1 and len(self.queue) > 1:
                pair |= (self.queue[1] << self.entry_w) | (1 << (2 * self.entry_w))  # second, has_second
            self.payload.value = pair
        if self.offering != self._driven:
            self.valid.value = int(self.offering)
            self._driven = self.offering

    def sample(self, cycle: int) -> Any:
        if self.offering and signal_int(self.ready):
            n = 2 if signal_int(self.take2) else 1
            self.offering = False
            for _ in range(n):
                item = self.queue.popleft()
                self.transfers += 1
                if self.on_transfer:
                    self.on_transfer(item, cycle)
            return item
        return None


class PeTB(BlockTB):
    """The PE under a stimulus file: drivers (cfg, Port-1/2/3 sources), a monitor (the out
    sink), a beat scoreboard, per-op cycle and stall counters, resets in the middle of ops.

    Several ops may be in flight (prefetch: up to three): ops ``head`` .. ``n_cfg - 1`` have had
    their cfg accepted and not yet their final beat; beats belong to ``head`` (results leave in
    order) and a reset drops every op in flight. ``serial`` holds each cfg until the previous
    op's final beat has left (one op in flight).

    Extending it: ``check()`` calls ``check_timing(live)`` and ``check_errors(live)``; each
    appends its findings to ``self.problems`` and reads the per-op arrays ``start_cycle``,
    ``final_cycle``, ``cycles``, ``stalls``, ``cfg_error``, ``aborted`` (one entry per op). A
    subclass that needs more per-op measurements (say, the cycle of every Port-2 handshake)
    overrides the monitors ``on_cfg``, ``on_input(port, item, cycle)`` and ``on_beat`` (calling
    super) and ``check_timing``."""

    def __init__(self, dut, stim: Mapping[str, np.ndarray], params: HwParams, *, seed: int,
                 p_valid: float = 1.0, p_ready: float = 1.0, resets: Mapping[int, int] | None = None,
                 prefetch: bool = False, lookahead: int = 1, serial: bool = False, osrc_window: int = 1):
        super().__init__(dut, seed, p_valid=p_valid, p_ready=p_ready)
        self.params = params
        self.prefetch, self.lookahead, self.serial = bool(prefetch), int(lookahead), bool(serial)
        self.osrc_window = int(osrc_window)
        self.overlap = self.prefetch and not self.serial  # several ops in flight at once
        self.layout = beat_layout(params)
        self.checking = bool(int(stim["check"]))
        self.n_ops = n = len(stim["cfg"])
        self.exp_cycles = stim["exp_cycles"]
        self.exp_error = stim["exp_error"]
        self.exp_a, self.exp_f = stim["exp_a"], stim["exp_f"]  # the no-stall schedule (cycle 1 = first cfg)
        self.resets = dict(resets or {})  # op -> cycles after its cfg handshake at which rst is pulsed
        # which ops are in flight, and what they measured
        self.n_cfg = 0  # cfgs accepted
        self.head = 0   # oldest op in flight
        self.progress = False
        self.finished = 0
        self.resets_fired = 0
        self.start_cycle = np.zeros(n, dtype=np.int64)
        self.final_cycle = np.zeros(n, dtype=np.int64)
        self.cycles = np.zeros(n, dtype=np.int64)
        self.stalls = np.zeros(n, dtype=np.int64)
        self.cfg_error = np.zeros(n, dtype=np.int64)
        self.aborted = np.zeros(n, dtype=np.int64)
        self.got_beats: list[list[int]] = []
        self.board = Scoreboard("pe beats")
        # drivers and the monitor
        self.cfg_src = self.bench.add(StreamSource(dut, "cfg", None, valid=self.valid_pattern(),
                                                   on_transfer=self.on_cfg))
        self.inputs = {name: self.bench.add(self._source(name)) for name in INPUT_PORTS}
        self.out = self.bench.add(StreamSink(dut, "out", self.layout, ready=self.ready_pattern(),
                                             on_transfer=self.on_beat, raw=True))
        self.tags: dict[str, deque[int]] = {}  # per input port: the op of each queued item
        self.load(stim)

    def _source(self, name: str) -> StreamSource:
        kw = dict(valid=self.valid_pattern(), on_transfer=partial(self.on_input, name))
        if (name == "port1" and (self.lookahead == 2 or self.osrc_window == 2)) or \
                (name == "port2" and self.osrc_window == 2):
            lay = entry_layout(self.params)
            return PairSource(self.dut, name, entry_w=payload_width(lay), last_bit=lay["last"].offset, **kw)
        return StreamSource(self.dut, name, None, **kw)

    @property
    def in_op(self) -> bool:
        return self.head < self.n_cfg

    @classmethod
    def from_env(cls, dut) -> "PeTB":
        tb = json.loads(os.environ["PE_TB_CFG"])
        pd = tb["params"]
        params = HwParams(dw=pd["DW"], k_max=pd["K_MAX"], w_max=pd["W_MAX"], acc_w=pd["ACC_W"])
        return cls(dut, np.load(os.environ["PE_STIM"]), params, seed=int(tb["seed"]), p_valid=float(tb["p_valid"]),
                   p_ready=float(tb["p_ready"]), resets={int(op): int(at) for op, at in tb["resets"]},
                   prefetch=bool(tb.get("prefetch")), lookahead=int(tb.get("lookahead", 1)),
                   serial=bool(tb.get("serial")), osrc_window=int(tb.get("osrc_window", 1)))

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
        self.start_cycle[self.n_cfg] = cycle
        self.n_cfg += 1
        self.progress = True

    def on_input(self, port: str, _item: Any, _cycle: int) -> None:
        self.tags[port].popleft()  # keep each item's op tag in step with its queue
        self.progress = True

    def on_beat(self, raw: int, cycle: int) -> None:
        b = unpack(self.layout, raw)
        op = self.head
        item = (op, b["base"], b["count"], b["last"], tuple(b["lanes"]))
        self.got_beats.append([op, b["base"], b["count"], b["last"], *b["lanes"]])
        if self.checking:
            self.board.observe(item)
        if b["last"]:
            self.progress = True
            self.cycles[op] = cycle - self.start_cycle[op] + 1
            self.final_cycle[op] = cycle
            self.cfg_error[op] = signal_int(self.dut.cfg_error)
            self.finished += 1
            self.head += 1

    # ---- per cycle
    def drive(self, cycle: int) -> None:
        # serial: one op at a time, the next cfg waits for the final beat (not called in reset)
        self.cfg_src.hold = self.serial and self.in_op

    def sample(self, cycle: int) -> None:
        if self.in_op and not self.progress:
            self.stalls[self.head] += 1
        self.progress = False
        for op in range(self.head, self.n_cfg):
            if op in self.resets and cycle - self.start_cycle[op] + 1 == self.resets[op]:
                self.resets_fired += 1
                for gone in range(self.head, self.n_cfg):  # the reset drops every op in flight
                    self.abort(gone)
                self.head = self.n_cfg
                self.reset()
                break

    def abort(self, op: int) -> None:
        """Op ``op`` (in flight) is cut short by a reset: drop its remaining input and expected
        beats. Call it for the ops in flight oldest first (their items are at the queues' heads)."""
        self.aborted[op] = 1
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
                 aborted=self.aborted, cfg_cycle=self.start_cycle, final_cycle=self.final_cycle,
                 resets_fired=np.asarray(self.resets_fired), problems=np.asarray(problems, dtype=str))

    # ---- checks
    def check(self) -> list[str]:
        """Every problem: the beats (scoreboard), ``check_timing``, ``check_errors``."""
        live = self.aborted == 0
        self.check_timing(live)
        self.check_errors(live)
        return self.all_problems(self.board)

    def check_timing(self, live: np.ndarray) -> None:
        """Every op not cut short by a reset: cycles - stalls == the contract (sparsetrain.arch.timing),
        unless ops overlapped (prefetch, not serial: the count is not defined); no stall at all
        without back-pressure; and without back-pressure, resets or ``serial``, every op's cfg and
        final-beat cycle == arch.timing.schedule of the whole sequence."""
        bad = np.flatnonzero(live & (self.cycles - self.stalls != self.exp_cycles)) if not self.overlap \
            else np.zeros(0, dtype=np.int64)
        if bad.size:
            self.problems.append(f"{bad.size} ops off the timing contract, first: " + ", ".join(
                f"op {i}: {self.cycles[i]} cycles - {self.stalls[i]} stalls != {self.exp_cycles[i]}"
                for i in bad[:5]))
        if not self.backpressure and self.stalls[live].any():
            self.problems.append(f"stall cycles without back-pressure in ops "
                                 f"{np.flatnonzero(live & (self.stalls > 0))[:5]}")
        if not self.backpressure and not self.resets and not self.serial and self.n_ops:
            # the whole back-to-back sequence, cycle for cycle (cycle 1 = the first cfg)
            a = self.start_cycle - self.start_cycle[0] + 1
            f = self.final_cycle - self.start_cycle[0] + 1
            bad = np.flatnonzero((a != self.exp_a) | (f != self.exp_f))
            if bad.size:
                self.problems.append(f"{bad.size} ops off the schedule, first: " + ", ".join(
                    f"op {i}: cfg {a[i]} final {f[i]} != {self.exp_a[i]}, {self.exp_f[i]}" for i in bad[:5]))

    def check_errors(self, live: np.ndarray) -> None:
        bad = np.flatnonzero(live & (self.cfg_error != self.exp_error))
        if bad.size:
            self.problems.append(f"cfg_error wrong in ops {bad[:5]}")


@cocotb.test()
async def pe_ops(dut):
    tb = PeTB.from_env(dut)
    dut._log.info(f"PE testbench seed {tb.seed}, p_valid {tb.p_valid}, p_ready {tb.p_ready}, "
                  f"prefetch {tb.prefetch}, lookahead {tb.lookahead}, osrc_window {tb.osrc_window}, serial {tb.serial}")
    await tb.run(os.environ["PE_RESULT"])
