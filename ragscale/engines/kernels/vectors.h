// Vectors for ragscale's CPU kernels: 16 floats as GCC/Clang vector extensions, which compile to
// one AVX-512 register, two AVX2 registers or four NEON registers (whatever -march=native gives
// where the module is built), with loads from bf16 and fixed-order sums.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cmath>
#include <cstring>

namespace ragscale {

typedef float floats16 __attribute__((vector_size(64)));
typedef int ints16 __attribute__((vector_size(64)));
typedef unsigned int uints16 __attribute__((vector_size(64)));
typedef unsigned short halves16 __attribute__((vector_size(32)));

constexpr int64_t LANES = 16;

inline floats16 load(const float* p) {
  floats16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline floats16 load(const c10::BFloat16* p) {  // bf16 is the top half of a float32
  halves16 h;
  std::memcpy(&h, p, sizeof h);
  uints16 bits = __builtin_convertvector(h, uints16) << 16;
  floats16 v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

inline float sum(floats16 v) {  // a fixed order: the same bits on every call
  float s[LANES];
  std::memcpy(s, &v, sizeof v);
  for (int64_t width = LANES / 2; width > 0; width /= 2)
    for (int64_t i = 0; i < width; ++i) s[i] += s[i + width];
  return s[0];
}

// The sums of 16 vectors, as one vector: lane i = the sum of v[i]'s lanes, folded pairwise in a
// fixed order (halves, quarters, pairs, lanes).
inline floats16 sum16(const floats16* v) {
  floats16 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)
    a[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  for (int i = 0; i < 4; ++i)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int i = 0; i < 2; ++i)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(c[0], c[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(c[0], c[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// exp(x): Cephes' expf polynomial (~1 ulp) in vectors (libm's expf is scalar: the attention of
// one SmolLM2 token at 1,000 keys takes ~275k of them). x is clamped to [-87, 88], the normal range.
inline floats16 exp16(floats16 x) {
  const floats16 low = floats16{} - 87.0f, high = floats16{} + 88.0f;
  x = x < low ? low : x;
  x = x > high ? high : x;
  const floats16 magic = floats16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  floats16 nf = (x * 1.44269504088896341f + magic) - magic;
  ints16 n = __builtin_convertvector(nf, ints16);
  floats16 r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  floats16 p = floats16{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  ints16 scale_bits = (n + 127) << 23;
  floats16 scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

// float32 to bf16, rounded to nearest even as c10::BFloat16 rounds (finite values)
inline void store(c10::BFloat16* p, floats16 v) {
  uints16 bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  halves16 h = __builtin_convertvector(bits, halves16);
  std::memcpy(p, &h, sizeof h);
}

inline void store(float* p, floats16 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace ragscale
