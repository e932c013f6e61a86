"""sparsetrain.arch.fixedpoint: rounding, saturation, the scale rule and the sparse row format.

Expected values come from independent definitions (exact rationals via fractions.Fraction,
whose round() is round-half-even). Seed from SPARSETRAIN_SEED (default below), printed.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from sparsetrain.arch import fixedpoint as fp

SEED = int(os.environ.get("SPARSETRAIN_SEED", "20240611"))


def rng_for(*salt: int) -> np.random.Generator:
    print(f"seed={SEED} salt={salt}")
    return np.random.default_rng([SEED, *salt])


def rne_exact(v: int, s: int) -> int:
    return round(Fraction(v, 2**s))  # Fraction rounds half to even


# ------------------------------------------------------------------ rne_shift

def test_rne_shift_ties_go_to_even_for_both_signs() -> None:
    for s in range(1, 6):
        half = 1 << (s - 1)
        for q in range(-9, 10):
            v = (q << s) + half  # exactly q + 1/2
            expect = q if q % 2 == 0 else q + 1
            assert fp.rne_shift(v, s) == expect, (v, s)
            assert fp.rne_shift(np.array([v]), s)[0] == expect


def test_rne_shift_matches_exact_rounding_on_random_values() -> None:
    rng = rng_for(1)
    v = rng.integers(-2**40, 2**40, 4000)
    for s in (0, 1, 2, 3, 7, 16, 31):
        got = fp.rne_shift(v, s)
        assert got.dtype == np.int64
        expect = np.array([rne_exact(int(a), s) for a in v])
        np.testing.assert_array_equal(got, expect)
        assert [fp.rne_shift(int(a), s) for a in v[:200]] == expect[:200].tolist()


def test_rne_shift_rejects_negative_shift() -> None:
    with pytest.raises(ValueError, match="shift = -1 is out of range; allowed"):
        fp.rne_shift(5, -1)


# ------------------------------------------------------------------ saturation

@pytest.mark.parametrize("width", [4, 8, 16, 17, 40, 64])
def test_saturation_is_symmetric_and_never_wraps(width: int) -> None:
    lim = 2 ** (width - 1) - 1
    big = [lim + 1, lim + 12345, 2 * lim + 5, -lim - 1, -lim - 7, -(2 * lim) - 3]
    for v in big:
        got = fp.sat(v, width)
        assert got == (lim if v > 0 else -lim)
    assert fp.sat(lim, width) == lim and fp.sat(-lim, width) == -lim and fp.sat(0, width) == 0
    if width <= 62:
        arr = np.array(big + [3, -3], dtype=np.int64)
        np.testing.assert_array_equal(fp.sat(arr, width), np.clip(arr, -lim, lim))


def test_requantize_saturates_after_rounding() -> None:
    for dw in (8, 16):
        lim = 2 ** (dw - 1) - 1
        assert fp.requantize(2**40, 4, dw) == lim
        assert fp.requantize(-2**40, 4, dw) == -lim  # symmetric: -2**(dw-1) never appears
        # rounding up to one above the limit saturates too
        v = (lim << 3) + 4 + 8  # (lim + 1.5) * 8 → rounds to lim + 2
        assert fp.requantize(v, 3, dw) == lim
        arr = np.array([2**40, -2**40, 5 << 3], dtype=np.int64)
        np.testing.assert_array_equal(fp.requantize(arr, 3, dw), [lim, -lim, 5])


def test_sat_unsigned_clamps_both_ends() -> None:
    assert fp.sat_unsigned(-5, 8) == 0 and fp.sat_unsigned(300, 8) == 255 and fp.sat_unsigned(17, 8) == 17
    np.testing.assert_array_equal(fp.sat_unsigned(np.array([-1, 256, 3]), 8), [0, 255, 3])


# ------------------------------------------------------------------ scale rule and quantize

@pytest.mark.parametrize("dw", [4, 8, 12, 16, 24, 31])
def test_chosen_scale_never_saturates_and_is_the_largest(dw: int) -> None:
    rng = rng_for(2, dw)
    lim = 2 ** (dw - 1) - 1
    for scale in (1e-6, 3e-3, 0.7, 1.0, 2.0, 123.4, 5e4):
        x = rng.standard_normal((5, 7)) * scale
        f = fp.choose_frac_bits(x, dw)
        q = fp.quantize(x, f, dw)
        m = float(np.max(np.abs(x)))
        assert m * 2.0**f <= lim  # nothing is clipped at the chosen scale
        assert f == fp.FRAC_MAX or m * 2.0 ** (f + 1) > lim  # one more bit would saturate
        exact = np.rint(x * 2.0**f)
        np.testing.assert_array_equal(q, exact.astype(np.int64))
        assert np.max(np.abs(fp.dequantize(q, f) - x)) <= 2.0 ** -(f + 1)


def test_scale_rule_at_exact_powers_of_two_and_limits() -> None:
    for dw in (8, 16):
        lim = 2 ** (dw - 1) - 1
        for e in range(-5, 6):
            x = np.array([2.0**e, -(2.0 ** (e - 1))])
            f = fp.choose_frac_bits(x, dw)
            assert 2.0 ** (e + f) <= lim < 2.0 ** (e + f + 1)
    assert fp.choose_frac_bits(np.array([1e-30]), 16) == fp.FRAC_MAX
    assert fp.choose_frac_bits(np.array([1e30]), 16) == fp.FRAC_MIN


@pytest.mark.parametrize("dw", [4, 16, 31])
def test_all_zero_tensor_gets_dw_minus_one(dw: int) -> None:
    assert fp.choose_frac_bits(np.zeros((3, 4)), dw) == dw - 1
    assert fp.choose_frac_bits(np.zeros(0), dw) == dw - 1
    np.testing.assert_array_equal(fp.quantize(np.zeros(4), dw - 1, dw), np.zeros(4, np.int64))


def test_non_finite_tensor_is_rejected() -> None:
    with pytest.raises(ValueError, match="inf or nan"):
        fp.choose_frac_bits(np.array([1.0, np.nan]), 16)


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.25 * 3])
    for f in (0, 1):
        expect = [round(Fraction(v) * 2**f) for v in x.tolist()]
        np.testing.assert_array_equal(fp.quantize(x, f, 16), expect)
    np.testing.assert_array_equal(fp.quantize(np.array([1e9, -1e9]), 0, 8), [127, -127])


def test_quantize_rejects_frac_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"frac = 63 is out of range; allowed: -32 \.\. 62"):
        fp.quantize(np.ones(2), 63, 16)


# ------------------------------------------------------------------ sparse row format

def test_sparse_row_round_trips() -> None:
    rng = rng_for(3)
    for density in (0.0, 0.2, 0.7, 1.0):
        for length in (1, 2, 9, 64):
            row = rng.integers(-100, 101, length) * (rng.random(length) < density)
            sr = fp.SparseRow.from_dense(row)
            np.testing.assert_array_equal(sr.to_dense(), row)
            assert np.all(sr.values != 0) and sr.offsets.tolist() == np.flatnonzero(row).tolist()
            assert sr.entries == max(1, np.count_nonzero(row))
            dense = fp.SparseRow.from_dense(row, keep_zeros=True)  # the dense row: every column present
            assert dense.offsets.tolist() == list(range(length)) and dense.entries == length
            np.testing.assert_array_equal(dense.to_dense(), row)


@pytest.mark.parametrize("w_max", [2, 63, 64, 255, 256, 4096])
def test_stream_form_and_row_end_marker(w_max: int) -> None:
    marker = fp.off_end(w_max)
    assert marker == 2 ** fp.off_width(w_max) - 1 and marker > w_max  # never a column
    assert 2 ** (fp.off_width(w_max) - 1) - 1 <= w_max  # one bit fewer could not hold both
    empty = fp.SparseRow(min(w_max, 10))
    assert empty.stream(w_max) == [(0, marker, 1)] and empty.entries == 1
    assert fp.rows_from_stream(empty.stream(w_max), empty.length, w_max).offsets.size == 0
    offsets = sorted({0, w_max // 2, w_max - 1})
    values = [5, -3, 7][:len(offsets)]
    row = fp.SparseRow(w_max, offsets, values)
    st = row.stream(w_max)
    assert [e[2] for e in st] == [0] * (len(offsets) - 1) + [1]
    assert [e[1] for e in st] == offsets and [e[0] for e in st] == values
    back = fp.rows_from_stream(st, w_max, w_max)
    np.testing.assert_array_equal(back.to_dense(), row.to_dense())


@pytest.mark.parametrize("offsets,values,match", [
    ([0, 3, 3], [1, 2, 3], "strictly increasing"),
    ([2, 1], [1, 1], "strictly increasing"),
    ([0, 8], [1, 1], "0 .. 7"),
    ([-1], [1], "0 .. 7"),
    ([0, 1], [1], "same length"),
])
def test_sparse_row_rejects_malformed_rows(offsets, values, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fp.SparseRow(8, offsets, values)


# ------------------------------------------------------------------ check_param

def test_check_param_messages_name_parameter_value_and_range() -> None:
    with pytest.raises(ValueError) as exc:
        fp.check_param("DW", 3)
    assert str(exc.value) == "DW = 3 is out of range; allowed: 4 .. 31"
    with pytest.raises(ValueError, match=r"stride = 3 is out of range; allowed: 1 \.\. 2"):
        fp.check_param("stride", 3)
    with pytest.raises(ValueError, match=r"pad = 5 is out of range; allowed: 0 \.\. 2"):
        fp.check_param("pad", 5, 0, 2)
    with pytest.raises(ValueError, match=r"K = 9 is out of range; allowed: odd"):
        fp.check_param("K", 9, 1, 7, allowed="odd")
    for bad in (2.5, True, "4", None):
        with pytest.raises(ValueError, match=r"DW = .* is not an integer; allowed: 4 \.\. 31"):
            fp.check_param("DW", bad)
    assert fp.check_param("DW", np.int32(16)) == 16 and type(fp.check_param("DW", np.int64(8))) is int


def test_check_acc_w_lower_limit_follows_dw() -> None:
    assert fp.check_acc_w(33, 16) == 33
    with pytest.raises(ValueError, match=r"ACC_W = 32 is out of range; allowed: 33 \.\. 64"):
        fp.check_acc_w(32, 16)
    with pytest.raises(ValueError, match=r"ACC_W = 65 is out of range"):
        fp.check_acc_w(65, 8)


def test_every_listed_parameter_range_is_enforced() -> None:
    for name, (low, high) in fp.PARAM_RANGES.items():
        assert fp.check_param(name, low) == low and fp.check_param(name, high) == high
        for bad in (low - 1, high + 1):
            with pytest.raises(ValueError, match=f"{name} = {bad} is out of range"):
                fp.check_param(name, bad)
