"""Vectorised (numpy) bit-accurate core model: the same ``CoreRun`` as ``core_model.run_program``.

Why: the scalar model walks every entry of every row op in Python (about 1 ms per row op),
which dominated whole-batch checks. Here every row op of a program is computed at once
(numpy over ops x lanes, one pass per kernel tap), then the units and PPU instructions are
walked in program order for FINISH, the threshold FIFOs, the random generator and the timing.

Exactness: the fast path is taken only where its arithmetic is provably the scalar model's:
- no intermediate sum can saturate: per unit |bias| + sum over its ops of (sum |weights or
  dO|) * max |row| stays within ACC_W (then every saturating add of the PE window and of the
  PPU accumulator is an exact add, and exact addition does not depend on order);
- no op reads a buffer word that any unit of the program writes (so every op sees the
  loaded image, whatever the unit order);
- every instruction, op and row is well formed (the checks of sections 11.3 and 3).
Otherwise ``run_program_fast`` returns the scalar model's run of the same program, so it
equals the scalar model on every program; ``CoreRun.vectorised`` says which path ran.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...arch.fixedpoint import sat_limit
from ...arch.isa import DIR_FIELDS, FIELDS, OPCODE_W, CoreParams, Opcode, decode
from ...arch.ppu import PPU_LAT, Op
from ...arch.timing import Mode, lookahead_cycles, msrc_skips, op_timing, osrc_skips
from .core_model import (CoreRun, GroupClock, OpInfo, UnitHandout, UnitTrace, _schedule, _union_length, _Unit,
                         _UnitOps, initial_ppus, ppu_word, run_program)
from .ppu_model import PPUModel

_M64 = (1 << 64) - 1


class _Fallback(Exception):
    """The fast path cannot prove it equals the scalar model on this program."""


def _chunks(words: Sequence[int]) -> np.ndarray:
    """The low 192 bits of instruction words as (n, 3) uint64 limbs, least significant first
    (an OP's fields end at bit 131)."""
    limbs = [np.array([(w >> (64 * i)) & _M64 for w in words], dtype=np.uint64) for i in range(3)]
    return np.stack(limbs, axis=1)


def _field(limbs: np.ndarray, pos: int, width: int) -> np.ndarray:
    """Unsigned bit field [pos, pos+width) of every word (width <= 32)."""
    i, s = divmod(pos, 64)
    v = limbs[:, i] >> np.uint64(s)
    if s + width > 64:
        v = v | (limbs[:, i + 1] << np.uint64(64 - s))
    return (v & np.uint64((1 << width) - 1)).astype(np.int64)


def _op_fields(limbs: np.ndarray) -> dict[str, np.ndarray]:
    out, pos = {}, OPCODE_W
    for name, width, _signed in FIELDS[Opcode.OP]:
        out[name] = _field(limbs, pos, width)
        pos += width
    return out


@dataclass
class _Rows:
    """Dense rows gathered from the buffer for a set of ops."""

    dense: np.ndarray     # (n, width) values placed at offset + shift
    entries: np.ndarray   # entries read per row (marker included)
    maxabs: np.ndarray    # max |value| per row
    sumabs: np.ndarray    # sum |value| per row (float64: only bounds are made of it)


class _Buffer:
    """The decoded buffer image: value, offset and last of every word."""

    def __init__(self, words: np.ndarray, p: CoreParams):
        self.p = p
        self.val = words & ((1 << p.dw) - 1)
        self.val = np.where(self.val >> (p.dw - 1) == 1, self.val - (1 << p.dw), self.val)
        self.off = (words >> p.dw) & ((1 << p.off_w) - 1)
        self.last = ((words >> (p.dw + p.off_w)) & 1).astype(bool)
        idx = np.where(self.last, np.arange(words.size), words.size)
        self.next_last = np.minimum.accumulate(idx[::-1])[::-1]  # first last at or after each word

    def row_ends(self, addr: np.ndarray) -> np.ndarray:
        """Inclusive end address of the rows starting at ``addr`` (up to their last entry)."""
        end = self.next_last[addr]
        if np.any(end >= self.p.buf_depth):
            raise _Fallback("a row runs past BUF_DEPTH")
        return end

    def rows(self, addr: np.ndarray, end: np.ndarray, length: np.ndarray, shift: np.ndarray,
             width: int) -> _Rows:
        """Sparse rows [addr, end] -> dense (value at offset + shift); checks section 3's format."""
        n = addr.size
        counts = end - addr + 1
        owner = np.repeat(np.arange(n), counts)
        pos = np.arange(int(counts.sum())) + np.repeat(addr - (np.cumsum(counts) - counts), counts)
        off, val = self.off[pos], self.val[pos]
        keep = off != self.p.off_end
        owner, off, val = owner[keep], off[keep], val[keep]
        if np.any(off >= length[owner]):
            raise _Fallback("an offset is past its row length")
        same = owner[1:] == owner[:-1]
        if np.any(same & (off[1:] <= off[:-1])):
            raise _Fallback("offsets not strictly increasing")
        dense = np.zeros((n, width), np.int64)
        dense[owner, off + shift[owner]] = val
        a = np.abs(val)
        maxabs, sumabs = np.zeros(n, np.int64), np.zeros(n, np.float64)
        if a.size:  # owners come in order: one segment per row with entries
            cut = np.flatnonzero(np.r_[True, ~same])
            maxabs[owner[cut]] = np.maximum.reduceat(a, cut)
            sumabs[owner[cut]] = np.add.reduceat(a, cut)
        return _Rows(dense, counts, maxabs, sumabs)


def _weights(buf: _Buffer, addr: np.ndarray, k: np.ndarray, k_max: int) -> np.ndarray:
    """The K weight values of each op (count = K words, section 11.3), zero beyond K."""
    if np.any(addr + k > buf.p.buf_depth):
        raise _Fallback("weights run past BUF_DEPTH")
    cols = np.arange(k_max)
    idx = np.minimum(addr[:, None] + cols[None, :], buf.p.buf_depth - 1)
    return np.where(cols[None, :] < k[:, None], buf.val[idx], 0)


def _expected_len(length: np.ndarray, k: np.ndarray, s: np.ndarray, pad: np.ndarray) -> np.ndarray:
    n = length + 2 * pad - k
    if np.any(n < 0):
        raise _Fallback("kernel longer than the padded row")
    return n // s + 1


def _zero_beyond(res: np.ndarray, length: np.ndarray) -> None:
    """Zero lanes >= length of each row (a slice when every row has the same length)."""
    if length.size and np.all(length == length[0]):
        res[:, int(length[0]):] = 0
    else:
        res[np.arange(res.shape[1])[None, :] >= length[:, None]] = 0


def _shifted(acc: np.ndarray, shift: np.ndarray, w: int) -> np.ndarray:
    """acc[n, x + shift[n]] for x < w (a slice when every row has the same shift)."""
    if shift.size and np.all(shift == shift[0]):
        return acc[:, int(shift[0]):int(shift[0]) + w]
    return np.take_along_axis(acc, np.arange(w)[None, :] + shift[:, None], axis=1)


_EXACT_F64 = float(1 << 52)  # integer sums below this are exact in float64 in any order (BLAS)


def _unit_sums(rows: np.ndarray, uo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of consecutive ops summed per unit: (unit indices, sums); ops come in unit order."""
    cut = np.flatnonzero(np.r_[True, uo[1:] != uo[:-1]])
    return uo[cut], np.add.reduceat(rows, cut, axis=0)


def _per_unit(values: np.ndarray, uo: np.ndarray, n_units: int) -> np.ndarray | None:
    """The value each unit's ops share (index by unit), or None when a unit's ops differ."""
    hi = np.full(n_units, np.iinfo(np.int64).min, np.int64)
    lo = np.full(n_units, np.iinfo(np.int64).max, np.int64)
    np.maximum.at(hi, uo, values)
    np.minimum.at(lo, uo, values)
    return hi if np.all(hi[uo] == lo[uo]) else None


def _stack(uo: np.ndarray, pi: np.ndarray, rows: np.ndarray, m_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Ops' rows stacked per unit, float64 (units, m_max, width): (unit indices, stack)."""
    uu, inv = np.unique(uo, return_inverse=True)
    out = np.zeros((uu.size, m_max) + rows.shape[1:], np.float64)
    out[inv, pi] = rows
    return uu, out


def _op_results(f: dict[str, np.ndarray], uo: np.ndarray, pi: np.ndarray, n_units: int, buf: _Buffer,
                masks: Sequence[int], p: CoreParams):
    """Every unit's accumulated lanes (units, W_MAX), every op's PE cycles, the read intervals and
    every unit's saturation bound (sum over its ops of their largest possible |partial sum|).

    Where a unit's ops share their geometry (and mask) and the bound keeps every sum below 2**52,
    the ops of a unit are summed by one float64 matrix product per unit (exact: integer values,
    every partial sum below 2**53); otherwise each op's lanes are computed on int64 and summed."""
    n = f["mode"].size
    w, km = p.w_max, p.k_max
    acc = np.zeros((n_units, w), np.int64)
    cycles = np.zeros(n, np.int64)
    compute = np.zeros(n, np.int64)   # C of section 6.1 (Port-1 cycles / OSRC merge actions)
    unit_bound = np.zeros(n_units, np.float64)
    mode, k, pad = f["mode"], f["k"], f["pad"]
    s = 1 + f["stride2"]
    in_len, out_len = f["in_len"], f["out_len"]
    m_max = int(np.bincount(uo).max()) if n else 0
    end1 = buf.row_ends(f["addr1"])
    reads = [(f["addr1"], end1)]
    lane = np.arange(w)[None, :]
    for m in (Mode.SRC, Mode.MSRC, Mode.OSRC):
        sel = np.flatnonzero(mode == int(m))
        if sel.size == 0:
            continue
        a1, e1, kk, pp, ss = f["addr1"][sel], end1[sel], k[sel], pad[sel], s[sel]
        il, ol, us, ps = in_len[sel], out_len[sel], uo[sel], pi[sel]
        zero = np.zeros(sel.size, np.int64)
        if m is Mode.OSRC:
            a2 = f["addr2"][sel]
            e2 = buf.row_ends(a2)
            reads.append((a2, e2))
            if np.any(_expected_len(il, kk, ss, pp) != ol):
                raise _Fallback("OSRC row lengths do not match")
            rin = buf.rows(a1, e1, il, pp, 2 * w + km)
            rg = buf.rows(a2, e2, ol, zero, w)
            bound = np.minimum(rg.sumabs * rin.maxabs, rin.sumabs * rg.maxabs)
            res = np.zeros((sel.size, km), np.int64)
            for stride in (1, 2):
                t = np.flatnonzero(ss == stride)
                if t.size == 0:
                    continue
                g, d = rg.dense[t], rin.dense[t]
                for tap in range(int(kk[t].max())):
                    res[t, tap] = np.einsum("ny,ny->n", g, d[:, tap:tap + stride * w:stride])
            res[np.arange(km)[None, :] >= kk[:, None]] = 0
            uu, sums = _unit_sums(res, us)
            acc[uu, :km] += sums
            cycles[sel] = 2 + rin.entries + rg.entries
            compute[sel] = rin.entries + rg.entries
            if p.osrc_window == 2:  # section 6.1 (E): C from the merge actions' skip flags
                compute[sel] = _osrc_window_compute(buf, a1, e1, a2, e2, kk, ss, pp, p)
                cycles[sel] = 2 + compute[sel]
            unit_bound += np.bincount(us, weights=bound, minlength=n_units)
            continue
        wts = _weights(buf, f["addr2"][sel], kk, km)
        reads.append((f["addr2"][sel], f["addr2"][sel] + kk - 1))
        src = m is Mode.SRC
        if src:
            rin = buf.rows(a1, e1, il, pp, 2 * w + km)
            cycles[sel] = 2 + kk + rin.entries
            compute[sel] = rin.entries
        else:  # MSRC: dI[x] = mask[x] * sum_{y*S + k - P = x} w[k] * dO[y]
            if np.any(_expected_len(ol, kk, ss, pp) != il):
                raise _Fallback("MSRC row lengths do not match")
            rin = buf.rows(a1, e1, il, zero, w)
            c = rin.entries
            if p.lookahead == 2:  # section 6.1: C from the entries' skip flags
                c = _lookahead_compute(buf, a1, e1, kk, ss, pp, ol, f["mask_addr"][sel], masks, p)
            cycles[sel] = 3 + kk + c
            compute[sel] = c
        bound = np.abs(wts).sum(axis=1).astype(np.float64) * rin.maxabs
        ub = np.bincount(us, weights=bound, minlength=n_units)
        unit_bound += ub
        stride = _per_unit(ss, us, n_units)
        ol_u = _per_unit(ol, us, n_units)
        pad_u = None if src else _per_unit(pp, us, n_units)
        mask_u = None if src else _per_unit(f["mask_addr"][sel], us, n_units)
        grouped = (ub.max() < _EXACT_F64 and stride is not None and ol_u is not None
                   and (src or (pad_u is not None and mask_u is not None)) and np.all(ss == ss[0])
                   and len(np.unique(us)) * m_max <= 4 * sel.size + 64)
        st = int(ss[0])
        if grouped:
            uu, rows3 = _stack(us, ps, rin.dense, m_max)
            _, w3 = _stack(us, ps, wts, m_max)
            z = np.matmul(w3.transpose(0, 2, 1), rows3)          # (units, K, row width)
            if src:  # out[x] = sum_k Z[k, x*S + k]
                out = np.zeros((uu.size, w), np.float64)
                for tap in range(int(kk.max())):
                    out += z[:, tap, tap:tap + st * w:st]
            else:    # scatter y*S + k, then drop the padding
                opad = np.zeros((uu.size, st * w + km), np.float64)
                for tap in range(int(kk.max())):
                    opad[:, tap:tap + st * w:st] += z[:, tap]
                out = _shifted(opad, pad_u[uu], w) * _mask_bits(mask_u[uu], masks, w)
            out = out.astype(np.int64)
            out[lane >= ol_u[uu][:, None]] = 0
            acc[uu] += out
            continue
        res = np.zeros((sel.size, w), np.int64)
        for stride in (1, 2):
            t = np.flatnonzero(ss == stride)
            if t.size == 0:
                continue
            if src:
                d, wt = rin.dense[t], wts[t]
                part = np.zeros((t.size, w), np.int64)
                for tap in range(int(kk[t].max())):
                    part += wt[:, tap, None] * d[:, tap:tap + stride * w:stride]
                res[t] = part
            else:
                g, wt = rin.dense[t], wts[t]
                part = np.zeros((t.size, stride * w + km), np.int64)
                for tap in range(int(kk[t].max())):
                    part[:, tap:tap + stride * w:stride] += wt[:, tap, None] * g
                res[t] = _shifted(part, pp[t], w)
        if not src:
            res *= _mask_bits(f["mask_addr"][sel], masks, w)
        _zero_beyond(res, ol)
        uu, sums = _unit_sums(res, us)
        acc[uu] += sums
    return acc, cycles, reads, unit_bound, compute


def _osrc_window_compute(buf: _Buffer, a1: np.ndarray, e1: np.ndarray, a2: np.ndarray, e2: np.ndarray,
                         k: np.ndarray, s: np.ndarray, pad: np.ndarray, p: CoreParams) -> np.ndarray:
    """C of OSRC ops with OSRC_WINDOW = 2: ``op_timing`` of each op's ``osrc_skips``."""
    out = np.zeros(a1.size, np.int64)
    for i in range(a1.size):
        o1 = [int(o) for o in buf.off[a1[i]:e1[i] + 1] if o != p.off_end]
        o2 = [int(o) for o in buf.off[a2[i]:e2[i] + 1] if o != p.off_end]
        skips = osrc_skips(o1, o2, int(k[i]), int(s[i]), int(pad[i]))
        out[i] = op_timing(Mode.OSRC, int(k[i]), max(1, len(o1)), max(1, len(o2)), skips=skips, osrc_window=2).compute
    return out


def _lookahead_compute(buf: _Buffer, addr: np.ndarray, end: np.ndarray, k: np.ndarray, s: np.ndarray,
                       pad: np.ndarray, out_len: np.ndarray, mask_addr: np.ndarray, masks: Sequence[int],
                       p: CoreParams) -> np.ndarray:
    """C of MSRC ops with LOOKAHEAD = 2: ``lookahead_cycles`` of each op's ``msrc_skips``."""
    out = np.zeros(addr.size, np.int64)
    for i in range(addr.size):
        offs = [int(o) for o in buf.off[addr[i]:end[i] + 1] if o != p.off_end]
        word = int(masks[mask_addr[i]]) if mask_addr[i] < len(masks) else 0
        mask = [(word >> x) & 1 for x in range(int(out_len[i]))]
        out[i] = lookahead_cycles(msrc_skips(offs, mask, int(k[i]), int(s[i]), int(pad[i])), 2)
    return out


def _mask_bits(addr: np.ndarray, masks: Sequence[int], w: int) -> np.ndarray:
    """Mask bits (n, W_MAX) of each op's mask word (a word past the loaded masks reads 0)."""
    uniq, inv = np.unique(addr, return_inverse=True)
    nbytes = (w + 7) // 8
    table = np.zeros((uniq.size, w), np.int64)
    for i, a in enumerate(uniq.tolist()):
        word = int(masks[a]) if a < len(masks) else 0
        bits = np.unpackbits(np.frombuffer((word & ((1 << w) - 1)).to_bytes(nbytes, "little"), np.uint8),
                             bitorder="little")
        table[i] = bits[:w]
    return table[inv.reshape(-1)]


def _overlaps(reads: list[tuple[np.ndarray, np.ndarray]], writes: list[tuple[int, int]]) -> bool:
    """Whether any inclusive read interval meets any half-open write interval."""
    if not writes:
        return False
    w = np.array(sorted(writes), dtype=np.int64)
    reach = np.maximum.accumulate(w[:, 1])
    for lo, hi in reads:
        i = np.searchsorted(w[:, 0], hi, side="right") - 1
        ok = i >= 0
        if np.any(reach[i[ok]] > lo[ok]):
            return True
    return False


def _pe_span(cycles: list[int]) -> int:
    """Busiest PE of a unit whose ops go to the first free of 3 PEs, ties lowest (core_model.unit_ops_time)."""
    f0 = f1 = f2 = 0
    for c in cycles:
        if f0 <= f1 and f0 <= f2:
            f0 += c
        elif f1 <= f2:
            f1 += c
        else:
            f2 += c
    return max(f0, f1, f2)


def _contract(unit_times: list[int], groups: int) -> int:
    """sparsetrain.arch.schedule.schedule_units(...).cycles of units of these times: each to the earliest free
    group, ties lowest (the section 10 figure ``CoreRun.cycles_contract``)."""
    heap = [(0, g) for g in range(groups)]
    last = 0
    for dt in unit_times:
        t0, g = heapq.heappop(heap)
        heapq.heappush(heap, (t0 + dt, g))
        last = max(last, t0 + dt)
    return last


class _Finished:
    """FINISH of every unit at once, before pruning (which depends on the FIFO and the generator
    state at the unit's turn, so it happens in the walk): requantised rows, their sums, ReLU masks
    and encoded entries."""

    def __init__(self, acc: np.ndarray, units: list[tuple[int, dict[str, int]]], p: CoreParams):
        length = np.array([f["length"] for _, f in units], np.int64)
        shift = np.array([f["shift"] for _, f in units], np.int64)
        if np.any(shift >= 62):  # int64 rounding below needs 1 << shift to fit
            raise _Fallback("shift >= 62")
        sh = shift[:, None]
        q = acc >> sh
        rem = acc - (q << sh)
        half = (np.int64(1) << sh) >> 1
        q = q + ((sh > 0) & ((rem > half) | ((rem == half) & ((q & 1) == 1))))
        lim = sat_limit(p.dw)
        q = np.clip(q, -lim, lim)
        relu = np.array([bool(f["relu"]) for _, f in units], bool)
        if relu.any():
            q[relu] = np.maximum(q[relu], 0)
        _zero_beyond(q, length)
        self.q = q
        self.relu_mask = [int.from_bytes(b.tobytes(), "little") for b in np.packbits(q > 0, axis=1, bitorder="little")]
        self.sum = q.sum(axis=1).tolist()
        self.sumabs = np.abs(q).sum(axis=1).tolist()
        rows, cols = np.nonzero(q)
        self.ptr = np.searchsorted(rows, np.arange(len(units) + 1)).tolist()
        self.enc = (q[rows, cols] & ((1 << p.dw) - 1)) | (cols << p.dw)


def _prune(ppu: PPUModel, row: np.ndarray, tau: int) -> np.ndarray:
    """Stochastic pruning of a requantised row in column order (ppu_model.prune_value)."""
    r_w = ppu.cfg.r_w
    out = row.copy()
    for x in np.flatnonzero((row != 0) & (np.abs(row) < tau)).tolist():  # one draw per small value
        v = int(row[x])
        r = ppu.rng.draw(r_w)
        out[x] = (tau if v > 0 else -tau) if (abs(v) << r_w) > tau * r else 0
    return out


def _finish(ppu: PPUModel, fin: _Finished, u: int, f: dict[str, int], p: CoreParams) -> tuple[np.ndarray, int]:
    """PPUModel.finish of unit ``u`` from the batch: (encoded entries, nnz); the PPU's state
    (g_sum, sum|g|, counters, generator, ReLU mask) changes as the scalar model's."""
    c = ppu.cfg
    length, st = f["length"], ppu.slots[f["slot"]]
    if f["g_first"]:
        ppu.g_sum = 0
    ppu.relu_mask = fin.relu_mask[u]
    if f["acc_g"]:
        lim = sat_limit(c.g_w)
        if abs(ppu.g_sum) + fin.sumabs[u] <= lim:
            ppu.g_sum += fin.sum[u]
        else:  # saturation possible: the element-by-element order matters
            for v in fin.q[u, :length].tolist():
                ppu.g_sum = max(-lim, min(lim, ppu.g_sum + v))
        st.abs_sum = min((1 << c.sum_w) - 1, st.abs_sum + fin.sumabs[u])  # monotone: one clamp
    last_bit = 1 << (p.dw + p.off_w)
    if f["prune"] and st.fifo.full:
        row = _prune(ppu, fin.q[u, :length], st.fifo.mean())
        offs = np.flatnonzero(row)
        enc = (row[offs] & ((1 << p.dw) - 1)) | (offs << p.dw)
    else:
        enc = fin.enc[fin.ptr[u]:fin.ptr[u + 1]].copy()
    nnz = int(enc.size)
    if nnz:
        enc[-1] |= last_bit
    else:
        enc = np.array([p.off_end << p.dw | last_bit], np.int64)
    cnt_max = (1 << c.cnt_w) - 1
    ppu.row_nnz = nnz
    st.layer_nnz = min(cnt_max, st.layer_nnz + nnz)
    st.layer_elems = min(cnt_max, st.layer_elems + length)
    ppu.acc = [0] * c.w_max
    return enc, nnz


def _dir_word(start: int, entries: int, nnz: int) -> int:
    """sparsetrain.arch.isa.dir_encode(start, entries, nnz) with written = 1, inlined for speed."""
    return ((start & _DIR_MASK[0]) << _DIR_LSB[0] | (entries & _DIR_MASK[1]) << _DIR_LSB[1]
            | (nnz & _DIR_MASK[2]) << _DIR_LSB[2] | 1 << _DIR_LSB[3])


_DIR_LSB = [lsb for _, lsb, _ in DIR_FIELDS]
_DIR_MASK = [(1 << w) - 1 for _, _, w in DIR_FIELDS]


def run_program_fast(program: Sequence[int], buffer_image: Sequence[int] | np.ndarray, params: CoreParams,
                     masks: Sequence[int] = (), directory: Sequence[int] | None = None,
                     ppus: Sequence[PPUModel] | None = None) -> CoreRun:
    """``core_model.run_program``, vectorised over the row ops (see the module doc)."""
    try:
        return _run_fast(program, buffer_image, params, masks, directory, ppus)
    except _Fallback:
        return run_program(program, buffer_image, params, masks=masks, directory=directory, ppus=ppus)


def _unit_ok(f: dict[str, int], op_addr: int, p: CoreParams) -> bool:
    """core_model.check_unit of a UNIT word whose OPs start at ``op_addr``, as a bool."""
    lim = (1 << (p.acc_w - 1)) - 1
    return not (f["length"] > p.w_max or f["shift"] >= p.acc_w or f["slot"] >= p.n_slots
                or (f["db_en"] and f["db"] >= p.db_depth)
                or (f["bias_en"] and not -lim <= f["bias"] <= lim) or f["dir"] >= p.dir_depth
                or f["out_addr"] + max(1, f["length"]) > p.buf_depth or op_addr + f["n_ops"] > p.imem_depth)


def _walk(words: list[int], p: CoreParams) -> list[tuple[int, int, dict[str, int], int]]:
    """(pc, opcode, fields, op address) of every instruction outside units up to END, a unit
    block's header and then its UNIT words (section 12.9); the op address is a unit's first OP
    word (0 for other words). Raises _Fallback on an error."""
    out, pc = [], 0
    while True:
        if pc >= p.imem_depth:
            raise _Fallback("pc past IMEM_DEPTH")
        op, f = decode(words[pc])
        if op not in FIELDS or op == Opcode.OP:
            raise _Fallback("bad opcode")
        if op == Opcode.UNITS:
            count = f["count"]
            if count == 0 or pc + 1 + count > p.imem_depth:
                raise _Fallback("bad unit block")
            out.append((pc, op, f, 0))
            o = pc + 1 + count
            for at in range(pc + 1, pc + 1 + count):
                uop, uf = decode(words[at])
                if uop != Opcode.UNIT or not _unit_ok(uf, o, p):
                    raise _Fallback("bad unit in a block")
                out.append((at, uop, uf, o))
                o += uf["n_ops"]
            pc = o
            continue
        out.append((pc, op, f, pc + 1 if op == Opcode.UNIT else 0))
        if op == Opcode.END:
            return out
        if op == Opcode.UNIT:
            if not _unit_ok(f, pc + 1, p):
                raise _Fallback("bad unit")
            pc += 1 + f["n_ops"]
        else:
            if op == Opcode.PPU and (f["op"] in (Op.START, Op.ACCUM, Op.FINISH) or f["slot"] >= p.n_slots
                                     or (not f["all"] and f["group"] >= p.groups)):
                raise _Fallback("bad PPU instruction")
            pc += 1


def _run_fast(program, buffer_image, params: CoreParams, masks, directory, ppus=None) -> CoreRun:
    p = params
    if len(program) > p.imem_depth:
        raise ValueError(f"program = {len(program)} words is out of range; allowed: 1 .. {p.imem_depth}")
    if len(buffer_image) > p.buf_depth:
        raise ValueError(f"buffer_image = {len(buffer_image)} words is out of range; allowed: 0 .. {p.buf_depth}")
    if len(masks) > p.mask_depth:
        raise ValueError(f"masks = {len(masks)} words is out of range; allowed: 0 .. {p.mask_depth}")
    words = [int(w) for w in program] + [0] * (p.imem_depth - len(program))
    instrs = _walk(words, p)
    units = [(a, f) for _, op, f, a in instrs if op == Opcode.UNIT]
    op_pcs = np.concatenate([np.arange(a, a + f["n_ops"]) for a, f in units] or [np.zeros(0, np.int64)])
    limbs = _chunks([words[i] for i in op_pcs.tolist()])
    if np.any((limbs[:, 0] & np.uint64((1 << OPCODE_W) - 1)) != int(Opcode.OP)):
        raise _Fallback("a unit holds a word that is not an OP")
    f = _op_fields(limbs)
    s_ok = ((f["mode"] != 3) & (f["k"] >= 1) & (f["k"] <= p.k_max) & (f["pad"] < f["k"]) & (f["in_len"] >= 1)
            & (f["in_len"] <= p.w_max) & (f["out_len"] >= 1) & (f["out_len"] <= p.w_max)
            & (f["addr1"] < p.buf_depth) & (f["addr2"] < p.buf_depth)
            & ((f["mode"] != int(Mode.MSRC)) | (f["mask_addr"] < p.mask_depth)))
    if not np.all(s_ok):
        raise _Fallback("an op is out of range")
    image = np.zeros(p.buf_depth, np.int64)
    try:
        image[:len(buffer_image)] = np.asarray(buffer_image, dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        raise _Fallback("buffer words that are not int64") from None
    if np.any(image >> p.entry_w):
        raise _Fallback("buffer words wider than an entry")
    buf = _Buffer(image, p)
    counts = np.array([uf["n_ops"] for _, uf in units], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    uo = np.repeat(np.arange(len(units)), counts)
    issued = _issued(f, units, directory, p)
    keep = np.flatnonzero(issued)
    fk = {name: v[keep] for name, v in f.items()}
    uk = uo[keep]
    first = np.r_[True, uk[1:] != uk[:-1]] if uk.size else np.zeros(0, bool)
    pk = np.arange(uk.size) - np.maximum.accumulate(np.where(first, np.arange(uk.size), 0))
    acc, cyc_k, reads, unit_bound, comp_k = _op_results(fk, uk, pk, len(units), buf, masks, p)
    op_cycles = np.zeros(uo.size, np.int64)
    op_cycles[keep] = cyc_k
    compute = np.zeros(uo.size, np.int64)
    compute[keep] = comp_k
    writes = [(uf["out_addr"], uf["out_addr"] + max(1, uf["length"])) for _, uf in units]
    if _overlaps(reads, writes):
        raise _Fallback("an op reads a word a unit writes")
    bias = np.array([uf["bias"] if uf["bias_en"] else 0 for _, uf in units], dtype=np.int64)
    if np.any(np.abs(bias).astype(np.float64) + unit_bound >= sat_limit(p.acc_w) * (1 - 1e-9)):
        raise _Fallback("a sum could saturate")
    acc += bias[:, None]
    op_cycles_list = op_cycles.tolist()
    starts, counts = starts.tolist(), counts.tolist()
    gen1 = not (p.prefetch or p.skip_empty)
    if not gen1 or not p.microarch().is_gen1:   # the dispatcher's view of every op (section 12)
        modes = [Mode(int(m)) for m in f["mode"].tolist()]
        loads = np.where(f["mode"] == int(Mode.OSRC), 0, f["k"]).tolist()
        infos = [OpInfo(bool(i), m, int(ld), int(c))
                 for i, m, ld, c in zip(issued.tolist(), modes, loads, compute.tolist())]

    out_words = image.copy()
    dirs = np.zeros(p.dir_depth, dtype=object)
    if directory is not None:
        dirs[:len(directory)] = [int(w) for w in directory]
    run = CoreRun(out_words, dirs, ppus=initial_ppus(p, ppus),
                  masks=[int(m) for m in masks], db_banks=[[0] * p.db_depth for _ in range(p.groups)])
    run.vectorised = True
    G = p.groups
    clocks = [GroupClock(bool(p.pingpong)) for _ in range(G)]
    busy: list[tuple[int, int]] = []
    segments: list[list[int]] = [[]]   # section 10 unit times per step segment
    step, t, u = 0, 0, 0
    handout = UnitHandout(p.unit_rate)
    block = 0          # units of the current unit block not yet handed out (section 12.9)
    fin = _Finished(acc, units, p)
    for pc, op, fl, _ in instrs:
        if op == Opcode.NOP:
            t += 1
        elif op == Opcode.UNITS:   # the header's cycle; block units are reached in the previous one's
            t += 1
            block = fl["count"]
        elif op in (Opcode.SYNC, Opcode.END):
            t = max([t] + [k.idle_at for k in clocks]) + 1
            if op == Opcode.END:
                run.total_cycles = t
                break
            step = fl["step"]
            segments.append([])
        elif op == Opcode.PPU:
            t = ppu_word(fl, run, p, t, clocks)
        else:
            c, g = handout.take(t, clocks)
            enc, nnz = _finish(run.ppus[g], fin, u, fl, p)
            cyc = op_cycles_list[starts[u]:starts[u] + counts[u]]
            out_words[fl["out_addr"]:fl["out_addr"] + enc.size] = enc
            if fl["db_en"]:  # the written values (after pruning), sign-extended from DW bits
                vals = enc & ((1 << p.dw) - 1)
                run.db_add(g, fl["db"], int(np.sum(vals - ((vals >> (p.dw - 1)) << p.dw))), p)
            run.directory[fl["dir"]] = _dir_word(fl["out_addr"], int(enc.size), nnz)
            run.step_nnz[step] += nnz
            run.step_rows[step] += 1
            run.step_elems[step] += fl["length"]
            ops = []
            if gen1 and p.microarch().is_gen1:
                span = _pe_span(cyc)
                end = c + span + fl["length"] + PPU_LAT + (1 if fl["bias_en"] and not cyc else 0)
                clocks[g].free_at, clocks[g].idle_at = end, end + 1
                clocks[g].busy_units += int(sum(cyc))
                segments[-1].append(span + fl["length"] + PPU_LAT)
            else:
                ops = infos[starts[u]:starts[u] + counts[u]]
                end = clocks[g].unit(c, ops, fl["length"], bool(fl["bias_en"]), p)
                cyc = [o.cycles(bool(p.prefetch)) for o in ops if o.issued]
                segments[-1].append(_Unit(cyc, fl["length"], _UnitOps(ops, ops[0].mode if ops else Mode.SRC),
                                          bool(fl["bias_en"])))
            handout.took(clocks[g], c)
            run.units.append(UnitTrace(g, c, end, cyc, fl["length"], step, ops))
            busy.append((c + 1, end))
            if block:
                block -= 1
                t = c if block else c + 1
            else:
                t = c + 1
            u += 1
    run.buffer = out_words.astype(object)
    run.cycles = _union_length(busy)
    run.pe_busy_cycles = sum(k.busy for k in clocks)
    if gen1 and p.microarch().is_gen1:
        run.cycles_contract = sum(_contract(seg, p.groups) for seg in segments)
    else:
        run.cycles_contract = sum(_schedule(seg, p) for seg in segments)
    return run


def _issued(f: dict[str, np.ndarray], units, directory: Sequence[int] | None, p: CoreParams) -> np.ndarray:
    """Per op: issued (SKIP_EMPTY drops an op whose sparse operand row is empty by the loaded
    directory's nnz, section 12.4); every op without SKIP_EMPTY."""
    n = f["mode"].size
    if not p.skip_empty:
        return np.ones(n, bool)
    osrc = f["mode"] == int(Mode.OSRC)
    if np.any(f["dir1"] >= p.dir_depth) or np.any(osrc & (f["dir2"] >= p.dir_depth)):
        raise _Fallback("a directory index past DIR_DEPTH")
    written = np.array(sorted({uf["dir"] for _, uf in units}), np.int64)
    if np.any(np.isin(f["dir1"], written)) or np.any(osrc & np.isin(f["dir2"], written)):
        raise _Fallback("an op's row directory entry is written by a unit of the program")
    image = np.zeros(p.dir_depth, np.int64)
    if directory is not None and len(directory):
        image[:len(directory)] = np.asarray([int(w) for w in directory], np.int64)
    nnz = (image >> _DIR_LSB[2]) & _DIR_MASK[2]
    return (nnz[f["dir1"]] != 0) & (~osrc | (nnz[f["dir2"]] != 0))


__all__ = ["run_program_fast"]
