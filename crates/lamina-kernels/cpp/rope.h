// RoPE's rotation as MLX's `fast::rope` fallback computes it, shared by the RoPE primitive
// (norm_rope.cpp) and the q/k products that rotate their outputs (fused.cpp).

#pragma once

#include <cstddef>
#include <functional>

#include "mlx/types/half_types.h"

namespace lamina_kernels {

// Rotation of the first `dims` features of x [..., L, D] at positions offset..offset+L:
// feature pair i turns by (t + offset) * scale / period_i, period_i = base^(2i / dims)
// or the given periods.
struct RopeSpec {
  int dims;
  bool traditional;  // pairs (2i, 2i + 1), else (i, i + dims / 2)
  bool has_freqs;    // explicit periods (else from base)
  float base;
  float scale;
  int offset;
};

// `v` rounded to T's precision and back: MLX computes each op of a half-precision graph in
// f32 and rounds its result to the array's dtype; so do these kernels, op by op.
template <typename T>
inline float rounded(float v) {
  return static_cast<float>(static_cast<T>(v));
}

template <>
inline float rounded<float>(float v) {
  return v;
}

// Row r of the input as f32 (d values; see Rows in common.h).
using RowSource = std::function<const float*(size_t)>;

// `planes` blocks of [l, d] rows rotated into `out` (whose rows may be the input's own for
// f32): cos and sin in f32 rounded to T, each product, difference and sum rounded to T, as
// the fallback's ops round. `periods` holds dims / 2 values when spec.has_freqs.
template <typename T>
void rotate_rows(const RowSource& rows, T* out, size_t planes, int l, int d, RopeSpec spec, const float* periods);

}  // namespace lamina_kernels
