"""golden.bitexact.rowops (the PE reference) against direct definitions of SRC, MSRC and OSRC.

Randomised over every K in 1..11, stride 1 and 2, every padding, and empty / sparse / dense
rows. Seed from SPARSETRAIN_SEED (default below), printed.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import SparseRow, sat_limit
from sparsetrain.arch.timing import Mode, entries, pe_cycles
from sparsetrain.golden.bitexact import rowops

SEED = int(os.environ.get("SPARSETRAIN_SEED", "20240611"))
VMAX = 2**15 - 1  # DW = 16 values; with ACC_W = 40 no lane can saturate for K <= 11
DENSITIES = (0.0, 0.35, 1.0)


def rng_for(*salt: int) -> np.random.Generator:
    print(f"seed={SEED} salt={salt}")
    return np.random.default_rng([SEED, *salt])


def random_row(rng: np.random.Generator, length: int, density: float) -> np.ndarray:
    vals = rng.integers(-VMAX, VMAX + 1, length)
    vals[vals == 0] = 1
    return vals * (rng.random(length) < density)


def direct_src(w, row, s, p, out_len):
    out = np.zeros(out_len, np.int64)
    for x in range(out_len):
        for k in range(len(w)):
            c = x * s + k - p
            if 0 <= c < len(row):
                out[x] += w[k] * row[c]
    return out


def direct_msrc(w, grad, mask, s, p):
    out = np.zeros(len(mask), np.int64)
    for y in range(len(grad)):
        for k in range(len(w)):
            x = y * s + k - p
            if 0 <= x < len(mask):
                out[x] += w[k] * grad[y]
    return out * mask


def direct_osrc(row, grad, k, s, p):
    out = np.zeros(k, np.int64)
    for kk in range(k):
        for x in range(len(grad)):
            c = x * s + kk - p
            if 0 <= c < len(row):
                out[kk] += grad[x] * row[c]
    return out


def check_beats(res: rowops.RowOpResult, k: int, out_len: int) -> None:
    beats = res.beats
    assert beats, "every operation ends with a beat"
    assert [b.last for b in beats].count(True) == 1 and beats[-1].last
    for b in beats:
        assert 0 <= b.count <= k and len(b.lanes) == b.count
        assert b.count == 0 or 0 <= b.base and b.base + b.count <= out_len
    nonempty = [b for b in beats if b.count]
    for a, b in zip(nonempty, nonempty[1:]):
        assert a.base + a.count <= b.base, "beats overlap or go backwards"
    dense = np.zeros(out_len, np.int64)
    for b in beats:
        dense[b.base:b.base + b.count] = b.lanes
    np.testing.assert_array_equal(dense, res.dense)


def cases():
    for k in range(1, 12):
        for s in (1, 2):
            for p in range(k):
                yield k, s, p


@pytest.mark.parametrize("k", range(1, 12))
def test_src_matches_definition(k: int) -> None:
    for _, s, p in (c for c in cases() if c[0] == k):
        for d, density in enumerate(DENSITIES):
            rng = rng_for(1, k, s, p, d)
            length = int(rng.integers(max(1, k - 2 * p), k + 14))
            out_len = rowops.conv_out_len(length, k, s, p)
            w = rng.integers(-VMAX, VMAX + 1, k)
            row = random_row(rng, length, density)
            res = rowops.src(w.tolist(), SparseRow.from_dense(row), stride=s, pad=p)
            np.testing.assert_array_equal(res.dense, direct_src(w, row, s, p, out_len))
            check_beats(res, k, out_len)
            nnz = np.count_nonzero(row)
            assert res.cycles == pe_cycles(Mode.SRC, k, entries(nnz)) == 1 + k + max(1, nnz) + 1
            targets = [sum(1 for kk in range(k) if (c + p - kk) % s == 0 and 0 <= (c + p - kk) // s < out_len)
                       for c in np.flatnonzero(row)]
            assert res.macs == sum(targets)


@pytest.mark.parametrize("k", range(1, 12))
def test_msrc_matches_definition(k: int) -> None:
    for _, s, p in (c for c in cases() if c[0] == k):
        for d, density in enumerate(DENSITIES):
            rng = rng_for(2, k, s, p, d)
            length = int(rng.integers(max(1, k - 2 * p), k + 14))
            g_len = rowops.conv_out_len(length, k, s, p)
            w = rng.integers(-VMAX, VMAX + 1, k)
            grad = random_row(rng, g_len, density)
            mask = (rng.random(length) < 0.6).astype(np.int64)
            res = rowops.msrc(w.tolist(), SparseRow.from_dense(grad), mask, stride=s, pad=p)
            np.testing.assert_array_equal(res.dense, direct_msrc(w, grad, mask, s, p))
            check_beats(res, k, length)
            nnz = np.count_nonzero(grad)
            assert res.cycles == pe_cycles(Mode.MSRC, k, entries(nnz)) == 2 + k + max(1, nnz) + 1
            wanted = [sum(1 for kk in range(k) if 0 <= y * s - p + kk < length and mask[y * s - p + kk])
                      for y in np.flatnonzero(grad)]
            assert res.macs == sum(wanted)  # masked-off lanes are never multiplied


@pytest.mark.parametrize("k", range(1, 12))
def test_osrc_matches_definition(k: int) -> None:
    for _, s, p in (c for c in cases() if c[0] == k):
        for d, density in enumerate(DENSITIES):
            rng = rng_for(3, k, s, p, d)
            length = int(rng.integers(max(1, k - 2 * p), k + 14))
            g_len = rowops.conv_out_len(length, k, s, p)
            row = random_row(rng, length, density)
            grad = random_row(rng, g_len, DENSITIES[(d + 1) % 3])
            res = rowops.osrc(SparseRow.from_dense(row), SparseRow.from_dense(grad), k, stride=s, pad=p)
            np.testing.assert_array_equal(res.dense, direct_osrc(row, grad, k, s, p))
            assert len(res.beats) == 1 and res.beats[0].base == 0 and res.beats[0].count == k
            check_beats(res, k, k)
            n1, n2 = np.count_nonzero(row), np.count_nonzero(grad)
            assert res.cycles == pe_cycles(Mode.OSRC, k, entries(n1), entries(n2)) == 1 + max(1, n1) + max(1, n2) + 1
            pairs = sum(1 for x in np.flatnonzero(grad) for kk in range(k)
                        if 0 <= x * s + kk - p < length and row[x * s + kk - p])
            assert res.macs == pairs


def test_dense_row_form_gives_the_same_result_and_more_cycles() -> None:
    rng = rng_for(4)
    row = random_row(rng, 20, 0.3)
    w = rng.integers(-VMAX, VMAX + 1, 5).tolist()
    sparse = rowops.src(w, SparseRow.from_dense(row), stride=1, pad=2)
    dense = rowops.src(w, rowops.dense_row(row), stride=1, pad=2)
    np.testing.assert_array_equal(sparse.dense, dense.dense)
    assert dense.cycles == 1 + 5 + 20 + 1 and sparse.cycles == 1 + 5 + max(1, np.count_nonzero(row)) + 1


def test_lanes_saturate_instead_of_wrapping() -> None:
    acc_w = 20
    lim = sat_limit(acc_w)
    w = [VMAX] * 3
    row = SparseRow.from_dense([VMAX] * 6)
    res = rowops.src(w, row, acc_w=acc_w)
    assert np.all(res.dense == lim)
    res = rowops.msrc([-VMAX] * 3, SparseRow.from_dense([VMAX] * 4), np.ones(6), acc_w=acc_w)
    assert np.all(res.dense == -lim)
    res = rowops.osrc(row, SparseRow.from_dense([VMAX] * 4), 3, acc_w=acc_w)
    assert np.all(res.dense == lim)


@pytest.mark.parametrize("call,fragment", [
    (lambda: rowops.src([1] * 7, SparseRow.from_dense([1, 2, 3])), "K = 7"),
    (lambda: rowops.src([1] * 7, SparseRow.from_dense([1, 2, 3]), pad=1), "K = 7"),
    (lambda: rowops.src([1, 2, 3], SparseRow.from_dense([1, 2, 3, 4]), stride=3), "stride = 3"),
    (lambda: rowops.src([1, 2, 3], SparseRow.from_dense([1, 2, 3, 4]), pad=3), "pad = 3"),
    (lambda: rowops.src([1] * 17, SparseRow.from_dense([1] * 20)), "K = 17"),
    (lambda: rowops.src([1], SparseRow(5000)), "in_len = 5000"),
    (lambda: rowops.src([1, 2], SparseRow(8), out_len=0), "out_len = 0"),
    (lambda: rowops.msrc([1, 2, 3], SparseRow(5), np.ones(8)), "dO row length = 5"),
    (lambda: rowops.msrc([1, 2, 3], SparseRow(6), np.ones(8), stride=3), "stride = 3"),
    (lambda: rowops.osrc(SparseRow(8), SparseRow(7), 3), "dO row length = 7"),
    (lambda: rowops.osrc(SparseRow(8), SparseRow(6), 3, pad=3), "pad = 3"),
    (lambda: rowops.osrc(SparseRow(8), SparseRow(6), 0), "K = 0"),
])
def test_bad_input_raises(call, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        call()
    assert fragment in str(exc.value) and "allowed" in str(exc.value), str(exc.value)
