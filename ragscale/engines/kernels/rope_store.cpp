// RoPE on a decode step's fused projection and the new token's KV written into its row's buffer,
// in one call: torch's ops take ~10 calls a layer for it (slices, roll, three products, the
// indexed write). The rotation rounds as those ops round it: x * cos and the rotated half times
// the signed sine each rounded to the compute dtype, then their sum (``decode_step.rope_in_place``),
// so both builds give the same bits here.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

namespace {

template <typename T>
inline T round_to(float x) {
  return static_cast<T>(x);
}

// No fused multiply-add here: torch's ops round each product before the sum (in float32 the
// compiler would otherwise fuse x * cos + rotated * sin and round once).
#if defined(__clang__)
#define RAGSCALE_NO_FMA
#else
#define RAGSCALE_NO_FMA __attribute__((optimize("fp-contract=off")))
#endif

template <typename T>
RAGSCALE_NO_FMA void rope_rows(T* qkv, const T* cos, const T* sin, int64_t rows, int64_t row_stride, int64_t table_stride,
               int64_t heads, int64_t dim) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const int64_t half = dim / 2;
  std::vector<T> x(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const T* c = cos + r * table_stride;
    const T* s = sin + r * table_stride;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = qkv + r * row_stride + h * dim;
      std::copy(v, v + dim, x.begin());
      for (int64_t d = 0; d < dim; ++d) {
        const float rotated = static_cast<float>(x[(d + half) % dim]);  // torch.roll by half
        const T a = round_to<T>(static_cast<float>(x[d]) * static_cast<float>(c[d]));
        const T b = round_to<T>(rotated * static_cast<float>(s[d]));
        v[d] = round_to<T>(static_cast<float>(a) + static_cast<float>(b));
      }
    }
  }
}

void rope_store(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& signed_sin, int64_t heads,
                int64_t kv_heads, const at::Tensor& kv, at::IntArrayRef rows, at::IntArrayRef positions) {
  const int64_t n = qkv.size(0), dim = cos.size(-1);
  TORCH_CHECK(qkv.dim() == 2 && qkv.stride(1) == 1 && qkv.size(1) == (heads + 2 * kv_heads) * dim,
              "rope_store: qkv is [rows, (heads + 2 kv_heads) x dim], rows contiguous");
  TORCH_CHECK(cos.numel() == n * dim && signed_sin.numel() == n * dim && cos.is_contiguous() &&
                  signed_sin.is_contiguous(), "rope_store: cos and sin are contiguous, one row of dim per row");
  TORCH_CHECK(kv.dim() == 5 && kv.size(0) == 2 && kv.size(2) == kv_heads && kv.size(4) == dim && kv.stride(4) == 1,
              "rope_store: kv is one layer's [2, rows, kv_heads, capacity, dim]");
  TORCH_CHECK(static_cast<int64_t>(rows.size()) == n && static_cast<int64_t>(positions.size()) == n,
              "rope_store: one buffer row and position per row");
  TORCH_CHECK(qkv.scalar_type() == kv.scalar_type() && cos.scalar_type() == qkv.scalar_type() &&
                  signed_sin.scalar_type() == qkv.scalar_type() &&
                  (qkv.scalar_type() == at::kBFloat16 || qkv.scalar_type() == at::kFloat),
              "rope_store: qkv, cos, sin and kv must share one dtype, bfloat16 or float32");
  for (int64_t j = 0; j < n; ++j)
    TORCH_CHECK(rows[j] >= 0 && rows[j] < kv.size(1) && positions[j] >= 0 && positions[j] < kv.size(3),
                "rope_store: row ", rows[j], " position ", positions[j], " is outside the buffer");
  auto body = [&](auto* qkv_p, auto* kv_p, auto* cos_p, auto* sin_p) {
    rope_rows(qkv_p, cos_p, sin_p, n, qkv.stride(0), dim, heads + kv_heads, dim);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t part = 0; part < 2; ++part)      // k, then v
        for (int64_t h = 0; h < kv_heads; ++h) {
          const auto* from = qkv_p + j * qkv.stride(0) + (heads + part * kv_heads + h) * dim;
          auto* to = kv_p + part * kv.stride(0) + rows[j] * kv.stride(1) + h * kv.stride(2) + positions[j] * kv.stride(3);
          std::copy(from, from + dim, to);
        }
  };
  if (qkv.scalar_type() == at::kBFloat16)
    body(qkv.data_ptr<c10::BFloat16>(), kv.data_ptr<c10::BFloat16>(), cos.data_ptr<c10::BFloat16>(),
         signed_sin.data_ptr<c10::BFloat16>());
  else
    body(qkv.data_ptr<float>(), kv.data_ptr<float>(), cos.data_ptr<float>(), signed_sin.data_ptr<float>());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ragscale, m) {
  m.def("rope_store(Tensor(a!) qkv, Tensor cos, Tensor signed_sin, int heads, int kv_heads, Tensor(b!) kv, "
        "int[] rows, int[] positions) -> ()");
}

TORCH_LIBRARY_IMPL(ragscale, CPU, m) { m.impl("rope_store", rope_store); }
