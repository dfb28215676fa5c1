// Plain loops that every tier compiles for its own vector width: each tier's file wraps
// them in a function with its target attribute, into which they are inlined (so the
// portable tier's copy uses the baseline, the AVX2 tier's AVX2, and so on).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "isa.h"
#include "mlx/types/half_types.h"

namespace lamina_kernels {

// A bf16 or f16 value as f32.
inline float widen_half(uint16_t v, bool bf16) {
  if (bf16) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  mlx::core::float16_t h;
  std::memcpy(&h, &v, sizeof h);
  return static_cast<float>(h);
}

// One f32 rounded to a 16-bit value (MLX's own conversions).
inline void narrow_half(float v, uint16_t* dst, bool bf16) {
  if (bf16) {
    const mlx::core::bfloat16_t h(v);
    std::memcpy(dst, &h, 2);
  } else {
    const mlx::core::float16_t h(v);
    std::memcpy(dst, &h, 2);
  }
}

// Decode attention of one part: scores, their exponentials and the weighted values (any
// head size; soft-capping).
__attribute__((always_inline)) inline void attend_loops(const Part& p) {
  const int n = p.end - p.begin;
  for (int r = 0; r < p.rep; ++r) p.max[r] = -INFINITY;
  for (int j = 0; j < n; ++j) {
    const float* kj = p.keys + (p.begin + j) * p.key_stride;
    for (int r = 0; r < p.rep; ++r) {
      const float* qr = p.q + static_cast<size_t>(r) * p.d;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < p.d; ++i) s += qr[i] * kj[i];
      s *= p.scale;
      if (p.softcap > 0.0f) s = p.softcap * std::tanh(s / p.softcap);
      p.scores[r * n + j] = s;
      p.max[r] = std::max(p.max[r], s);
    }
  }
  for (int r = 0; r < p.rep; ++r) {
    float total = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float e = std::exp(p.scores[r * n + j] - p.max[r]);
      p.scores[r * n + j] = e;
      total += e;
    }
    p.sum[r] = total;
  }
  std::fill(p.out, p.out + static_cast<size_t>(p.rep) * p.dv, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride;
    for (int r = 0; r < p.rep; ++r) {
      const float w = p.scores[r * n + j];
      float* o = p.out + static_cast<size_t>(r) * p.dv;
#pragma omp simd
      for (int i = 0; i < p.dv; ++i) o[i] += w * vj[i];
    }
  }
}

}  // namespace lamina_kernels
