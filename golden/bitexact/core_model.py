"""Transaction-level, bit-accurate model of the core running a program (architecture s.11).

``run_program`` executes the instructions with ``golden.bitexact.rowops`` (the PE) and
``golden.bitexact.ppu_model.PPUModel`` (one per group), dispatching units and ops exactly as the
controller does (s.10.2 plus the unit dispatch latency of s.11.4, bare units and the unit blocks
of s.12.9 handed out up to UNIT_RATE per cycle, ``UnitHandout``; with the second-generation
switches of ``CoreParams``, the group's dispatcher of s.12.2 / 12.4, ``unit_time``), so the
result rows, the directory, the counters and ``cycles`` are what the RTL must produce; with
PINGPONG (s.12.3) a group's units overlap (``GroupClock``).
``cycles_contract`` is the prediction of ``sparsetrain.arch.schedule`` (section 10) for the same
units, or of ``sparsetrain.arch.schedule2`` (section 12) for a second-generation core.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from ...arch.fixedpoint import SparseRow, sat, sat_unsigned
from ...arch.isa import (FIELDS, N_STEPS, CoreParams, ErrorCode, Opcode, decode, dir_decode, dir_encode,
                         entry_decode, entry_encode)
from ...arch.group_timing import GroupClock, PEState, UnitHandout, dispatch_ops, unit_time  # noqa: F401 (the model's API)
from ...arch.microarch import op_times
from ...arch.ppu import N_PE, PPU_LAT, Op, PPUCommand, command_cycles
from ...arch.timing import Mode, lookahead_cycles, msrc_skips, op_timing, osrc_skips, pe_cycles, schedule
from .ppu_model import PPUModel, tau_batch
from .rowops import msrc, osrc, src


class ProgramError(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


@dataclass
class UnitTrace:
    group: int
    dispatch: int          # cycle the UNIT was handed to the group
    end: int               # cycle its last result entry was written
    op_cycles: list[int]
    length: int
    step: int
    ops: list = field(default_factory=list)   # OpInfo of every OP word (issued or not), section 12


@dataclass
class CoreRun:
    buffer: np.ndarray                 # buffer words after the run
    directory: np.ndarray              # directory words after the run
    error: int = 0
    error_message: str = ""
    cycles: int = 0                    # the RTL's cycle counter (s.11.4)
    cycles_contract: int = 0           # sparsetrain.arch.schedule (section 10)
    step_nnz: list[int] = field(default_factory=lambda: [0] * N_STEPS)
    step_rows: list[int] = field(default_factory=lambda: [0] * N_STEPS)
    step_elems: list[int] = field(default_factory=lambda: [0] * N_STEPS)
    units: list[UnitTrace] = field(default_factory=list)
    ppus: list[PPUModel] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    vectorised: bool = False           # golden.bitexact.core_vec's fast path ran (else the scalar model)
    total_cycles: int = 0              # the RTL's total_cycles: from start to done (s.11.4)
    pe_busy_cycles: int = 0            # busy PE-cycles (s.12.7), every group's PEs together
    db_banks: list[list[int]] = field(default_factory=list)  # per group: DB_DEPTH bias-gradient sums (s.11.6)

    def db_read(self, index: int, p: CoreParams) -> int:
        """What the host reads at ``host_rsel = 2``: the sum over the groups' banks, saturated to G_W."""
        if not 0 <= index < p.db_depth:
            raise ValueError(f"index = {index} is out of range; allowed: 0 .. {p.db_depth - 1} (DB_DEPTH)")
        return sat(sum(b[index] for b in self.db_banks), p.ppu_config().g_w)

    def db_add(self, group: int, index: int, value: int, p: CoreParams) -> None:
        """A unit with ``db_en`` wrote its last result entry: its row sum into its group's bank."""
        bank = self.db_banks[group]
        bank[index] = sat(bank[index] + int(value), p.ppu_config().g_w)

    def row_entries(self, index: int, p: CoreParams) -> list[tuple[int, int, int]]:
        d = dir_decode(int(self.directory[index]))
        if not d["written"]:
            raise ValueError(f"dir = {index} is out of range; allowed: a directory entry written by the program")
        return [entry_decode(int(w), p) for w in self.buffer[d["start"]:d["start"] + d["entries"]]]

    def row(self, index: int, length: int, p: CoreParams) -> np.ndarray:
        out = np.zeros(length, np.int64)
        for v, o, _ in self.row_entries(index, p):
            if o != p.off_end:
                out[o] = v
        return out


class _Unit:
    def __init__(self, cycles: list[int], row_len: int, ops: "_UnitOps | None" = None, bias_en: bool = False):
        self.cycles = np.asarray(cycles, dtype=np.int64)
        self.row_len = row_len
        self.ops = ops
        self.bias_en = bias_en   # its START (12.4: a unit's ACCUM starts a cycle later after one)


@dataclass
class OpInfo:
    """One OP of a unit as the dispatcher and its PE see it (section 12): issued (D skips it
    otherwise), the PE's load and compute lengths (L, C of section 6.1)."""

    issued: bool
    mode: Mode
    load: int = 0
    compute: int = 0

    def cycles(self, prefetch: bool) -> int:
        """Cycles from cfg to final beat inclusive of the op alone (section 6 / 6.1)."""
        return op_times(None, 1, self.mode, self.load, self.compute, prefetch).f


class _UnitOps:
    """A unit's ops in the form ``arch.schedule2.run_unit`` takes (issue order, issued or not)."""

    def __init__(self, ops: Sequence[OpInfo], mode: Mode):
        self.issued = np.array([o.issued for o in ops], bool)
        self.load = np.array([o.load for o in ops], np.int64)
        self.compute = np.array([o.compute for o in ops], np.int64)
        self.useful = np.zeros(len(ops), np.int64)
        self.mode = mode


def read_row(buffer: np.ndarray, addr: int, p: CoreParams, count: int | None = None) -> list[tuple[int, int, int]]:
    """Entries from ``addr`` until the first ``last`` (or exactly ``count`` words)."""
    out = []
    a = addr
    while True:
        if a >= p.buf_depth:
            raise ProgramError(ErrorCode.ADDRESS, f"row at {addr} runs past BUF_DEPTH = {p.buf_depth}")
        e = entry_decode(int(buffer[a]), p)
        out.append(e)
        a += 1
        if (count is not None and len(out) == count) or (count is None and e[2]):
            return out


def _sparse(entries, length: int, p: CoreParams) -> SparseRow:
    pairs = [(o, v) for v, o, _ in entries if o != p.off_end]
    return SparseRow(length, [o for o, _ in pairs], [v for _, v in pairs])


def check_op(f: Mapping[str, int], p: CoreParams) -> None:
    ok = (f["mode"] != 3 and 1 <= f["k"] <= p.k_max and f["pad"] < f["k"]
          and 1 <= f["in_len"] <= p.w_max and 1 <= f["out_len"] <= p.w_max)
    if not ok:
        raise ProgramError(ErrorCode.BAD_OP, f"op configuration {dict(f)} is out of range (section 11.3)")
    if f["addr1"] >= p.buf_depth or f["addr2"] >= p.buf_depth:
        raise ProgramError(ErrorCode.ADDRESS, f"operand address {f['addr1']}/{f['addr2']} >= BUF_DEPTH")
    if f["mode"] == Mode.MSRC and f["mask_addr"] >= p.mask_depth:
        raise ProgramError(ErrorCode.ADDRESS, f"mask_addr = {f['mask_addr']} >= MASK_DEPTH = {p.mask_depth}")


def check_unit(f: Mapping[str, int], op_addr: int, p: CoreParams) -> None:
    """Section 11.3 checks of a UNIT word whose first OP word is at ``op_addr`` (a bare unit at
    ``pc``: ``pc + 1``; unit ``i`` of a block: ``o_i``, section 12.9)."""
    if (f["length"] > p.w_max or f["shift"] >= p.acc_w or f["slot"] >= p.n_slots
            or (f["db_en"] and f["db"] >= p.db_depth)):
        raise ProgramError(ErrorCode.BAD_UNIT, f"unit {dict(f)} is out of range (section 11.3)")
    lim = (1 << (p.acc_w - 1)) - 1
    if f["bias_en"] and not -lim <= f["bias"] <= lim:
        raise ProgramError(ErrorCode.BAD_UNIT, f"bias = {f['bias']} does not fit ACC_W = {p.acc_w}")
    if (f["dir"] >= p.dir_depth or f["out_addr"] + max(1, f["length"]) > p.buf_depth
            or op_addr + f["n_ops"] > p.imem_depth):
        raise ProgramError(ErrorCode.ADDRESS, f"unit {dict(f)} does not fit the memories")


def execute_op(f: Mapping[str, int], buffer: np.ndarray, masks: Sequence[int], p: CoreParams):
    """One OP on the golden PE: (beats, first-generation cycles, OpInfo with L and C; C of an
    MSRC op with LOOKAHEAD = 2 from its skip entries, of an OSRC op with OSRC_WINDOW = 2 from its
    skip merge actions, section 6.1)."""
    k, s, pad = f["k"], 1 + f["stride2"], f["pad"]
    mode = Mode(f["mode"])
    e1 = read_row(buffer, f["addr1"], p)
    if mode is Mode.OSRC:
        e2 = read_row(buffer, f["addr2"], p)
        r = osrc(_sparse(e1, f["in_len"], p), _sparse(e2, f["out_len"], p), k, stride=s, pad=pad, acc_w=p.acc_w)
        if p.osrc_window == 2:  # the merge actions without a partner go two a cycle
            skips = osrc_skips([o for _, o, _ in e1 if o != p.off_end], [o for _, o, _ in e2 if o != p.off_end],
                               k, s, pad)
            t = op_timing(mode, k, len(e1), len(e2), skips=skips, osrc_window=2)
            return r.beats, schedule([t])[0].cycles, OpInfo(True, mode, 0, t.compute)
        return r.beats, pe_cycles(mode, k, len(e1), len(e2)), OpInfo(True, mode, 0, len(e1) + len(e2))
    w = [v for v, _, _ in read_row(buffer, f["addr2"], p, count=k)]
    compute = len(e1)
    if mode is Mode.SRC:
        r = src(w, _sparse(e1, f["in_len"], p), stride=s, pad=pad, out_len=f["out_len"], acc_w=p.acc_w)
    else:
        mword = int(masks[f["mask_addr"]]) if f["mask_addr"] < len(masks) else 0
        mask = [(mword >> x) & 1 for x in range(f["out_len"])]
        r = msrc(w, _sparse(e1, f["in_len"], p), mask, stride=s, pad=pad, acc_w=p.acc_w)
        if p.lookahead == 2:
            offs = [o for _, o, _ in e1 if o != p.off_end]
            compute = lookahead_cycles(msrc_skips(offs, mask, k, s, pad), 2)
    return r.beats, pe_cycles(mode, k, compute), OpInfo(True, mode, k, compute)


def unit_ops_time(op_cycles: Sequence[int], length: int, bias_en: bool) -> tuple[int, list[int]]:
    """Cycles from a unit's dispatch to its end, and the PE of each op (first free, ties lowest)."""
    free = [0] * N_PE
    pes = []
    for c in op_cycles:
        j = min(range(N_PE), key=lambda i: (free[i], i))
        pes.append(j)
        free[j] += c
    if not op_cycles:
        return length + PPU_LAT + (1 if bias_en else 0), pes  # START then FINISH, no ACCUM
    return max(free) + length + PPU_LAT, pes


# The group's dispatcher and unit sequencer (``unit_time``, ``dispatch_ops``, ``GroupClock``)
# are one rule of the contract, ``sparsetrain.arch.group_timing``: the section 12 schedule uses
# the same functions, so ``cycles_contract`` and ``cycles`` differ only in how units are handed
# out (none with the core's UNIT_RATE, 12.9).


def run_program(program: Sequence[int], buffer_image: Sequence[int] | np.ndarray, params: CoreParams,
                masks: Sequence[int] = (), directory: Sequence[int] | None = None,
                ppus: Sequence[PPUModel] | None = None) -> CoreRun:
    """Execute ``program`` on a buffer loaded with ``buffer_image`` (the rest zero). ``ppus``: the
    PPUs' state at the start (copied; default: reset), e.g. the previous program's ``CoreRun.ppus``
    when the core runs a layer's programs one after the other without a reset (s.11.5)."""
    p = params
    if len(program) > p.imem_depth:
        raise ValueError(f"program = {len(program)} words is out of range; allowed: 1 .. {p.imem_depth}")
    if len(buffer_image) > p.buf_depth:
        raise ValueError(f"buffer_image = {len(buffer_image)} words is out of range; allowed: 0 .. {p.buf_depth}")
    buf = np.zeros(p.buf_depth, dtype=object)
    buf[:len(buffer_image)] = [int(w) for w in buffer_image]
    dirs = np.zeros(p.dir_depth, dtype=object)
    if directory is not None:
        dirs[:len(directory)] = [int(w) for w in directory]
    if len(masks) > p.mask_depth:
        raise ValueError(f"masks = {len(masks)} words is out of range; allowed: 0 .. {p.mask_depth}")
    run = CoreRun(buf, dirs, ppus=initial_ppus(p, ppus),
                  masks=[int(m) for m in masks], db_banks=[[0] * p.db_depth for _ in range(p.groups)])
    words = [int(w) for w in program] + [0] * (p.imem_depth - len(program))
    G = p.groups
    clocks = [GroupClock(bool(p.pingpong)) for _ in range(G)]
    taken = [0] * G       # units each group took (PINGPONG: the k-th uses accumulator k mod 2)
    busy: list[tuple[int, int]] = []
    segments: list[list[_Unit]] = [[]]
    step, t, pc = 0, 0, 0
    handout = UnitHandout(p.unit_rate)

    def unit(f: Mapping[str, int], at: int, op_addr: int, t: int) -> int:
        """The (checked) UNIT word at ``at``, its OPs from ``op_addr``, reached in cycle ``t``: hand
        it out, run it; returns its dispatch cycle."""
        c, g = handout.take(t, clocks)
        ops = _run_unit(f, words[op_addr:op_addr + f["n_ops"]], at, op_addr, run, run.ppus[g], p, step,
                        acc=taken[g] % 2 if p.pingpong else 0)
        if f["db_en"]:
            run.db_add(g, f["db"], _written_sum(run.buffer, f["out_addr"], p), p)
        taken[g] += 1
        end = clocks[g].unit(c, ops, f["length"], bool(f["bias_en"]), p)
        handout.took(clocks[g], c)
        cycles = [o.cycles(bool(p.prefetch)) for o in ops if o.issued]
        run.units.append(UnitTrace(g, c, end, cycles, f["length"], step, ops))
        busy.append((c + 1, end))
        segments[-1].append(_Unit(cycles, f["length"], _UnitOps(ops, ops[0].mode if ops else Mode.SRC),
                                  bool(f["bias_en"])))
        return c

    try:
        while True:
            if pc >= p.imem_depth:
                raise ProgramError(ErrorCode.ADDRESS, f"pc = {pc} ran past IMEM_DEPTH = {p.imem_depth}")
            op, f = decode(words[pc])
            if op not in FIELDS or op == Opcode.OP:
                raise ProgramError(ErrorCode.BAD_OPCODE, f"word {pc} has opcode {op} outside a unit")
            if op == Opcode.NOP:
                t, pc = t + 1, pc + 1
            elif op == Opcode.UNITS:
                t, pc = unit_block(f["count"], pc, t, words, p, unit)
            elif op in (Opcode.SYNC, Opcode.END):
                t = max([t] + [k.idle_at for k in clocks]) + 1
                if op == Opcode.END:
                    run.total_cycles = t
                    break
                step, pc = f["step"], pc + 1
                segments.append([])
            elif op == Opcode.PPU:
                check_ppu_word(f, p, pc)
                t, pc = ppu_word(f, run, p, t, clocks), pc + 1
            else:
                check_unit(f, pc + 1, p)
                t, pc = unit(f, pc, pc + 1, t) + 1, pc + 1 + f["n_ops"]
    except ProgramError as e:
        run.error, run.error_message = int(e.code), str(e)
    run.cycles = _union_length(busy)
    run.cycles_contract = sum(_schedule(seg, p) for seg in segments)
    run.pe_busy_cycles = sum(k.busy for k in clocks)
    return run


def unit_block(count: int, h: int, t: int, words: Sequence[int], p: CoreParams, unit) -> tuple[int, int]:
    """The unit block whose ``UNITS(count)`` header is at ``h``, reached in cycle ``t`` (section
    12.9): the header takes the cycle; unit ``i`` (word ``h + 1 + i``, its OPs from ``o_i``) is
    checked when it is the next to hand out and handed out with ``unit(fields, address, o_i,
    cycle reached)`` (which returns its cycle; the next unit is reached in that cycle). Returns
    (the cycle after the last unit's, the word after the last OP: ``o_count``)."""
    if count == 0:
        raise ProgramError(ErrorCode.BAD_UNIT, f"UNITS at {h} has count = 0; allowed: 1 .. 65535")
    t += 1
    o = h + 1 + count
    for i in range(count):
        at = h + 1 + i
        if at >= p.imem_depth:
            raise ProgramError(ErrorCode.ADDRESS, f"UNIT word {at} of the block at {h} is past IMEM_DEPTH = "
                               f"{p.imem_depth}")
        op, f = decode(words[at])
        if op != Opcode.UNIT:
            raise ProgramError(ErrorCode.BAD_OPCODE, f"word {at} of the block at {h} is not a UNIT (opcode {op})")
        check_unit(f, o, p)
        t = unit(f, at, o, t)
        o += f["n_ops"]
    return t + 1, o


def _ppu_command(f: Mapping[str, int], p: CoreParams) -> PPUCommand:
    return PPUCommand(Op(f["op"]), slot=f["slot"], c_m=f["c_m"], c_shift=f["c_shift"],
                      value=f["value"] & ((1 << (p.dw - 1)) - 1) if f["op"] == Op.PUSH_TAU else f["value"])


def initial_ppus(p: CoreParams, ppus: Sequence[PPUModel] | None) -> list[PPUModel]:
    """Reset PPUs, or copies of ``ppus`` (one per group) to continue from."""
    if ppus is None:
        return [PPUModel(p.ppu_config()) for _ in range(p.groups)]
    if len(ppus) != p.groups:
        raise ValueError(f"ppus = {len(ppus)} PPU states is out of range; allowed: G = {p.groups}")
    return [copy.deepcopy(pp) for pp in ppus]


def check_ppu_word(f: Mapping[str, int], p: CoreParams, pc: int) -> None:
    if (f["op"] in (Op.START, Op.ACCUM, Op.FINISH) or f["slot"] >= p.n_slots
            or (not f["all"] and f["group"] >= p.groups)):
        raise ProgramError(ErrorCode.BAD_UNIT, f"PPU instruction at {pc} {dict(f)} is out of range")


def ppu_word(f: Mapping[str, int], run: CoreRun, p: CoreParams, t: int, clocks: list["GroupClock"]) -> int:
    """A (checked) PPU word reached at cycle ``t``: its command on the PPUs of its targets, their
    busy time; returns the cycle of the next instruction. END_BATCH with ``all = 1`` (s.11.3): the
    controller sums every group's sum|g| of the slot in a first cycle (every group idle), then
    sends every PPU END_BATCH with ``tau_ext`` and ``value`` = tau_batch of that sum."""
    G = p.groups
    targets = range(G) if f["all"] else [f["group"]]
    c = max([t] + [clocks[g].idle_at for g in targets])
    cmd = _ppu_command(f, p)
    if f["all"] and cmd.op == Op.END_BATCH:
        tau = batch_threshold([pp.slots[f["slot"]].abs_sum for pp in run.ppus], f["c_m"], f["c_shift"], p)
        cmd = replace(cmd, tau_ext=True, value=tau)
        c += 1
    n = command_cycles(cmd)
    for g in targets:
        run.ppus[g].apply(cmd)
        clocks[g].idle_at = c + n
        clocks[g].free_at = max(clocks[g].free_at, c + n)
    return c + 1


def _written_sum(buffer: np.ndarray, out_addr: int, p: CoreParams) -> int:
    """Sum of the values of the result row just written at ``out_addr`` (up to its last entry)."""
    return sum(v for v, _, _ in read_row(buffer, out_addr, p))


def row_is_empty(f: Mapping[str, int], directory: np.ndarray) -> bool:
    """SKIP_EMPTY (section 12.4): the op's sparse operand row is empty by the directory's nnz
    (SRC/MSRC: the Port-1 row, ``dir1``; OSRC: either row, ``dir1`` or ``dir2``)."""
    if dir_decode(int(directory[f["dir1"]]))["nnz"] == 0:
        return True
    return f["mode"] == Mode.OSRC and dir_decode(int(directory[f["dir2"]]))["nnz"] == 0


def _run_unit(f: Mapping[str, int], op_words: Sequence[int], at: int, op_addr: int, run: CoreRun, ppu: PPUModel,
              p: CoreParams, step: int, acc: int = 0) -> list[OpInfo]:
    """Run one unit's ops and FINISH on the group's PPU model, in accumulator ``acc`` (PINGPONG);
    the accumulators are independent, so one unit after the other gives the RTL's rows."""
    ops = []
    if f["bias_en"]:
        ppu.start(f["bias"], acc)
    for i, w in enumerate(op_words):
        op, of = decode(w)
        if op != Opcode.OP:
            raise ProgramError(ErrorCode.BAD_OPCODE, f"word {op_addr + i} in the unit at {at} is not an OP")
        check_op(of, p)
        if p.skip_empty:
            if of["dir1"] >= p.dir_depth or (of["mode"] == Mode.OSRC and of["dir2"] >= p.dir_depth):
                raise ProgramError(ErrorCode.ADDRESS, f"dir1/dir2 = {of['dir1']}/{of['dir2']} >= DIR_DEPTH")
            if row_is_empty(of, run.directory):
                ops.append(OpInfo(False, Mode(of["mode"])))
                continue
        beats, _, info = execute_op(of, run.buffer, run.masks, p)
        if ppu.cfg.pingpong:  # beats go to the unit's accumulator (ACCUM is a no-op)
            for b in beats:
                ppu.accumulate_cycle([b, None, None], [acc] * N_PE)
        else:
            ppu.accumulate([beats, [], []], pe_mask=1)
        ops.append(info)
    res = ppu.finish(f["length"], f["shift"], relu=bool(f["relu"]), acc_g=bool(f["acc_g"]),
                     prune=bool(f["prune"]), g_first=bool(f["g_first"]), slot=f["slot"], acc=acc)
    for i, (v, o, last) in enumerate(res.entries):
        run.buffer[f["out_addr"] + i] = entry_encode(v, o, last, p)
    nnz = int(np.count_nonzero(res.dense))
    run.directory[f["dir"]] = dir_encode(f["out_addr"], len(res.entries), nnz)
    run.step_nnz[step] += nnz
    run.step_rows[step] += 1
    run.step_elems[step] += f["length"]
    return ops


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, cur_lo, cur_hi = 0, None, None
    for lo, hi in sorted(intervals):
        if hi < lo:
            continue
        if cur_hi is None or lo > cur_hi + 1:
            if cur_hi is not None:
                total += cur_hi - cur_lo + 1
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None:
        total += cur_hi - cur_lo + 1
    return total


def batch_threshold(abs_sums: Sequence[int], c_m: int, c_shift: int, p: CoreParams) -> int:
    """tau_batch over every group's sum|g| of a slot (s.11.3): sum, saturate to SUM_W, threshold."""
    total = sat_unsigned(int(sum(int(a) for a in abs_sums)), p.ppu_config().sum_w)
    return tau_batch(total, c_m, c_shift, p.dw)


def _schedule(units: list[_Unit], p: CoreParams) -> int:
    """The contract's cycles of a step's units: section 10 (``arch.schedule``) for the first
    generation, section 12 (``arch.schedule2``) for the core's MicroArch."""
    from ...arch.schedule import ArchParams, schedule_units
    from ...arch.schedule2 import schedule_units2
    if not units:
        return 0
    arch = ArchParams(groups=p.groups, w_max=max(2, p.w_max), dw=p.dw, ppu_latency=PPU_LAT)
    micro = p.microarch()
    if micro.is_gen1:
        return schedule_units(units, arch).cycles
    return schedule_units2(units, [u.ops for u in units], arch, micro).cycles
