// Decode attention for grouped queries on CPU: one new token per row, its KV head's query group
// (3 queries for SmolLM2) against one part of the row's keys, as the cascade in
// ``decode_step.decode_layers`` calls it.
//
// Why a kernel of our own: torch's fused CPU kernel gives this shape one work item per KV head
// (3 items for 2 threads) and small GEMM calls per key block; measured at ~4 GB/s of KV where the
// 4-bit weight GEMMs stream ~16 GB/s. No maintained library ships a CPU kernel for torch 2.13
// (intel-extension-for-pytorch stopped at torch 2.8). Here every (row, KV head, 512-key chunk) is
// one work item, and the chunks are merged in a fixed order afterwards: the bits do not depend on
// the thread count or on the other rows of the call (each row is computed alone).
//
// With ``accumulate`` the call continues a softmax: ``out``/``lse`` already hold the normalised
// output and log-sum-exp of an earlier part of the same keys (the shared prefix), and the result
// is softmax over both parts, so the cascade needs no merge ops of its own.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "vectors.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using namespace ragscale;

constexpr int64_t CHUNK = 512;  // keys per work item (fewer, larger items ran faster than 128 or 256)

// One work item: queries q [group, VECS * 16] (float32, scaled) against keys/values rows
// [begin, end) of one (row, KV head). Writes the chunk's max score, its sum of exp and its
// unnormalised output.
// Scratch, allocated once per thread: queries, per-key partial dot products, the output sums.
struct Scratch {
  std::vector<float> scores;
  std::vector<floats16> qv, dots, out;
  Scratch(int64_t group, int64_t vecs)
      : scores(group * ((CHUNK + LANES - 1) / LANES * LANES)), qv(group * vecs), dots(group * LANES), out(group * vecs) {}
};

template <int VECS, typename T>
void attend_chunk(const T* q, int64_t q_stride, float scale, int64_t group, const T* keys, const T* values,
                  int64_t row_stride, int64_t length, Scratch& scratch, float* top, float* total, float* acc) {
  const int64_t padded = (length + LANES - 1) / LANES * LANES;
  float* scores = scratch.scores.data();
  floats16* qv = scratch.qv.data();
  for (int64_t g = 0; g < group; ++g)
    for (int v = 0; v < VECS; ++v) qv[g * VECS + v] = load(q + g * q_stride + v * LANES) * scale;
  // q.k for 16 keys at a time: each key's 16 partial sums, then the 16 vectors folded into one
  // vector of 16 dot products (sum16), far fewer shuffles than reducing each key alone
  floats16* dots = scratch.dots.data();
  for (int64_t c0 = 0; c0 < length; c0 += LANES) {
    const int64_t n = std::min(LANES, length - c0);
    for (int64_t i = 0; i < n; ++i) {
      floats16 k[VECS];
      for (int v = 0; v < VECS; ++v) k[v] = load(keys + (c0 + i) * row_stride + v * LANES);
      for (int64_t g = 0; g < group; ++g) {
        floats16 dot = qv[g * VECS] * k[0];
        for (int v = 1; v < VECS; ++v) dot += qv[g * VECS + v] * k[v];
        dots[g * LANES + i] = dot;
      }
    }
    for (int64_t g = 0; g < group; ++g) {
      for (int64_t i = n; i < LANES; ++i) dots[g * LANES + i] = floats16{};
      floats16 sums = sum16(&dots[g * LANES]);
      std::memcpy(scores + g * padded + c0, &sums, sizeof sums);
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* s = scores + g * padded;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < length; ++c) m = s[c] > m ? s[c] : m;
    floats16 sums = {};
    for (int64_t c = 0; c < padded; c += LANES) {
      floats16 e = exp16(load(s + c) - m);
      for (int64_t i = 0; i < LANES; ++i)
        if (c + i >= length) e[i] = 0.0f;  // the padding's lanes
      std::memcpy(s + c, &e, sizeof e);
      sums += e;
    }
    top[g] = m;
    total[g] = sum(sums);
  }
  floats16* out = scratch.out.data();
  std::fill(out, out + group * VECS, floats16{});
  for (int64_t c = 0; c < length; ++c) {
    floats16 val[VECS];
    for (int v = 0; v < VECS; ++v) val[v] = load(values + c * row_stride + v * LANES);
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * padded + c];
      for (int v = 0; v < VECS; ++v) out[g * VECS + v] += p * val[v];
    }
  }
  for (int64_t g = 0; g < group; ++g)
    for (int v = 0; v < VECS; ++v) std::memcpy(acc + (g * VECS + v) * LANES, &out[g * VECS + v], sizeof(floats16));
}

template <int VECS, typename T>
void run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, at::Tensor& out,
         at::Tensor& lse, bool accumulate) {
  const int64_t rows = q.size(0), heads = q.size(1), group = q.size(2), dim = VECS * LANES;
  const int64_t length = k.size(2);
  const int64_t chunks = length == 0 ? 0 : (length + CHUNK - 1) / CHUNK;
  const T* qp = static_cast<const T*>(q.data_ptr());
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), qs2 = q.stride(2);
  const T* kp = static_cast<const T*>(k.data_ptr());
  const T* vp = static_cast<const T*>(v.data_ptr());
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), ks2 = k.stride(2);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2);
  TORCH_CHECK(ks2 == vs2, "decode_attention: keys and values need the same row stride");
  // per chunk: top [group], total [group], acc [group, dim]
  const int64_t part = group * (dim + 2);
  std::vector<float> parts(rows * heads * chunks * part);
  const int64_t items = rows * heads * chunks;
  // a short part (a row's own keys early in decode) runs on the calling thread: waking the other
  // threads would cost more than the work
  const int64_t grain = rows * heads * length < 4 * CHUNK ? std::max<int64_t>(items, 1) : 1;
  at::parallel_for(0, items, grain, [&](int64_t first, int64_t last) {
    Scratch scratch(group, VECS);
    for (int64_t item = first; item < last; ++item) {
      const int64_t chunk = item % chunks, head = item / chunks % heads, row = item / chunks / heads;
      const int64_t begin = chunk * CHUNK, size = std::min(CHUNK, length - begin);
      float* p = parts.data() + item * part;
      attend_chunk<VECS, T>(qp + row * qs0 + head * qs1, qs2, static_cast<float>(scale), group,
                               kp + row * ks0 + head * ks1 + begin * ks2, vp + row * vs0 + head * vs1 + begin * vs2,
                               ks2, size, scratch, p, p + group, p + 2 * group);
    }
  });
  // merge, chunk by chunk in order (after an earlier part's result when accumulating), on the
  // calling thread: a few thousand multiply-adds, less than a parallel region's start
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  std::vector<float> merged(dim);
  for (int64_t item = 0; item < rows * heads * group; ++item) {
    const int64_t g = item % group, pair = item / group;
    float* o = op + item * dim;
    const float* base = parts.data() + pair * chunks * part;
    float top = accumulate ? lp[item] : -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < chunks; ++c) top = std::max(top, base[c * part + g]);
    if (top == -std::numeric_limits<float>::infinity()) {  // no keys at all
      if (!accumulate) {
        std::fill(o, o + dim, 0.0f);
        lp[item] = top;
      }
      continue;
    }
    float total = 0.0f;
    std::fill(merged.begin(), merged.end(), 0.0f);
    if (accumulate && lp[item] != -std::numeric_limits<float>::infinity()) {
      const float w = std::exp(lp[item] - top);  // ``o`` is normalised: its weight is its share
      for (int64_t d = 0; d < dim; ++d) merged[d] = w * o[d];
      total = w;
    }
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = base + c * part;
      const float w = std::exp(p[g] - top);
      const float* acc = p + 2 * group + g * dim;
      for (int64_t d = 0; d < dim; ++d) merged[d] += w * acc[d];
      total += w * p[group + g];
    }
    const float inverse = 1.0f / total;
    for (int64_t d = 0; d < dim; ++d) o[d] = merged[d] * inverse;
    lp[item] = top + std::log(total);
  }
}

// Rows ``first .. first + rows`` of ``q``, ``out`` and ``lse`` (the decode step's run of rows),
// against ``kv``: [2, rows, kv_heads, n, dim] (each row's own keys and values) or
// [2, kv_heads, n, dim] (one shared prefix, read by every row). The views are taken here, where
// they cost nothing next to the ~20 ops a layer they took in the decode step.
void decode_attention(const at::Tensor& q_all, const at::Tensor& kv, double scale, const at::Tensor& out_all,
                      const at::Tensor& lse_all, int64_t first, int64_t rows, bool accumulate) {
  TORCH_CHECK(q_all.dim() == 4 && (kv.dim() == 4 || kv.dim() == 5) && kv.size(0) == 2,
              "decode_attention: q is [rows, kv_heads, group, dim], kv [2, (rows,) kv_heads, n, dim]");
  TORCH_CHECK(first >= 0 && rows >= 1 && first + rows <= q_all.size(0) && out_all.size(0) == q_all.size(0) &&
                  lse_all.size(0) == q_all.size(0), "decode_attention: rows ", first, "..", first + rows,
              " are outside q, out or lse");
  const at::Tensor q = q_all.narrow(0, first, rows), out = out_all.narrow(0, first, rows);
  const at::Tensor lse = lse_all.narrow(0, first, rows);
  at::Tensor k = kv.select(0, 0), v = kv.select(0, 1);
  if (kv.dim() == 4) {  // shared by every row: a zero batch stride, no copy
    k = k.unsqueeze(0).expand({rows, k.size(0), k.size(1), k.size(2)});
    v = v.unsqueeze(0).expand({rows, v.size(0), v.size(1), v.size(2)});
  }
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
              "decode_attention: shapes of q and kv do not match");
  TORCH_CHECK(k.scalar_type() == at::kBFloat16 || k.scalar_type() == at::kFloat,
              "decode_attention: keys and values must be bfloat16 or float32");
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "decode_attention: q must have the dtype of kv");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1, "decode_attention: the head dimension must be contiguous");
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.sizes() == q.sizes(),
              "decode_attention: out must be contiguous float32 shaped as q");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.is_contiguous() && lse.numel() == out.numel() / q.size(3),
              "decode_attention: lse must be contiguous float32 [rows, kv_heads, group]");
  at::Tensor o = out, l = lse;
  const bool bf16 = k.scalar_type() == at::kBFloat16;
  switch (q.size(3)) {
#define RAGSCALE_CASE(DIM)                                                  \
  case DIM:                                                                 \
    if (bf16) run<DIM / LANES, c10::BFloat16>(q, k, v, scale, o, l, accumulate); \
    else run<DIM / LANES, float>(q, k, v, scale, o, l, accumulate);    \
    break;
    RAGSCALE_CASE(16)
    RAGSCALE_CASE(32)
    RAGSCALE_CASE(64)
    RAGSCALE_CASE(80)
    RAGSCALE_CASE(96)
    RAGSCALE_CASE(128)
    RAGSCALE_CASE(256)
#undef RAGSCALE_CASE
    default:
      TORCH_CHECK(false, "decode_attention: head dim ", q.size(3), " is not one of 16, 32, 64, 80, 96, 128, 256");
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ragscale, m) {
  m.def("decode_attention(Tensor q, Tensor kv, float scale, Tensor(a!) out, Tensor(b!) lse, int first, int rows, "
        "bool accumulate) -> ()");
}

TORCH_LIBRARY_IMPL(ragscale, CPU, m) { m.impl("decode_attention", decode_attention); }
