// The kernels of sparse_conv_kernel.h compiled for avx512 (see that file); dispatch: sparse_conv.cpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sparse_conv_api.h"

#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#include <immintrin.h>
#define ST_VEC 512
namespace st_avx512 {
#include "sparse_conv_kernel.h"
}  // namespace st_avx512
#endif
