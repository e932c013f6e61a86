"""cocotb testbench of the PE: runs a batch of operations from a stimulus file.

Launched by ``sim_tb.pe_driver.run_pe_ops``. Environment: PE_STIM (npz written by
``pe_driver.write_stimulus``), PE_RESULT (npz this test writes), PE_TB_CFG (JSON: p_valid,
p_ready, resets, params, seed). Checks, unless the stimulus says check = 0:

* every beat against the golden beats, bit for bit, in order (scoreboard);
* every operation's cycle count: cycles - stall cycles == sparsetrain.arch.timing, where a stall
  cycle is one in which no progress handshake (cfg, Port-1/2/3, final beat) happened; and
  with no back-pressure (p_valid = p_ready = 1) there must be no stall cycle at all and every
  op's cfg and final-beat cycle must equal arch.timing.schedule (back-to-back ops, cfgs
  offered early). With prefetch and overlapping ops under back-pressure the per-op count is
  not defined (ops share cycles), so only the beats are checked there (``serial`` runs one op
  at a time to check the count under back-pressure);
* cfg_error set exactly for refused operations.
No torch here: numpy and the stimulus file only.
"""
from __future__ import annotations

import json
import os
import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock

from ..arch.pe import HwParams
from ..hw.layouts import beat_layout
from .streams import ClockedBench, Scoreboard, fail_on_problems, StreamSink, StreamSource, signal_int, unpack

RESET_CYCLES = 2


class _OpTracker:
    """Follows the operations on the ports: ops n_fin .. n_cfg-1 are in flight (cfg accepted,
    final beat not yet); beats belong to the oldest of them (results leave in order)."""

    def __init__(self, n_ops: int):
        self.n_cfg = 0
        self.head = 0  # oldest op in flight
        self.progress = False
        self.start = np.zeros(n_ops, dtype=np.int64)
        self.final = np.zeros(n_ops, dtype=np.int64)
        self.cycles = np.zeros(n_ops, dtype=np.int64)
        self.stalls = np.zeros(n_ops, dtype=np.int64)
        self.cfg_error = np.zeros(n_ops, dtype=np.int64)
        self.aborted = np.zeros(n_ops, dtype=np.int64)
        self.finished = 0
        self.resets_fired = 0

    @property
    def in_op(self) -> bool:
        return self.head < self.n_cfg


class PairSource(StreamSource):
    """Port-1 with look-ahead: offers the first two pending entries of the row (the second
    only when the first is not the row's last) and takes one or two per handshake, as
    ``port1_take2`` says."""

    def __init__(self, dut, name, *, entry_w: int, last_bit: int, **kw):
        super().__init__(dut, name, None, **kw)
        self.entry_w, self.last_bit = entry_w, last_bit
        self.take2 = dut.port1_take2

    def drive(self) -> None:
        if self.hold:
            self.offering = False
        elif not self.offering and self.queue and self.rng.random() < self.probability:
            self.offering = True
            first = self.queue[0]
            pair = first
            if not (first >> self.last_bit) & 1 and len(self.queue) > 1:
                pair |= (self.queue[1] << self.entry_w) | (1 << (2 * self.entry_w))
            self.payload.value = pair
        if self.offering != self._driven:
            self.valid.value = int(self.offering)
            self._driven = self.offering

    def sample(self, cycle: int):
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


@cocotb.test()
async def pe_ops(dut):
    tb = json.loads(os.environ["PE_TB_CFG"])
    stim = np.load(os.environ["PE_STIM"])
    p = HwParams(dw=tb["params"]["DW"], k_max=tb["params"]["K_MAX"], w_max=tb["params"]["W_MAX"],
                 acc_w=tb["params"]["ACC_W"])
    prefetch, lookahead, serial = bool(tb.get("prefetch")), int(tb.get("lookahead", 1)), bool(tb.get("serial"))
    overlap = prefetch and not serial  # several ops in flight at once
    seed = int(tb["seed"])
    dut._log.info(f"PE testbench seed {seed}, p_valid {tb['p_valid']}, p_ready {tb['p_ready']}, "
                  f"prefetch {prefetch}, lookahead {lookahead}, serial {serial}")
    rng = random.Random(seed)
    check = bool(int(stim["check"]))
    n_ops = len(stim["cfg"])
    exp_cycles = stim["exp_cycles"]
    exp_error = stim["exp_error"]
    layout = beat_layout(p)
    km = p.k_max

    cocotb.start_soon(Clock(dut.clk, 10, units="ns").start())
    dut.rst.value = 1
    bench = ClockedBench(dut.clk)
    tr = _OpTracker(n_ops)
    got_beats: list[list[int]] = []
    board = Scoreboard("pe beats")
    if check:
        for row in stim["beats"]:
            board.expect((int(row[0]), int(row[1]), int(row[2]), int(row[3]), tuple(int(x) for x in row[4:])))

    def progress(_item, _cycle):
        tr.progress = True

    def on_cfg(_item, cycle):
        tr.start[tr.n_cfg] = cycle
        tr.n_cfg += 1
        tr.progress = True

    def on_beat(raw, cycle):
        b = unpack(layout, raw)
        op = tr.head
        item = (op, b["base"], b["count"], b["last"], tuple(b["lanes"]))
        got_beats.append([op, b["base"], b["count"], b["last"], *b["lanes"]])
        if check:
            board.observe(item)
        if b["last"]:
            tr.progress = True
            tr.cycles[op] = cycle - tr.start[op] + 1
            tr.final[op] = cycle
            tr.cfg_error[op] = signal_int(dut.cfg_error)
            tr.finished += 1
            tr.head += 1

    pv, pr = float(tb["p_valid"]), float(tb["p_ready"])
    cfg_src = bench.add(StreamSource(dut, "cfg", None, rng=rng, p_valid=pv, on_transfer=on_cfg))
    if lookahead == 2:
        ew = p.dw + p.off_w + 1
        p1 = bench.add(PairSource(dut, "port1", entry_w=ew, last_bit=ew - 1, rng=rng, p_valid=pv,
                                  on_transfer=progress))
    else:
        p1 = bench.add(StreamSource(dut, "port1", None, rng=rng, p_valid=pv, on_transfer=progress))
    p2 = bench.add(StreamSource(dut, "port2", None, rng=rng, p_valid=pv, on_transfer=progress))
    p3 = bench.add(StreamSource(dut, "port3", None, rng=rng, p_valid=pv, on_transfer=progress))
    bench.add(StreamSink(dut, "out", layout, rng=rng, p_ready=pr, on_transfer=on_beat, raw=True))
    cfg_src.send(int(x) for x in stim["cfg"])
    p1.send(int(x) for x in stim["p1"])
    p2.send(int(x) for x in stim["p2"])
    p3.send(int("".join(str(b) for b in row[::-1]), 2) for row in stim["masks"])
    tags = {p1: deque(int(x) for x in stim["p1_op"]), p2: deque(int(x) for x in stim["p2_op"]),
            p3: deque(int(x) for x in stim["mask_op"])}
    for src in (p1, p2, p3):  # keep each item's op tag in step with its queue
        src.on_transfer = (lambda s: lambda item, cycle: (tags[s].popleft(), progress(item, cycle)))(src)

    resets = {int(op): int(after) for op, after in tb["resets"]}
    reset_left = RESET_CYCLES  # the initial reset

    def before_drive(_cycle):
        nonlocal reset_left
        hold = reset_left > 0
        dut.rst.value = int(hold)
        for e in bench.endpoints:
            e.hold = hold
        if serial and tr.in_op:  # one op at a time: the next cfg waits for the final beat
            cfg_src.hold = True
        if reset_left > 0:
            reset_left -= 1

    def after_sample(cycle):
        nonlocal reset_left
        if tr.in_op and not tr.progress:
            tr.stalls[tr.head] += 1
        tr.progress = False
        for op in range(tr.head, tr.n_cfg):
            if op in resets and cycle - tr.start[op] + 1 == resets[op]:
                tr.resets_fired += 1
                for gone in range(tr.head, tr.n_cfg):  # the reset drops every op in flight
                    abort(gone)
                tr.head = tr.n_cfg
                reset_left = RESET_CYCLES
                break

    def abort(op):
        tr.aborted[op] = 1
        tr.finished += 1
        for s, tag in tags.items():
            while tag and tag[0] == op:
                tag.popleft()
                s.queue.popleft()
            s.offering = False
        while board.expected and board.expected[0][0] == op:
            board.expected.popleft()

    bench.before_drive.append(before_drive)
    bench.on_cycle(after_sample)
    slow = 1.0 / min(pv, pr)
    limit = int((int(exp_cycles.sum()) + 4 * n_ops) * slow * 4) + 1000
    try:
        await bench.run_until(lambda: tr.finished == n_ops and reset_left == 0, limit)
    finally:
        beats = np.asarray(got_beats, dtype=np.int64).reshape(-1, 4 + km)
        np.savez(os.environ["PE_RESULT"], beats=beats, cycles=tr.cycles, stalls=tr.stalls,
                 cfg_error=tr.cfg_error, aborted=tr.aborted, cfg_cycle=tr.start, final_cycle=tr.final,
                 resets_fired=np.asarray(tr.resets_fired))
    if not check:
        return
    problems = []
    live = tr.aborted == 0
    bad = np.flatnonzero(live & (tr.cycles - tr.stalls != exp_cycles)) if not overlap else np.zeros(0, int)
    if bad.size:
        problems.append(f"{bad.size} ops off the timing contract, first: " + ", ".join(
            f"op {i}: {tr.cycles[i]} cycles - {tr.stalls[i]} stalls != {exp_cycles[i]}" for i in bad[:5]))
    if pv == 1.0 and pr == 1.0 and tr.stalls[live].any():
        problems.append(f"stall cycles without back-pressure in ops {np.flatnonzero(live & (tr.stalls > 0))[:5]}")
    if pv == 1.0 and pr == 1.0 and not resets and not serial:
        # the whole back-to-back sequence, cycle for cycle (cycle 1 = the first cfg)
        a = tr.start - tr.start[0] + 1
        f = tr.final - tr.start[0] + 1
        bad = np.flatnonzero((a != stim["exp_a"]) | (f != stim["exp_f"]))
        if bad.size:
            problems.append(f"{bad.size} ops off the schedule, first: " + ", ".join(
                f"op {i}: cfg {a[i]} final {f[i]} != {stim['exp_a'][i]}, {stim['exp_f'][i]}" for i in bad[:5]))
    bad = np.flatnonzero(live & (tr.cfg_error != exp_error))
    if bad.size:
        problems.append(f"cfg_error wrong in ops {bad[:5]}")
    fail_on_problems(seed, problems, board)
    dut._log.info(f"{n_ops} ops ({int(tr.aborted.sum())} aborted by reset), {board.matched} beats, "
                  f"{bench.cycle} cycles: all match")
