// The gated MLP's middle for decode rows in one call: silu(gate) * up, from the fused gate | up
// projection [rows, 2 x inner], each product rounded to the compute dtype as torch's two ops
// (F.silu, then mul_) round it. torch's bf16 silu alone took ~8 us a layer here.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "vectors.h"

namespace {

using namespace ragscale;

template <typename T>
void silu_mul_rows(const T* gate_up, T* out, int64_t rows, int64_t inner) {
  T silu[LANES];
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = gate_up + r * 2 * inner;
    const T* up = gate + inner;
    T* o = out + r * inner;
    int64_t i = 0;
    for (; i + LANES <= inner; i += LANES) {
      floats16 x = load(gate + i);
      store(silu, x / (exp16(-x) + 1.0f));
      store(o + i, load(silu) * load(up + i));
    }
    for (; i < inner; ++i) {
      const float x = static_cast<float>(gate[i]);
      const float s = static_cast<float>(static_cast<T>(x / (std::exp(-x) + 1.0f)));
      o[i] = static_cast<T>(s * static_cast<float>(up[i]));
    }
  }
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "silu_mul: gate_up is contiguous [rows, 2 x inner]");
  TORCH_CHECK(gate_up.scalar_type() == at::kBFloat16 || gate_up.scalar_type() == at::kFloat,
              "silu_mul: gate_up must be bfloat16 or float32");
  const int64_t rows = gate_up.size(0), inner = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, inner}, gate_up.options());
  if (gate_up.scalar_type() == at::kBFloat16)
    silu_mul_rows(gate_up.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), rows, inner);
  else
    silu_mul_rows(gate_up.data_ptr<float>(), out.data_ptr<float>(), rows, inner);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ragscale, m) { m.def("silu_mul(Tensor gate_up) -> Tensor"); }

TORCH_LIBRARY_IMPL(ragscale, CPU, m) { m.impl("silu_mul", silu_mul); }
