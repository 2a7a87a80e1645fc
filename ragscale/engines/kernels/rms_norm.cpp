// RMSNorm of decode rows in one call: transformers' LlamaRMSNorm (the mean of squares in float32,
// rsqrt, the product rounded to the compute dtype, then times the weight in that dtype). In
// torch ops that is nine calls a norm, 61 norms a decoded token for SmolLM2; each call costs
// more than the arithmetic of a 576-wide row.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

#include "vectors.h"

namespace {

using namespace ragscale;

template <typename T>
void norm_rows(const T* x, const T* weight, T* out, int64_t rows, int64_t width, float eps) {
  T scaled[LANES];
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = x + r * width;
    T* o = out + r * width;
    floats16 squares = {};
    float tail = 0.0f;
    const int64_t body = width / LANES * LANES;
    for (int64_t i = 0; i < body; i += LANES) {
      floats16 v = load(in + i);
      squares += v * v;
    }
    for (int64_t i = body; i < width; ++i) tail += static_cast<float>(in[i]) * static_cast<float>(in[i]);
    const float inverse = 1.0f / std::sqrt((sum(squares) + tail) / static_cast<float>(width) + eps);
    for (int64_t i = 0; i < body; i += LANES) {
      store(scaled, load(in + i) * inverse);  // rounded to T, as the reference's .to(dtype)
      store(o + i, load(scaled) * load(weight + i));
    }
    for (int64_t i = body; i < width; ++i)
      o[i] = static_cast<T>(static_cast<float>(static_cast<T>(static_cast<float>(in[i]) * inverse)) *
                            static_cast<float>(weight[i]));
  }
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weight.is_contiguous() && weight.numel() == x.size(1),
              "rms_norm: x is contiguous [rows, width] and weight [width]");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() &&
                  (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat),
              "rms_norm: x and weight must both be bfloat16 or float32");
  at::Tensor out = at::empty_like(x);
  if (x.scalar_type() == at::kBFloat16)
    norm_rows(x.data_ptr<c10::BFloat16>(), weight.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(),
              x.size(0), x.size(1), static_cast<float>(eps));
  else
    norm_rows(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(), x.size(0), x.size(1),
              static_cast<float>(eps));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ragscale, m) { m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor"); }

TORCH_LIBRARY_IMPL(ragscale, CPU, m) { m.impl("rms_norm", rms_norm); }
