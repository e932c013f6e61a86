// torch binding of the direct sparse convolution backward (golden/training/sparse_conv_ext.py builds it).
//
// backward(input, weight, grad_output, stride, padding, dilation, groups, need_input,
//          need_weight, max_density) -> (grad_input, grad_weight, density)
//
// 1. One pass over dense dO (parallel over images) writes the list of its non-zeros.
// 2. If their density exceeds max_density, nothing more is done: both gradients come back
//    undefined (None) and the caller runs the dense backward instead.
// 3. dW: parallel over filters; each filter's sum runs over images and positions in a fixed
//    order, so the result does not depend on the thread count and needs no reduction.
//    dI: parallel over images, each image written by one thread.
// The layout changes (channels-last, zero padding and back) are fused into the kernels' passes,
// except the weight's transpose for dI (a torch copy).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>

#include "sparse_conv_api.h"

namespace {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

Isa best_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

Isa g_isa = best_isa();
int64_t g_block_bytes = 512 * 1024;

struct Kernels {
  decltype(&st_generic::scan_f32) scan_f32;
  decltype(&st_generic::scan_f64) scan_f64;
  decltype(&st_generic::grad_weight_f32) grad_weight_f32;
  decltype(&st_generic::grad_weight_f64) grad_weight_f64;
  decltype(&st_generic::grad_input_f32) grad_input_f32;
  decltype(&st_generic::grad_input_f64) grad_input_f64;
  decltype(&st_generic::pack_input_f32) pack_input_f32;
  decltype(&st_generic::pack_input_f64) pack_input_f64;
};

#define ST_KERNELS(ns) \
  Kernels { ns::scan_f32, ns::scan_f64, ns::grad_weight_f32, ns::grad_weight_f64, ns::grad_input_f32, ns::grad_input_f64, \
        ns::pack_input_f32, ns::pack_input_f64 }

Kernels kernels_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::avx512) return ST_KERNELS(st_avx512);
  if (isa == Isa::avx2) return ST_KERNELS(st_avx2);
#endif
  return ST_KERNELS(st_generic);
}

// Typed views of the kernel set, so the driver below is written once for float and double.
template <typename T> struct Typed;
template <> struct Typed<float> {
  static auto scan(const Kernels& k) { return k.scan_f32; }
  static auto grad_weight(const Kernels& k) { return k.grad_weight_f32; }
  static auto grad_input(const Kernels& k) { return k.grad_input_f32; }
  static auto pack_input(const Kernels& k) { return k.pack_input_f32; }
};
template <> struct Typed<double> {
  static auto scan(const Kernels& k) { return k.scan_f64; }
  static auto grad_weight(const Kernels& k) { return k.grad_weight_f64; }
  static auto grad_input(const Kernels& k) { return k.grad_input_f64; }
  static auto pack_input(const Kernels& k) { return k.pack_input_f64; }
};

std::pair<int64_t, int64_t> pair_of(at::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 2, name, " must have 2 entries, got ", v.size());
  return {v[0], v[1]};
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, double> run(const Geometry& g, const at::Tensor& input, const at::Tensor& weight,
                                               const at::Tensor& grad_output, bool need_input, bool need_weight,
                                               double max_density) {
  const Kernels k = kernels_for(g_isa);
  const int64_t total = g.N * g.F * g.Ho * g.Wo;
  const int64_t capacity = total + g.N * kScanSlack;  // per image: F * Ho * Wo + slack
  auto d_o = grad_output.contiguous();
  auto pos = at::empty({capacity}, input.options().dtype(at::kInt));
  auto val = at::empty({capacity}, input.options());
  auto start = at::empty({g.N * g.F}, input.options().dtype(at::kLong));
  auto count = at::empty({g.N * g.F}, input.options().dtype(at::kLong));
  const T* d_ptr = d_o.data_ptr<T>();
  int32_t* pos_ptr = pos.data_ptr<int32_t>();
  T* val_ptr = val.data_ptr<T>();
  int64_t* start_ptr = start.data_ptr<int64_t>();
  int64_t* count_ptr = count.data_ptr<int64_t>();
  auto scan = Typed<T>::scan(k);
  at::parallel_for(0, g.N, 1, [&](int64_t a, int64_t b) { scan(g, d_ptr, pos_ptr, val_ptr, start_ptr, count_ptr, a, b); });
  const int64_t nnz = count.sum().item<int64_t>();
  const double density = total ? static_cast<double>(nnz) / static_cast<double>(total) : 0.0;
  if (density > max_density) return {at::Tensor(), at::Tensor(), density};

  at::Tensor grad_input, grad_weight;
  if (need_weight) {
    // the input channels-last inside a zero border of the padding: (N, Hp, Wp, C)
    auto inp = at::empty({g.N, g.Hp, g.Wp, g.C}, input.options());
    const T* x_ptr = input.data_ptr<T>();
    T* inp_ptr = inp.data_ptr<T>();
    auto pack = Typed<T>::pack_input(k);
    at::parallel_for(0, g.N, 1, [&](int64_t a, int64_t b) { pack(g, x_ptr, inp_ptr, a, b); });
    grad_weight = at::empty(weight.sizes(), weight.options());  // contiguous (F, C/G, kh, kw)
    T* out_ptr = grad_weight.data_ptr<T>();
    auto kernel = Typed<T>::grad_weight(k);
    at::parallel_for(0, g.F, 1, [&](int64_t a, int64_t b) {
      kernel(g, inp_ptr, pos_ptr, val_ptr, start_ptr, count_ptr, out_ptr, a, b);
    });
  }
  if (need_input) {
    auto w_t = weight.permute({0, 2, 3, 1}).contiguous();
    grad_input = at::empty(input.sizes(), input.options());  // contiguous (N, C, H, W)
    const T* w_ptr = w_t.data_ptr<T>();
    T* out_ptr = grad_input.data_ptr<T>();
    auto kernel = Typed<T>::grad_input(k);
    at::parallel_for(0, g.N, 1, [&](int64_t a, int64_t b) {
      kernel(g, w_ptr, pos_ptr, val_ptr, start_ptr, count_ptr, out_ptr, a, b);
    });
  }
  return {grad_input, grad_weight, density};
}

std::tuple<at::Tensor, at::Tensor, double> backward(const at::Tensor& input, const at::Tensor& weight,
                                                    const at::Tensor& grad_output, at::IntArrayRef stride,
                                                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                                    bool need_input, bool need_weight, double max_density) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && grad_output.dim() == 4, "input, weight, grad_output must be 4-D");
  TORCH_CHECK(input.device().is_cpu() && weight.device().is_cpu() && grad_output.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type() && input.scalar_type() == grad_output.scalar_type(),
              "input, weight and grad_output must have one dtype");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, "float32 or float64 only");
  Geometry g{};
  g.N = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.F = weight.size(0);
  g.G = groups;
  TORCH_CHECK(groups >= 1 && g.C % groups == 0 && g.F % groups == 0, "groups must divide C and F");
  g.Cg = g.C / groups;
  g.Fg = g.F / groups;
  TORCH_CHECK(weight.size(1) == g.Cg, "weight dimension 1 must be C / groups");
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  std::tie(g.sh, g.sw) = pair_of(stride, "stride");
  std::tie(g.ph, g.pw) = pair_of(padding, "padding");
  std::tie(g.dh, g.dw) = pair_of(dilation, "dilation");
  TORCH_CHECK(g.sh >= 1 && g.sw >= 1 && g.dh >= 1 && g.dw >= 1 && g.ph >= 0 && g.pw >= 0, "bad stride/padding/dilation");
  g.block_bytes = g_block_bytes;
  g.Hp = g.H + 2 * g.ph;
  g.Wp = g.W + 2 * g.pw;
  g.Ho = (g.Hp - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.Wp - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.Ho >= 1 && g.Wo >= 1, "kernel larger than the padded input");
  TORCH_CHECK(grad_output.size(0) == g.N && grad_output.size(1) == g.F && grad_output.size(2) == g.Ho &&
                  grad_output.size(3) == g.Wo, "grad_output shape does not match the convolution");
  TORCH_CHECK(g.Ho * g.Wo < (int64_t(1) << 31), "output plane too large for 32-bit positions");
  auto x = input.contiguous(), w = weight.contiguous();
  if (input.scalar_type() == at::kFloat)
    return run<float>(g, x, w, grad_output, need_input, need_weight, max_density);
  return run<double>(g, x, w, grad_output, need_input, need_weight, max_density);
}

std::string get_isa() { return isa_name(g_isa); }

std::vector<std::string> supported_isas() {
  std::vector<std::string> out{"generic"};
  const Isa best = best_isa();
  if (best >= Isa::avx2) out.push_back("avx2");
  if (best >= Isa::avx512) out.push_back("avx512");
  return out;
}

void set_isa(const std::string& name) {
  const Isa best = best_isa();
  Isa want;
  if (name == "avx512") want = Isa::avx512;
  else if (name == "avx2") want = Isa::avx2;
  else if (name == "generic") want = Isa::generic;
  else TORCH_CHECK(false, "isa = '", name, "' is out of range; allowed: generic, avx2, avx512");
  TORCH_CHECK(want <= best, "isa = '", name, "' is out of range; allowed on this CPU: up to ", isa_name(best));
  g_isa = want;
}

void set_block_bytes(int64_t bytes) {
  TORCH_CHECK(bytes >= 1 && bytes <= (int64_t(1) << 40), "block_bytes = ", bytes, " is out of range; allowed: 1 .. 2^40");
  g_block_bytes = bytes;
}

int64_t get_block_bytes() { return g_block_bytes; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "direct sparse convolution backward (sparsetrain)";
  m.def("backward", &backward, "dI, dW of conv2d from sparse dO; (None, None, density) above max_density");
  m.def("isa", &get_isa, "instruction set the kernels run with");
  m.def("supported_isas", &supported_isas, "instruction sets this CPU can run");
  m.def("set_isa", &set_isa, "choose the instruction set (tests and benchmarks)");
  m.def("block_bytes", &get_block_bytes, "bytes of weights per filter block");
  m.def("set_block_bytes", &set_block_bytes, "bytes of weights per filter block (tuning, tests)");
}
