// Shared by the dispatcher (sparse_conv.cpp) and the per-ISA kernels (sparse_conv_kernel.h).
#pragma once
#include <cstdint>

// One convolution's sizes. Hp, Wp: the zero-padded input; Cg = C / G, Fg = F / G.
struct Geometry {
  int64_t N, C, H, W, F, G, Cg, Fg;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t Ho, Wo, Hp, Wp;
  int64_t block_bytes;  // filter blocks of about this many bytes (see sparse_conv_kernel.h)
};

// Spare entries after each image's region of the non-zero list: the vectorised scan stores whole
// registers (16 values) past the last non-zero.
constexpr int64_t kScanSlack = 16;

#define ST_DECLARE_KERNELS(ns)                                                                                   \
  namespace ns {                                                                                                 \
  void scan_f32(const Geometry&, const float*, int32_t*, float*, int64_t*, int64_t*, int64_t, int64_t);          \
  void scan_f64(const Geometry&, const double*, int32_t*, double*, int64_t*, int64_t*, int64_t, int64_t);        \
  void grad_weight_f32(const Geometry&, const float*, const int32_t*, const float*, const int64_t*,              \
                       const int64_t*, float*, int64_t, int64_t);                                                \
  void grad_weight_f64(const Geometry&, const double*, const int32_t*, const double*, const int64_t*,            \
                       const int64_t*, double*, int64_t, int64_t);                                               \
  void pack_input_f32(const Geometry&, const float*, float*, int64_t, int64_t);                                  \
  void pack_input_f64(const Geometry&, const double*, double*, int64_t, int64_t);                                \
  void grad_input_f32(const Geometry&, const float*, const int32_t*, const float*, const int64_t*,               \
                      const int64_t*, float*, int64_t, int64_t);                                                 \
  void grad_input_f64(const Geometry&, const double*, const int32_t*, const double*, const int64_t*,             \
                      const int64_t*, double*, int64_t, int64_t);                                                \
  }

ST_DECLARE_KERNELS(st_generic)
#if defined(__x86_64__)
ST_DECLARE_KERNELS(st_avx2)
ST_DECLARE_KERNELS(st_avx512)
#endif
