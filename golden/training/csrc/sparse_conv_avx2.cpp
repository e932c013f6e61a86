// The kernels of sparse_conv_kernel.h compiled for avx2 (see that file); dispatch: sparse_conv.cpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sparse_conv_api.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#define ST_VEC 256
namespace st_avx2 {
#include "sparse_conv_kernel.h"
}  // namespace st_avx2
#endif
