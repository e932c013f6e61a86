"""cocotb testbench of the PPU: runs a command sequence from a stimulus file.

Launched by ``sim_tb.ppu_driver.run_ppu``. Environment: PPU_STIM (npz written by
``ppu_driver.write_stimulus``), PPU_RESULT (npz this test writes), PPU_TB_CFG (JSON:
p_valid, p_ready, seed, cfg, corrupt). Checks (scoreboard against golden.bitexact.ppu_model):

* every output entry (value, offset, last), in order;
* the whole readback status (and the ReLU mask) after every command, sampled in the cycle
  the next command is accepted (or once idle after the last one);
* the timing contract of section 7.1: with no back-pressure every command's occupancy
  equals ``command_cycles``; with back-pressure ACCUM ends the cycle after its last beat,
  FINISH lies between the contract and the contract plus its blocked-output cycles, and
  every other command is exact.
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

from ..arch.ppu import N_PE, Op, PPUConfig
from ..hw.layouts import beat_layout, entry_layout
from ..hw.ppu import hw_params, ppu_cmd_layout, ppu_status_layout, ppu_status_sel_layout
from .ppu_driver import CMD_FIELDS, RESET, STATUS_FIELDS
from .streams import ClockedBench, Scoreboard, fail_on_problems, StreamSink, StreamSource, pack, signal_int, unpack

RESET_CYCLES = 2


@cocotb.test()
async def ppu_commands(dut):
    tb = json.loads(os.environ["PPU_TB_CFG"])
    stim = np.load(os.environ["PPU_STIM"])
    cfg = PPUConfig(**tb["cfg"])
    p = hw_params(cfg)
    seed = int(tb["seed"])
    pv, pr = float(tb["p_valid"]), float(tb["p_ready"])
    dut._log.info(f"PPU testbench seed {seed}, p_valid {pv}, p_ready {pr}")
    rng = random.Random(seed)
    cmd_l, sel_l, st_l = ppu_cmd_layout(cfg), ppu_status_sel_layout(cfg), ppu_status_layout(cfg)
    ent_l, beat_l = entry_layout(p), beat_layout(p)

    cmds, sels = stim["cmds"], stim["sel"]
    n = len(cmds)
    exp_status = stim["exp_status"].copy()
    exp_mask = stim["exp_mask"]
    exp_cycles = stim["exp_cycles"]
    entries_board = Scoreboard("ppu entries")
    exp_entries = stim["exp_entries"].copy()
    if tb["corrupt"] and len(exp_entries):
        exp_entries[0, 1] ^= 1
    for f, v, o, last in exp_entries:
        entries_board.expect((int(f), int(v), int(o), int(last)))

    cocotb.start_soon(Clock(dut.clk, 10, units="ns").start())
    dut.rst.value = 1
    dut.status_sel.value = 0
    bench = ClockedBench(dut.clk)

    accept = np.full(n, -1, dtype=np.int64)
    occupancy = np.zeros(n, dtype=np.int64)
    blocked = np.zeros(n, dtype=np.int64)
    last_beat = np.full(n, -1, dtype=np.int64)
    got_entries: list[list[int]] = []
    status_problems: list[str] = []
    state = {"next": 0, "inflight": -1, "done_prev": -1, "finishes": 0, "reset_left": RESET_CYCLES,
             "finish_cmds": 0}

    def check_status(txn: int) -> None:
        raw = signal_int(dut.status)
        got = unpack(st_l, raw)
        want = {f: int(v) for f, v in zip(STATUS_FIELDS, exp_status[txn])}
        words = [int(w) for w in exp_mask[txn]]
        want["relu_mask"] = sum(w << (32 * i) for i, w in enumerate(words))
        bad = {k: (w, got[k]) for k, w in want.items() if got[k] != w}
        if bad and len(status_problems) < 5:
            status_problems.append(f"status after txn {txn} (op {int(cmds[txn][0])}): "
                                   + ", ".join(f"{k} expected {w} got {g}" for k, (w, g) in bad.items()))
        elif bad:
            status_problems.append("...")

    def finalize(k: int, cycle: int) -> None:
        if k >= 0 and occupancy[k] == 0:
            occupancy[k] = cycle - accept[k]

    def on_cmd(_item, cycle):
        k = state["pending_cmd"]
        finalize(state["inflight"], cycle)
        if state["done_prev"] >= 0:
            check_status(state["done_prev"])
        accept[k] = cycle
        state["inflight"] = k
        state["done_prev"] = k
        if int(cmds[k][0]) == Op.FINISH:
            state["finish_cmds"] += 1

    def on_entry(raw, _cycle):
        e = unpack(ent_l, raw)
        item = (state["finishes"], e["value"], e["offset"], e["last"])
        got_entries.append(list(item))
        entries_board.observe(item)
        if e["last"]:
            state["finishes"] += 1

    cmd_src = bench.add(StreamSource(dut, "cmd", None, rng=rng, p_valid=pv, on_transfer=on_cmd))
    pe_srcs = []
    beat_owner: list[deque] = [deque() for _ in range(N_PE)]  # (txn, last) per queued beat
    for j in range(N_PE):
        src = StreamSource(dut, f"pe{j}", None, rng=rng, p_valid=pv)

        def on_beat(_item, cycle, j=j):
            txn, last = beat_owner[j].popleft()
            if last:
                last_beat[txn] = max(last_beat[txn], cycle)
        src.on_transfer = on_beat
        pe_srcs.append(bench.add(src))
    sink = bench.add(StreamSink(dut, "out", ent_l, rng=rng, p_ready=pr, on_transfer=on_entry, raw=True))

    # queue every PE beat up front, tagged with the ACCUM it belongs to (in command order)
    accum_ids = [k for k in range(n) if int(cmds[k][0]) == Op.ACCUM]
    beats = stim["beats"]
    per_pe: list[list] = [[] for _ in range(N_PE)]
    for row in beats:
        per_pe[int(row[0])].append(row)
    for j in range(N_PE):
        owner_iter = iter([k for k in accum_ids if int(cmds[k][CMD_FIELDS.index("pe_mask")]) >> j & 1])
        txn = None
        for row in per_pe[j]:
            if txn is None:
                txn = next(owner_iter)
            lanes = [int(x) for x in row[4:]]
            raw = pack(beat_l, {"base": int(row[1]), "count": int(row[2]), "last": int(row[3]), "lanes": lanes})
            pe_srcs[j].send([raw])
            beat_owner[j].append((txn, int(row[3])))
            if int(row[3]):
                txn = None

    def idle() -> bool:
        return (signal_int(dut.cmd__ready) == 1 and not cmd_src.offering and not cmd_src.queue
                and signal_int(dut.out__valid) == 0 and state["finishes"] == state["finish_cmds"])

    def before_drive(_cycle):
        if state["reset_left"] > 0:
            dut.rst.value = 1
            state["reset_left"] -= 1
            for e in bench.endpoints:
                e.hold = True
            return
        dut.rst.value = 0
        for e in bench.endpoints:
            e.hold = False
        if state["done_prev"] >= 0:
            s = sels[state["done_prev"]]
            dut.status_sel.value = pack(sel_l, {"slot": int(s[0]), "index": int(s[1])})
        k = state["next"]
        if k < n and not cmd_src.queue and not cmd_src.offering:
            if int(cmds[k][0]) == RESET:
                if idle() and state["inflight_done"]:
                    finalize(state["inflight"], bench.cycle)
                    if state["done_prev"] >= 0:
                        check_status(state["done_prev"])
                    state["inflight"] = -1
                    state["done_prev"] = k
                    state["next"] = k + 1
                    state["reset_left"] = RESET_CYCLES - 1
                    dut.rst.value = 1
                    for e in bench.endpoints:
                        e.hold = True
            else:
                fields = {f: int(v) for f, v in zip(CMD_FIELDS, cmds[k])}
                state["pending_cmd"] = k
                state["next"] = k + 1
                cmd_src.send([pack(cmd_l, fields)])

    def after_sample(cycle):
        k = state["inflight"]
        state["inflight_done"] = k < 0 or occupancy[k] > 0
        if k >= 0 and occupancy[k] == 0 and cycle > accept[k]:
            if sink.blocked:
                blocked[k] += 1
            if signal_int(dut.cmd__ready):
                finalize(k, cycle)
                state["inflight_done"] = True

    state["inflight_done"] = True
    bench.before_drive.append(before_drive)
    bench.on_cycle(after_sample)
    slow = 1.0 / min(pv, pr)
    limit = int((int(exp_cycles.sum()) + 10 * n) * slow * 4) + 1000
    def where() -> str:
        return (f"next txn {state['next']} of {n}, in flight {state['inflight']}, busy "
                f"{unpack(st_l, signal_int(dut.status))['busy']}, {entries_board.matched} entries matched, "
                f"{len(entries_board.expected)} expected left, mismatches {entries_board.mismatches[:3]}")

    try:
        await bench.run_until(lambda: state["next"] >= n and state["inflight_done"] and idle()
                              and state["reset_left"] == 0, limit)
        await bench.step()  # status_sel of the last command settles
        check_status(n - 1)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}; {where()}") from None
    finally:
        np.savez(os.environ["PPU_RESULT"], entries=np.asarray(got_entries, dtype=np.int64).reshape(-1, 4),
                 occupancy=occupancy, blocked=blocked)

    problems = list(status_problems)
    live = np.asarray([int(c[0]) != RESET for c in cmds])
    ops = np.asarray([int(c[0]) for c in cmds])
    if pv == 1.0 and pr == 1.0:
        bad = np.flatnonzero(live & (occupancy != exp_cycles))
    else:
        accum = live & (ops == Op.ACCUM) & (last_beat >= 0)
        fin = live & (ops == Op.FINISH)
        other = live & ~accum & ~fin & ~((ops == Op.ACCUM) & (last_beat < 0))
        bad = np.flatnonzero((accum & (occupancy != last_beat - accept + 1))
                             | (fin & ((occupancy < exp_cycles) | (occupancy > exp_cycles + blocked)))
                             | (other & (occupancy != exp_cycles)))
    if bad.size:
        problems.append(f"{bad.size} commands off the timing contract, first: " + ", ".join(
            f"txn {i} op {ops[i]}: {occupancy[i]} cycles, contract {exp_cycles[i]}, blocked {blocked[i]}"
            for i in bad[:5]))
    fail_on_problems(seed, problems, entries_board)
    dut._log.info(f"{n} commands, {entries_board.matched} entries, {bench.cycle} cycles: all match")
