// The kernels of sparse_conv_kernel.h compiled for generic (see that file); dispatch: sparse_conv.cpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sparse_conv_api.h"

#if 1


#define ST_VEC 0
namespace st_generic {
#include "sparse_conv_kernel.h"
}  // namespace st_generic
#endif
