// Direct sparse convolution backward: the per-filter (dW) and per-image (dI) work of one ISA.
//
// This header is compiled once per instruction set: sparse_conv_avx512.cpp and
// sparse_conv_avx2.cpp include it under `#pragma GCC target(...)` with ST_VEC = 512 / 256,
// sparse_conv_generic.cpp with ST_VEC = 0 (plain C++, the compiler's baseline vectors).
// Each includer wraps it in its own namespace, so the three copies never collide and the
// runtime dispatch in sparse_conv.cpp picks one per call.
//
// Layouts (chosen so that the innermost loop runs over contiguous channels):
//   input   (N, Hp, Wp, C)     channels-last, zero-padded by the convolution's padding
//   weight  (F, kh, kw, C/G)   filter-major, channels innermost
//   dI      (N, Hp, Wp, C)     channels-last, padded; the caller crops and transposes it
//   dW      (F, kh, kw, C/G)
// With groups == 1 and dilation 1, one kernel row of a window (kw pixels x C channels) is a
// contiguous run of kw*C elements in both the input and the weight, so a whole row is one
// vector loop ("merged rows").

#include <cstdint>
#include <cstring>
#include <vector>

#include "sparse_conv_api.h"

#if ST_VEC
#include <immintrin.h>
#endif

namespace detail {

// ---- vector traits: one register of T and the few operations the loops need -----------------
template <typename T> struct Vec;

#if ST_VEC == 512
template <> struct Vec<float> {
  using R = __m512;
  static constexpr int W = 16;
  static R set1(float a) { return _mm512_set1_ps(a); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static __mmask16 mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R load_tail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_tail(float* p, R v, int64_t n) { _mm512_mask_storeu_ps(p, mask(n), v); }
};
template <> struct Vec<double> {
  using R = __m512d;
  static constexpr int W = 8;
  static R set1(double a) { return _mm512_set1_pd(a); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static __mmask8 mask(int64_t n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static R load_tail(const double* p, int64_t n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store_tail(double* p, R v, int64_t n) { _mm512_mask_storeu_pd(p, mask(n), v); }
};
constexpr bool kMaskedTail = true;
#elif ST_VEC == 256
template <> struct Vec<float> {
  using R = __m256;
  static constexpr int W = 8;
  static R set1(float a) { return _mm256_set1_ps(a); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R load_tail(const float*, int64_t) { return _mm256_setzero_ps(); }
  static void store_tail(float*, R, int64_t) {}
};
template <> struct Vec<double> {
  using R = __m256d;
  static constexpr int W = 4;
  static R set1(double a) { return _mm256_set1_pd(a); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R load_tail(const double*, int64_t) { return _mm256_setzero_pd(); }
  static void store_tail(double*, R, int64_t) {}
};
constexpr bool kMaskedTail = false;  // AVX2 tails run the scalar loop
#endif

// ---- the two primitives: y += a x  and  y += a0 x0 + a1 x1 + a2 x2 + a3 x3 --------------------
// The four-source form loads and stores y once per four non-zeros, which matters because y
// (a dW row or a dI window row) is read and written for every non-zero otherwise.

template <typename T>
inline void axpy1(T* __restrict y, const T* __restrict x, T a, int64_t len) {
  int64_t i = 0;
#if ST_VEC
  using V = Vec<T>;
  constexpr int W = V::W;
  const auto va = V::set1(a);
  for (; i + 2 * W <= len; i += 2 * W) {
    auto y0 = V::fma(va, V::load(x + i), V::load(y + i));
    auto y1 = V::fma(va, V::load(x + i + W), V::load(y + i + W));
    V::store(y + i, y0);
    V::store(y + i + W, y1);
  }
  for (; i + W <= len; i += W) V::store(y + i, V::fma(va, V::load(x + i), V::load(y + i)));
  if (kMaskedTail && i < len) {
    const int64_t n = len - i;
    V::store_tail(y + i, V::fma(va, V::load_tail(x + i, n), V::load_tail(y + i, n)), n);
    return;
  }
#endif
  for (; i < len; ++i) y[i] += a * x[i];
}

template <typename T>
inline void axpy4(T* __restrict y, const T* x0, const T* x1, const T* x2, const T* x3, T a0, T a1, T a2, T a3,
                  int64_t len) {
  int64_t i = 0;
#if ST_VEC
  using V = Vec<T>;
  constexpr int W = V::W;
  const auto v0 = V::set1(a0), v1 = V::set1(a1), v2 = V::set1(a2), v3 = V::set1(a3);
  for (; i + 2 * W <= len; i += 2 * W) {
    auto y0 = V::load(y + i), y1 = V::load(y + i + W);
    y0 = V::fma(v0, V::load(x0 + i), y0);
    y1 = V::fma(v0, V::load(x0 + i + W), y1);
    y0 = V::fma(v1, V::load(x1 + i), y0);
    y1 = V::fma(v1, V::load(x1 + i + W), y1);
    y0 = V::fma(v2, V::load(x2 + i), y0);
    y1 = V::fma(v2, V::load(x2 + i + W), y1);
    y0 = V::fma(v3, V::load(x3 + i), y0);
    y1 = V::fma(v3, V::load(x3 + i + W), y1);
    V::store(y + i, y0);
    V::store(y + i + W, y1);
  }
  for (; i + W <= len; i += W) {
    auto y0 = V::load(y + i);
    y0 = V::fma(v0, V::load(x0 + i), y0);
    y0 = V::fma(v1, V::load(x1 + i), y0);
    y0 = V::fma(v2, V::load(x2 + i), y0);
    y0 = V::fma(v3, V::load(x3 + i), y0);
    V::store(y + i, y0);
  }
  if (kMaskedTail && i < len) {
    const int64_t n = len - i;
    auto y0 = V::load_tail(y + i, n);
    y0 = V::fma(v0, V::load_tail(x0 + i, n), y0);
    y0 = V::fma(v1, V::load_tail(x1 + i, n), y0);
    y0 = V::fma(v2, V::load_tail(x2 + i, n), y0);
    y0 = V::fma(v3, V::load_tail(x3 + i, n), y0);
    V::store_tail(y + i, y0, n);
    return;
  }
#endif
  for (; i < len; ++i) y[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
}

// y[0 : len] += sum_j a[j] * x[j][offset : offset + len] over `count` sources, four per pass
// over y. (Measured against keeping a chunk of y in registers for all sources at once: that
// was no faster here, because the loads of the sources, not those of y, set the pace.)
template <typename T>
inline void axpy_many(T* y, const T* const* x, const T* a, int64_t count, int64_t offset, int64_t len) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4)
    axpy4(y, x[j] + offset, x[j + 1] + offset, x[j + 2] + offset, x[j + 3] + offset, a[j], a[j + 1], a[j + 2],
          a[j + 3], len);
  for (; j < count; ++j) axpy1(y, x[j] + offset, a[j], len);
}

}  // namespace detail

// ---- the non-zero list: one pass over dense dO ---------------------------------------------------
// For images [n0, n1): the non-zeros of dO[n, f] are appended, in (y, x) order, to image n's
// region of `pos` / `val` (capacity F * Ho * Wo + kScanSlack each, see sparse_conv.cpp);
// start/count[n * F + f] locate them. Only the non-zeros are written (AVX-512: compress a
// register of dO, store it whole, advance by the number of non-zeros), so a sparse dO touches
// only a small part of the list's memory.
template <typename T>
void scan_impl(const Geometry& g, const T* grad_output, int32_t* pos, T* val, int64_t* start, int64_t* count,
               int64_t n0, int64_t n1) {
  const int64_t hw = g.Ho * g.Wo;
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t base = n * (g.F * hw + kScanSlack);
    int64_t k = 0;
    for (int64_t f = 0; f < g.F; ++f) {
      const T* src = grad_output + (n * g.F + f) * hw;
      const int64_t first = k;
      int64_t i = 0;
#if ST_VEC == 512
      if constexpr (sizeof(T) == 4) {
        const __m512i step = _mm512_set1_epi32(16);
        __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (; i + 16 <= hw; i += 16) {
          const __m512 v = _mm512_loadu_ps(reinterpret_cast<const float*>(src) + i);
          const __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
          _mm512_storeu_ps(reinterpret_cast<float*>(val) + base + k, _mm512_maskz_compress_ps(m, v));
          _mm512_storeu_si512(pos + base + k, _mm512_maskz_compress_epi32(m, idx));
          k += __builtin_popcount(m);
          idx = _mm512_add_epi32(idx, step);
        }
      } else {
        const __m256i step = _mm256_set1_epi32(8);
        __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (; i + 8 <= hw; i += 8) {
          const __m512d v = _mm512_loadu_pd(reinterpret_cast<const double*>(src) + i);
          const __mmask8 m = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_NEQ_UQ);
          _mm512_storeu_pd(reinterpret_cast<double*>(val) + base + k, _mm512_maskz_compress_pd(m, v));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos + base + k), _mm256_maskz_compress_epi32(m, idx));
          k += __builtin_popcount(m);
          idx = _mm256_add_epi32(idx, step);
        }
      }
#endif
      for (; i < hw; ++i) {
        const T v = src[i];
        if (v != T(0)) {
          pos[base + k] = static_cast<int32_t>(i);
          val[base + k] = v;
          ++k;
        }
      }
      start[n * g.F + f] = base + first;
      count[n * g.F + f] = k - first;
    }
  }
}

// Filters are handled in blocks whose weights (or weight gradients) take about this many bytes,
// so that a block and one image's input (or input gradient) stay in the core's L2 cache while
// every non-zero of that image and block is applied; without blocking each non-zero pulls a
// whole filter or input window from L3.
// (Geometry::block_bytes, default 512 KiB; tests set it tiny to exercise many blocks.)
inline int64_t filter_block(const Geometry& g, int64_t elem_size) {
  const int64_t per_filter = g.kh * g.kw * g.Cg * elem_size;
  return std::max<int64_t>(1, g.block_bytes / std::max<int64_t>(1, per_filter));
}

// ---- dW: filters [f0, f1), each summed over every image in a fixed order (deterministic) -------
// For each filter the order is: images ascending, positions ascending, four non-zeros per
// vector pass; it does not depend on the thread count or the block size.
template <typename T>
void grad_weight_impl(const Geometry& g, const T* inp, const int32_t* pos, const T* val, const int64_t* start,
                      const int64_t* count, T* grad_weight, int64_t f0, int64_t f1) {
  const int64_t filter_size = g.kh * g.kw * g.Cg;
  const int64_t row_stride = g.Wp * g.C;  // one input row, channels-last
  const bool merged = g.G == 1 && g.dw == 1;
  const int64_t block = filter_block(g, sizeof(T));
  std::vector<const T*> src(static_cast<size_t>(g.Ho * g.Wo));
  std::vector<T> coef(static_cast<size_t>(g.Ho * g.Wo));
  // one block of filters is accumulated channels-last in `scratch`, then written to
  // grad_weight in torch's (F, C/G, kh, kw) layout
  std::vector<T> scratch(static_cast<size_t>(std::min(block, f1 - f0) * filter_size));
  for (int64_t fb = f0; fb < f1; fb += block) {
    const int64_t fe = std::min(f1, fb + block);
    std::fill(scratch.begin(), scratch.end(), T(0));
    for (int64_t n = 0; n < g.N; ++n) {
      for (int64_t f = fb; f < fe; ++f) {
        const int64_t s0 = start[n * g.F + f], cnt = count[n * g.F + f];
        if (cnt == 0) continue;
        const int64_t c0 = (f / g.Fg) * g.Cg;  // first input channel of this filter's group
        for (int64_t j = 0; j < cnt; ++j) {
          const int64_t p = pos[s0 + j], y = p / g.Wo, x = p % g.Wo;
          src[j] = inp + ((n * g.Hp + y * g.sh) * g.Wp + x * g.sw) * g.C + c0;  // window's top-left
          coef[j] = val[s0 + j];
        }
        T* acc = scratch.data() + (f - fb) * filter_size;
        if (merged) {
          const int64_t len = g.kw * g.C;
          for (int64_t ky = 0; ky < g.kh; ++ky)
            detail::axpy_many(acc + ky * len, src.data(), coef.data(), cnt, ky * g.dh * row_stride, len);
        } else {
          for (int64_t ky = 0; ky < g.kh; ++ky)
            for (int64_t kx = 0; kx < g.kw; ++kx)
              detail::axpy_many(acc + (ky * g.kw + kx) * g.Cg, src.data(), coef.data(), cnt,
                                ky * g.dh * row_stride + kx * g.dw * g.C, g.Cg);
        }
      }
    }
    const int64_t kk = g.kh * g.kw;
    for (int64_t f = fb; f < fe; ++f) {
      const T* acc = scratch.data() + (f - fb) * filter_size;
      T* out = grad_weight + f * filter_size;
      for (int64_t c = 0; c < g.Cg; ++c)
        for (int64_t k = 0; k < kk; ++k) out[c * kk + k] = acc[k * g.Cg + c];
    }
  }
}

// ---- dI: images [n0, n1), each owned by one thread (deterministic, no reduction) -------------
template <typename T>
void grad_input_impl(const Geometry& g, const T* weight, const int32_t* pos, const T* val, const int64_t* start,
                     const int64_t* count, T* grad_input, int64_t n0, int64_t n1) {
  const int64_t filter_size = g.kh * g.kw * g.Cg;
  const int64_t row_stride = g.Wp * g.C;
  const int64_t image = g.Hp * row_stride;
  const int64_t hw = g.Ho * g.Wo;
  const bool merged = g.G == 1 && g.dw == 1;
  const int64_t block = filter_block(g, sizeof(T));
  // merged rows: within a block of filters, the non-zeros of one image are bucketed by output
  // position (counting sort), so all filters that hit the same window are summed into it four
  // at a time and the window row is loaded and stored once per four non-zeros
  std::vector<T> scratch(static_cast<size_t>(image));  // one padded channels-last image, reused
  std::vector<int64_t> bucket(static_cast<size_t>(hw + 1));
  std::vector<const T*> src(static_cast<size_t>(merged ? std::min(block, g.F) * hw : 0));
  std::vector<T> coef(src.size());
  for (int64_t n = n0; n < n1; ++n) {
    T* out = scratch.data();
    std::memset(out, 0, sizeof(T) * image);
    if (merged) {
      const int64_t len = g.kw * g.C;
      for (int64_t fb = 0; fb < g.F; fb += block) {
        const int64_t fe = std::min(g.F, fb + block);
        int64_t in_block = 0;
        for (int64_t f = fb; f < fe; ++f) in_block += count[n * g.F + f];
        if (in_block == 0) continue;
        std::fill(bucket.begin(), bucket.end(), 0);
        for (int64_t f = fb; f < fe; ++f) {
          const int64_t s0 = start[n * g.F + f], cnt = count[n * g.F + f];
          for (int64_t j = 0; j < cnt; ++j) ++bucket[pos[s0 + j] + 1];
        }
        for (int64_t p = 0; p < hw; ++p) bucket[p + 1] += bucket[p];
        for (int64_t f = fb; f < fe; ++f) {
          const int64_t s0 = start[n * g.F + f], cnt = count[n * g.F + f];
          for (int64_t j = 0; j < cnt; ++j) {
            const int64_t slot = bucket[pos[s0 + j]]++;
            src[slot] = weight + f * filter_size;
            coef[slot] = val[s0 + j];
          }
        }
        // after the fill, bucket[p] is the end of position p's run (the start of p + 1's)
        int64_t first = 0;
        for (int64_t p = 0; p < hw; ++p) {
          const int64_t last = bucket[p];
          if (last > first) {
            const int64_t y = p / g.Wo, x = p % g.Wo;
            T* window = out + (y * g.sh) * row_stride + x * g.sw * g.C;
            for (int64_t ky = 0; ky < g.kh; ++ky)
              detail::axpy_many(window + ky * g.dh * row_stride, src.data() + first, coef.data() + first,
                                last - first, ky * len, len);
          }
          first = last;
        }
      }
    } else {
      for (int64_t f = 0; f < g.F; ++f) {
        const int64_t s0 = start[n * g.F + f], cnt = count[n * g.F + f];
        const T* w = weight + f * filter_size;
        const int64_t c0 = (f / g.Fg) * g.Cg;
        for (int64_t j = 0; j < cnt; ++j) {
          const int64_t p = pos[s0 + j], y = p / g.Wo, x = p % g.Wo;
          const T v = val[s0 + j];
          T* window = out + (y * g.sh) * row_stride + x * g.sw * g.C + c0;
          for (int64_t ky = 0; ky < g.kh; ++ky)
            for (int64_t kx = 0; kx < g.kw; ++kx)
              detail::axpy1(window + ky * g.dh * row_stride + kx * g.dw * g.C, w + (ky * g.kw + kx) * g.Cg, v,
                            g.Cg);
        }
      }
    }
    // the unpadded interior, transposed to torch's (C, H, W) layout
    T* dst = grad_input + n * g.C * g.H * g.W;
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t h = 0; h < g.H; ++h) {
        const T* row = out + ((h + g.ph) * g.Wp + g.pw) * g.C + c;
        T* d = dst + (c * g.H + h) * g.W;
        for (int64_t x = 0; x < g.W; ++x) d[x] = row[x * g.C];
      }
  }
}

// ---- the input in the kernels' layout: images [n0, n1) of (N, C, H, W) to (N, Hp, Wp, C) -------
template <typename T>
void pack_input_impl(const Geometry& g, const T* input, T* out, int64_t n0, int64_t n1) {
  const int64_t hw = g.H * g.W;
  for (int64_t n = n0; n < n1; ++n) {
    const T* src = input + n * g.C * hw;
    T* dst = out + n * g.Hp * g.Wp * g.C;
    for (int64_t h = 0; h < g.Hp; ++h) {
      T* row = dst + h * g.Wp * g.C;
      if (h < g.ph || h >= g.ph + g.H) {
        std::memset(row, 0, sizeof(T) * g.Wp * g.C);
        continue;
      }
      std::memset(row, 0, sizeof(T) * g.pw * g.C);
      std::memset(row + (g.pw + g.W) * g.C, 0, sizeof(T) * (g.Wp - g.pw - g.W) * g.C);
      const T* s = src + (h - g.ph) * g.W;
      for (int64_t x = 0; x < g.W; ++x) {
        T* d = row + (x + g.pw) * g.C;
        for (int64_t c = 0; c < g.C; ++c) d[c] = s[c * hw + x];  // each line read serves 16 x
      }
    }
  }
}

// The entry points sparse_conv.cpp dispatches to (one set per ISA namespace).
void scan_f32(const Geometry& g, const float* d, int32_t* p, float* v, int64_t* s, int64_t* c, int64_t a, int64_t b) {
  scan_impl<float>(g, d, p, v, s, c, a, b);
}
void scan_f64(const Geometry& g, const double* d, int32_t* p, double* v, int64_t* s, int64_t* c, int64_t a,
              int64_t b) {
  scan_impl<double>(g, d, p, v, s, c, a, b);
}
void grad_weight_f32(const Geometry& g, const float* i, const int32_t* p, const float* v, const int64_t* s,
                     const int64_t* c, float* o, int64_t a, int64_t b) {
  grad_weight_impl<float>(g, i, p, v, s, c, o, a, b);
}
void grad_weight_f64(const Geometry& g, const double* i, const int32_t* p, const double* v, const int64_t* s,
                     const int64_t* c, double* o, int64_t a, int64_t b) {
  grad_weight_impl<double>(g, i, p, v, s, c, o, a, b);
}
void pack_input_f32(const Geometry& g, const float* x, float* o, int64_t a, int64_t b) {
  pack_input_impl<float>(g, x, o, a, b);
}
void pack_input_f64(const Geometry& g, const double* x, double* o, int64_t a, int64_t b) {
  pack_input_impl<double>(g, x, o, a, b);
}
void grad_input_f32(const Geometry& g, const float* w, const int32_t* p, const float* v, const int64_t* s,
                    const int64_t* c, float* o, int64_t a, int64_t b) {
  grad_input_impl<float>(g, w, p, v, s, c, o, a, b);
}
void grad_input_f64(const Geometry& g, const double* w, const int32_t* p, const double* v, const int64_t* s,
                    const int64_t* c, double* o, int64_t a, int64_t b) {
  grad_input_impl<double>(g, w, p, v, s, c, o, a, b);
}
