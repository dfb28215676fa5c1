// The NEON tier (every aarch64 CPU: Apple silicon's, Graviton, Ampere, Raspberry Pi 5):
// 4- and 8-bit one-row products and dequantized rows, the batch dots, f16 widening, and
// the decode attention's dot products and exponentials four lanes at a time; products with
// x rounded to 8 bits (affine 4/8-bit rows, GGUF's block formats) in neon_int8.cpp. What has no NEON kernel here (affine 2/3/5/6/7-bit rows,
// half-precision weights) is left to MLX's own ops, never to a scalar loop.

#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cmath>

#include "isa.h"
#include "loops.h"

namespace lamina_kernels {
namespace {

// Sixteen bytes as four vectors of four floats, in order.
inline void widen16(uint8x16_t v, float32x4_t out[4]) {
  const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_u8(vget_high_u8(v));
  out[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo)));
  out[1] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo)));
  out[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi)));
  out[3] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi)));
}

// sum_i v[i] * x[i] for sixteen values, added to acc.
inline float32x4_t fma16(const float32x4_t v[4], const float* x, float32x4_t acc) {
  acc = vfmaq_f32(acc, v[0], vld1q_f32(x));
  acc = vfmaq_f32(acc, v[1], vld1q_f32(x + 4));
  acc = vfmaq_f32(acc, v[2], vld1q_f32(x + 8));
  return vfmaq_f32(acc, v[3], vld1q_f32(x + 12));
}

// One 4-bit row against one row of x (pre-split into even and odd values per 32).
float dot_q4(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  const float* xs = x.split.data();
  const uint8x16_t low = vdupq_n_u8(0x0F);
  const int per_group = p.group / 32;
  float32x4_t total = vdupq_n_f32(0.0f);
  for (int g = 0; g < p.groups(); ++g) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    for (int c = g * per_group; c < (g + 1) * per_group; ++c) {
      const uint8x16_t bytes = vld1q_u8(w + 16 * c);
      float32x4_t even[4], odd[4];
      widen16(vandq_u8(bytes, low), even);
      widen16(vshrq_n_u8(bytes, 4), odd);
      a0 = fma16(even, xs + 32 * c, a0);
      a1 = fma16(odd, xs + 32 * c + 16, a1);
    }
    total = vfmaq_n_f32(total, vaddq_f32(a0, a1), s[g]);
  }
  return vaddvq_f32(total) + bias_dot(p, r, x);
}

// One 8-bit row against one row of x.
float dot_q8(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  float32x4_t total = vdupq_n_f32(0.0f);
  for (int g = 0; g < p.groups(); ++g) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    for (int j = g * p.group; j < (g + 1) * p.group; j += 32) {
      float32x4_t v[4];
      widen16(vld1q_u8(w + j), v);
      a0 = fma16(v, xv + j, a0);
      widen16(vld1q_u8(w + j + 16), v);
      a1 = fma16(v, xv + j + 16, a1);
    }
    total = vfmaq_n_f32(total, vaddq_f32(a0, a1), s[g]);
  }
  return vaddvq_f32(total) + bias_dot(p, r, x);
}

// scale * v + bias for sixteen values, stored.
inline void put16(uint8x16_t q, float scale, float bias, float* dst) {
  float32x4_t v[4];
  widen16(q, v);
  const float32x4_t b = vdupq_n_f32(bias);
  for (int i = 0; i < 4; ++i) vst1q_f32(dst + 4 * i, vfmaq_n_f32(b, v[i], scale));
}

// A 4- or 8-bit row as K floats.
void dequantize_q4_q8(const Problem& p, int r, float* dst) {
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  if (p.bits == 4) {
    const uint8x16_t low = vdupq_n_u8(0x0F);
    for (int c = 0; c < p.k / 32; ++c) {
      const int g = 32 * c / p.group;
      const uint8x16_t bytes = vld1q_u8(w + 16 * c);
      // Byte j holds values 2j (low nibble) and 2j + 1: interleaved back into order.
      const uint8x16x2_t values = vzipq_u8(vandq_u8(bytes, low), vshrq_n_u8(bytes, 4));
      put16(values.val[0], s[g], b[g], dst + 32 * c);
      put16(values.val[1], s[g], b[g], dst + 32 * c + 16);
    }
    return;
  }
  for (int j = 0; j < p.k; j += 16) put16(vld1q_u8(w + j), s[j / p.group], b[j / p.group], dst + j);
}

void dots(const float* w, const float* x, int m, int k, float* out, int ldo) {
  for (int i = 0; i < m; ++i) {
    const float* xi = x + static_cast<size_t>(i) * k;
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    int j = 0;
    for (; j + 8 <= k; j += 8) {
      a0 = vfmaq_f32(a0, vld1q_f32(w + j), vld1q_f32(xi + j));
      a1 = vfmaq_f32(a1, vld1q_f32(w + j + 4), vld1q_f32(xi + j + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(a0, a1));
    for (; j < k; ++j) sum += w[j] * xi[j];
    out[static_cast<size_t>(i) * ldo] = sum;
  }
}

void f16_to_f32(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  for (; i < n; ++i) dst[i] = vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(src[i]))), 0);
}

// exp(x) for x <= 0 to about 1 ulp: 2^n exp(f), n = round(x / ln 2), |f| <= ln 2 / 2
// (Cody-Waite), exp(f) by Cephes' expf polynomial (as the AVX-512 tier computes it).
inline float32x4_t exp4(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(-87.3f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t f = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  f = vfmsq_f32(f, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, f);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, f);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, f);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, f);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, f);
  y = vfmaq_f32(vaddq_f32(f, vdupq_n_f32(1.0f)), vmulq_f32(y, f), f);
  const int32x4_t exponent = vshlq_n_s32(vcvtq_s32_f32(n), 23);
  return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(y), exponent));
}

// Decode attention of one part for head sizes that are multiples of 4, no soft-capping.
void attend4(const Part& p) {
  const int n = p.end - p.begin, dk = p.d / 4, dvk = p.dv / 4;
  for (int r = 0; r < p.rep; ++r) {
    const float* qr = p.q + static_cast<size_t>(r) * p.d;
    float* scores = p.scores + static_cast<size_t>(r) * n;
    float largest = -INFINITY;
    for (int j = 0; j < n; ++j) {
      const float* kj = p.keys + (p.begin + j) * p.key_stride;
      float32x4_t acc = vmulq_f32(vld1q_f32(qr), vld1q_f32(kj));
      for (int c = 1; c < dk; ++c) acc = vfmaq_f32(acc, vld1q_f32(qr + 4 * c), vld1q_f32(kj + 4 * c));
      scores[j] = vaddvq_f32(acc) * p.scale;
      largest = std::max(largest, scores[j]);
    }
    p.max[r] = largest;
    const float32x4_t m = vdupq_n_f32(largest);
    float32x4_t total = vdupq_n_f32(0.0f);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const float32x4_t e = exp4(vsubq_f32(vld1q_f32(scores + j), m));
      vst1q_f32(scores + j, e);
      total = vaddq_f32(total, e);
    }
    float sum = vaddvq_f32(total);
    for (; j < n; ++j) {
      scores[j] = std::exp(scores[j] - largest);
      sum += scores[j];
    }
    p.sum[r] = sum;
  }
  std::fill(p.out, p.out + static_cast<size_t>(p.rep) * p.dv, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride;
    for (int r = 0; r < p.rep; ++r) {
      const float w = p.scores[static_cast<size_t>(r) * n + j];
      float* o = p.out + static_cast<size_t>(r) * p.dv;
      for (int c = 0; c < dvk; ++c) vst1q_f32(o + 4 * c, vfmaq_n_f32(vld1q_f32(o + 4 * c), vld1q_f32(vj + 4 * c), w));
    }
  }
}

// activate(gate, v) x up for four values (SiLU, GELU with tanh; as the AVX2 tier's gated8):
// v x sigmoid(t) with e = exp(-|t|).
inline float32x4_t gated4(Gate gate, float32x4_t v, float32x4_t up) {
  float32x4_t t = v;
  if (gate == Gate::GeluTanh) {
    const float32x4_t cube = vmulq_f32(vmulq_f32(vmulq_f32(vdupq_n_f32(0.044715f), v), v), v);
    t = vmulq_f32(vdupq_n_f32(2.0f * 0.7978845608028654f), vaddq_f32(v, cube));
  }
  const float32x4_t e = exp4(vnegq_f32(vabsq_f32(t)));
  const float32x4_t top = vbslq_f32(vcgeq_f32(t, vdupq_n_f32(0.0f)), vdupq_n_f32(1.0f), e);
  return vmulq_f32(vmulq_f32(v, vdivq_f32(top, vaddq_f32(vdupq_n_f32(1.0f), e))), up);
}

// Kernels::gated: four values at a time, the last few through the same code (a copy);
// GELU with erf value by value.
void gated(Gate gate, float* values, const float* up, size_t n) {
  if (gate != Gate::Silu && gate != Gate::GeluTanh) return gated_portable(gate, values, up, n);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) vst1q_f32(values + j, gated4(gate, vld1q_f32(values + j), vld1q_f32(up + j)));
  if (j < n) {
    float v[4] = {}, u[4] = {};
    std::copy(values + j, values + n, v);
    std::copy(up + j, up + n, u);
    vst1q_f32(v, gated4(gate, vld1q_f32(v), vld1q_f32(u)));
    std::copy(v, v + (n - j), values + j);
  }
}

void attend(const Part& p) {
  if (p.d % 4 == 0 && p.dv % 4 == 0 && p.softcap == 0.0f) {
    attend4(p);
  } else {
    attend_loops(p);
  }
}

}  // namespace

Kernels neon_kernels() {
  Kernels k{};
  k.isa = Isa::neon;
  k.name = "neon";
  k.dot_q4 = dot_q4;
  k.dot_q8 = dot_q8;
  k.dequantize_q4_q8 = dequantize_q4_q8;
  k.dots = dots;
  k.widen_f16 = f16_to_f32;
  k.round_chunk = round_chunk_portable;
  k.attend = attend;
  k.gated = gated;
  add_portable_blocks(k);
  add_neon_int8(k);
  return k;
}

}  // namespace lamina_kernels

#endif  // __aarch64__
