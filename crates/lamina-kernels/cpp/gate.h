// The gated unit's activation (SwiGLU's SiLU, GeGLU's GELU), value by value: the portable
// tier's, and the reference the vector tiers' Kernels::gated is checked against.
#pragma once

#include <cmath>

namespace lamina_kernels {

// The gated unit's activation, applied to the first product (0: none, several outputs).
enum class Gate : int { None = 0, Silu = 1, GeluTanh = 2, GeluErf = 3 };

inline float activate(Gate gate, float v) {
  switch (gate) {
    case Gate::Silu: return v / (1.0f + std::exp(-v));
    case Gate::GeluTanh: {
      // 0.5 v (1 + tanh(u)) = v / (1 + exp(-2u)): one expf instead of glibc's tanhf (an
      // expm1f and more; ~5% of Gemma 3's prompt time), equal to float rounding.
      const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return v / (1.0f + std::exp(-2.0f * inner));
    }
    case Gate::GeluErf: return 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f));
    case Gate::None: return v;
  }
  return v;
}

// values[j] = activate(gate, values[j]) x up[j] for j < n, value by value.
inline void gated_portable(Gate gate, float* values, const float* up, size_t n) {
  for (size_t j = 0; j < n; ++j) values[j] = activate(gate, values[j]) * up[j];
}

}  // namespace lamina_kernels
