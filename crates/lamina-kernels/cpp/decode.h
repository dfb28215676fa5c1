// What the decoding primitives share (fused.cpp: one layer's work per node;
// decode_block.cpp: a whole block per node): the gated unit's activations and the decode
// attention over a KV cache's buffers.
#pragma once

#include <cmath>

#include "mlx/array.h"

namespace lamina_kernels {

namespace mc = mlx::core;

// The gated unit's activation, applied to the first product (0: none, several outputs).
enum class Gate : int { None = 0, Silu = 1, GeluTanh = 2, GeluErf = 3 };

inline float activate(Gate gate, float v) {
  switch (gate) {
    case Gate::Silu: return v / (1.0f + std::exp(-v));
    case Gate::GeluTanh: {
      const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(inner));
    }
    case Gate::GeluErf: return 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f));
    case Gate::None: return v;
  }
  return v;
}

// Attention of one query position: q [B, H, 1, D]; the new k [B, H_kv, 1, D] and
// v [B, H_kv, 1, D_v]; the caches keys [B, H_kv, C, D] and values [B, H_kv, C, D_v].
// The new key and value go to slot `slot`; the query attends to slots [0, length) (the
// last `window` of them when window > 0). Outputs: [B, 1, H * D_v], and the caches.
struct Attend {
  int batch, heads, kv_heads, d, dv, capacity, slot, length, window;
  float scale, softcap;
  int in_place;  // write into the input caches, which the outputs then share
};

// The attention of Attend's query heads `q` [B, H, D] over the caches' slots, into
// `out` [B, H * D_v] (the new key and value already written at the slot).
void attend_decode(const Attend& a, const float* q, const float* keys, const float* values, float* out);

// The cache buffer `out` receives: the input's own when the caller allows writing in
// place (and the input is a plain dense buffer), else a new one. Returns whether the
// input has to be copied into it.
bool take_buffer(const mc::array& in, mc::array& out, bool in_place);

// A dense f32 array's elements copied to `dst` (a strided one's in row-major order).
void copy_into(const mc::array& in, float* dst);

}  // namespace lamina_kernels
