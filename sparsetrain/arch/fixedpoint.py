"""Number format of docs/architecture.md, sections 1 to 3: the one implementation.

Everything here works on Python ints or numpy int64 arrays; no floating point is involved in
the integer paths, so the results are what the RTL must produce bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

FRAC_MIN, FRAC_MAX = -32, 62

# Parameter ranges of docs/architecture.md section 1: name -> (low, high), inclusive.
PARAM_RANGES: dict[str, tuple[int, int]] = {
    "DW": (4, 31),  # ACC_W <= 64 must hold 2*DW + 1
    "K_MAX": (1, 16),
    "W_MAX": (2, 4096),
    "ACC_W": (9, 64),  # further bounded below by 2*DW + 1, see check_acc_w
    "stride": (1, 2),
    "N_F": (1, 64),
    "R_W": (8, 24),
}


def check_param(name: str, value: int, low: int | None = None, high: int | None = None,
                allowed: str | None = None) -> int:
    """Raise ValueError naming ``name``, ``value`` and the allowed range unless low <= value <= high."""
    if low is None or high is None:
        low, high = PARAM_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} = {value!r} is not an integer; allowed: {allowed or f'{low} .. {high}'}")
    if not low <= value <= high:
        raise ValueError(f"{name} = {value} is out of range; allowed: {allowed or f'{low} .. {high}'}")
    return int(value)


def check_acc_w(acc_w: int, dw: int) -> int:
    return check_param("ACC_W", acc_w, 2 * dw + 1, 64, allowed=f"{2 * dw + 1} .. 64 (2*DW+1 .. 64 for DW={dw})")


def check_datapath(dw: int, k_max: int, w_max: int, acc_w: int | None) -> int:
    """Validate the datapath parameters shared by PE, PPU and core; return ACC_W (default 2*DW+8, at most 64)."""
    check_param("DW", dw)
    check_param("K_MAX", k_max)
    check_param("W_MAX", w_max)
    if acc_w is None:
        acc_w = min(64, 2 * dw + 8)
    check_acc_w(acc_w, dw)
    if w_max < k_max:
        raise ValueError(f"W_MAX = {w_max} is out of range; allowed: >= K_MAX ({k_max})")
    return acc_w


def off_width(w_max: int) -> int:
    """OFF_W: bits for offsets 0..W_MAX plus the all-ones row-end marker above W_MAX."""
    return (w_max + 1).bit_length()


def off_end(w_max: int) -> int:
    return (1 << off_width(w_max)) - 1


@dataclass(frozen=True)
class DatapathParams:
    """DW, K_MAX, W_MAX and ACC_W (section 1), validated on creation (ACC_W filled in when None).
    The base of every block's parameter set: PE (HwParams), PPU (PPUConfig) and core (CoreParams)."""

    dw: int = 16
    k_max: int = 11
    w_max: int = 64
    acc_w: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "acc_w", check_datapath(self.dw, self.k_max, self.w_max, self.acc_w))

    @property
    def off_w(self) -> int:
        return off_width(self.w_max)

    @property
    def off_end(self) -> int:
        return off_end(self.w_max)


def sat_limit(width: int) -> int:
    return (1 << (width - 1)) - 1


def sat(v, width: int):
    """Symmetric saturation to [-(2**(width-1)-1), 2**(width-1)-1] (ints or int64 arrays)."""
    lim = sat_limit(width)
    if isinstance(v, np.ndarray):
        return np.clip(v, -lim, lim)
    return max(-lim, min(lim, int(v)))


def sat_unsigned(v, width: int):
    hi = (1 << width) - 1
    if isinstance(v, np.ndarray):
        return np.clip(v, 0, hi)
    return max(0, min(hi, int(v)))


def rne_shift(v, s: int):
    """Arithmetic right shift by s >= 0 with round-to-nearest, ties to even (ints or int64 arrays)."""
    if s < 0:
        raise ValueError(f"shift = {s} is out of range; allowed: >= 0")
    if s == 0:
        return v
    if isinstance(v, np.ndarray):
        v = v.astype(np.int64)
        q = v >> s
        rem = v - (q << s)
        half = 1 << (s - 1)
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
        return q + up.astype(np.int64)
    v = int(v)
    q = v >> s
    rem = v - (q << s)
    half = 1 << (s - 1)
    if rem > half or (rem == half and (q & 1)):
        q += 1
    return q


def requantize(v, shift: int, dw: int):
    """Accumulator -> storage: sat_DW(rne_shift(v, shift))."""
    return sat(rne_shift(v, shift), dw)


def choose_frac_bits(x: np.ndarray, dw: int) -> int:
    """Per-tensor scale rule of section 2: largest f with max|x| * 2**f <= 2**(DW-1)-1."""
    m = float(np.max(np.abs(x))) if np.size(x) else 0.0
    if m == 0.0 or not math.isfinite(m):
        if not math.isfinite(m):
            raise ValueError("tensor contains inf or nan; cannot choose a scale")
        return dw - 1
    f = math.floor(math.log2(sat_limit(dw) / m))
    # guard against log2 rounding at exact powers of two
    while f > FRAC_MIN and m * 2.0 ** f > sat_limit(dw):
        f -= 1
    return max(FRAC_MIN, min(FRAC_MAX, f))


def quantize(x: np.ndarray, frac: int, dw: int) -> np.ndarray:
    """Float -> storage integers: sat_DW(round_half_even(x * 2**frac)) as int64."""
    check_param("frac", frac, FRAC_MIN, FRAC_MAX)
    scaled = np.asarray(x, dtype=np.float64) * (2.0 ** frac)
    return sat(np.rint(scaled).astype(np.int64), dw)  # np.rint rounds half to even


def dequantize(q: np.ndarray, frac: int) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * (2.0 ** -frac)


@dataclass
class SparseRow:
    """A row in the sparse row format of section 3 (without the row-end marker detail)."""

    length: int
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.int64)
        if self.offsets.shape != self.values.shape or self.offsets.ndim != 1:
            raise ValueError(f"offsets (shape {self.offsets.shape}) and values (shape {self.values.shape}) "
                             "must be 1-D arrays of the same length")
        if self.offsets.size:
            bad = self.offsets[(self.offsets < 0) | (self.offsets >= self.length)]
            if bad.size:
                raise ValueError(f"offset = {int(bad[0])} is out of range; allowed: 0 .. {self.length - 1} "
                                 f"(row length {self.length})")
            steps = np.flatnonzero(np.diff(self.offsets) <= 0)
            if steps.size:
                i = int(steps[0])
                raise ValueError(f"offsets must be strictly increasing; offset[{i + 1}] = "
                                 f"{int(self.offsets[i + 1])} follows offset[{i}] = {int(self.offsets[i])}")

    @classmethod
    def from_dense(cls, row: Sequence[int] | np.ndarray, keep_zeros: bool = False) -> "SparseRow":
        row = np.asarray(row, dtype=np.int64)
        offs = np.arange(row.size) if keep_zeros else np.flatnonzero(row)
        return cls(row.size, offs, row[offs])

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.length, dtype=np.int64)
        out[self.offsets] = self.values
        return out

    @property
    def entries(self) -> int:
        """Entries on a stream: one per element, or the single marker of an empty row."""
        return max(1, int(self.offsets.size))

    def stream(self, w_max: int) -> list[tuple[int, int, int]]:
        """(value, offset, last) entries as they travel on a port, marker included."""
        if self.offsets.size == 0:
            return [(0, off_end(w_max), 1)]
        n = self.offsets.size
        return [(int(v), int(o), int(i == n - 1)) for i, (v, o) in enumerate(zip(self.values, self.offsets))]


def rows_from_stream(entries: Iterable[tuple[int, int, int]], length: int, w_max: int) -> SparseRow:
    offs, vals = [], []
    for value, offset, _last in entries:
        if offset == off_end(w_max):
            continue
        offs.append(offset)
        vals.append(value)
    return SparseRow(length, offs, vals)
