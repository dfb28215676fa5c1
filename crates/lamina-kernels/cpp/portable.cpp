// The portable tier: every kernel in plain C++ (loops the compiler may vectorise for the
// baseline of the target). It serves any CPU, and it is the reference the other tiers are
// tested against (LAMINA_ISA=portable).

#include <cstring>

#include "isa.h"
#include "loops.h"

namespace lamina_kernels {
namespace {

float dot_any(const Problem& p, int r, const float* x, const PreparedRow& prepared) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const int bytes = p.row_bytes();
  float total = 0.0f;
  for (int g = 0; g < p.groups(); ++g) {
    float acc = 0.0f;
    for (int j = g * p.group; j < (g + 1) * p.group; ++j) {
      acc += static_cast<float>(value_at(row, bytes, j, p.bits)) * x[j];
    }
    total += s[g] * acc;
  }
  return total + bias_dot(p, r, prepared);
}

// sum over 32-value chunks c of (group scale x x's d_c) x chunk_sum(c), the integer sum of
// the chunk's products with x rounded to 8 bits (PreparedRow::q8).
template <class ChunkSum>
float int8_chunks(const Problem& p, const float* s, const PreparedRow& x, ChunkSum chunk_sum) {
  const int per_group = p.group / 32;
  float total = 0.0f;
  for (int c = 0; c < p.k / 32; ++c) {
    total += s[c / per_group] * x.q8_scales[c] * static_cast<float>(chunk_sum(c));
  }
  return total;
}

// 4-bit weights against x rounded to 8 bits (split like the nibbles).
float dot_q4_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const float total = int8_chunks(p, p.row_scales(r), x, [&](int c) {
    const uint8_t* bytes = row + 16 * c;
    const int8_t* xq = x.q8.data() + 32 * c;
    int32_t sum = 0;
    for (int j = 0; j < 16; ++j) sum += (bytes[j] & 0x0F) * xq[j] + (bytes[j] >> 4) * xq[16 + j];
    return sum;
  });
  return total + bias_dot(p, r, x);
}

// 8-bit weights against x rounded to 8 bits: sum q x = sum (q - 128) x + 128 sum x, the
// first as integers (both factors fit a signed byte), the second from x's exact group sums.
float dot_q8_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float total = int8_chunks(p, s, x, [&](int c) {
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) sum += (row[32 * c + j] - 128) * x.q8[32 * c + j];
    return sum;
  });
  float shift = 0.0f;
  for (int g = 0; g < p.groups(); ++g) shift += s[g] * x.group_sums[g];
  return total + 128.0f * shift + bias_dot(p, r, x);
}

// Any other width (2, 3, 5, 6 bits) against x rounded to 8 bits: the values are small
// non-negative integers, multiplied with x's bytes as they are.
float dot_bits_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const int bytes = p.row_bytes();
  const float total = int8_chunks(p, p.row_scales(r), x, [&](int c) {
    int32_t sum = 0;
    for (int j = 32 * c; j < 32 * c + 32; ++j) sum += static_cast<int32_t>(value_at(row, bytes, j, p.bits)) * x.q8[j];
    return sum;
  });
  return total + bias_dot(p, r, x);
}

void dequantize_any(const Problem& p, int r, float* dst) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  if (p.bits == 4) {
    for (int j = 0; j < p.k / 2; ++j) {
      const int g = (2 * j) / p.group;
      dst[2 * j] = s[g] * static_cast<float>(row[j] & 0x0F) + b[g];
      dst[2 * j + 1] = s[g] * static_cast<float>(row[j] >> 4) + b[g];
    }
  } else if (p.bits == 8) {
    for (int j = 0; j < p.k; ++j) {
      const int g = j / p.group;
      dst[j] = s[g] * static_cast<float>(row[j]) + b[g];
    }
  } else {
    const int bytes = p.row_bytes();
    for (int j = 0; j < p.k; ++j) {
      const int g = j / p.group;
      dst[j] = s[g] * static_cast<float>(value_at(row, bytes, j, p.bits)) + b[g];
    }
  }
}

void dots(const float* w, const float* x, int m, int k, float* out, int ldo) {
  for (int i = 0; i < m; ++i) {
    const float* xi = x + static_cast<size_t>(i) * k;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += w[j] * xi[j];
    out[static_cast<size_t>(i) * ldo] = sum;
  }
}

void f16_to_f32(const uint16_t* src, int n, float* dst) {
  for (int i = 0; i < n; ++i) {
    mlx::core::float16_t h;
    std::memcpy(&h, src + i, sizeof h);
    dst[i] = static_cast<float>(h);
  }
}

float half_dot(const uint16_t* w, const float* x, int k, bool bf16) {
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += widen_half(w[j], bf16) * x[j];
  return sum;
}

void half_widen(const uint16_t* src, float* dst, int k, bool bf16) {
  for (int j = 0; j < k; ++j) dst[j] = widen_half(src[j], bf16);
}

void half_narrow(const float* src, uint16_t* dst, size_t n, bool bf16) {
  for (size_t i = 0; i < n; ++i) narrow_half(src[i], dst + i, bf16);
}

void attend(const Part& p) { attend_loops(p); }

}  // namespace

float round_chunk_portable(const float* values, int size, int8_t* out) {
  float largest = 0.0f;
  for (int j = 0; j < size; ++j) largest = std::max(largest, std::fabs(values[j]));
  const float d = largest / 127.0f;
  const float inverse = d > 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < size; ++j) out[j] = static_cast<int8_t>(std::nearbyint(values[j] * inverse));
  return d;
}

Kernels portable_kernels() {
  Kernels k{};
  k.isa = Isa::portable;
  k.name = "portable";
  k.dot_bits = dot_any;
  k.dot_q4_int8 = dot_q4_int8;
  k.dot_q8_int8 = dot_q8_int8;
  k.dot_bits_int8 = dot_bits_int8;
  k.dequantize_bits = dequantize_any;
  k.dots = dots;
  k.widen_f16 = f16_to_f32;
  k.round_chunk = round_chunk_portable;
  k.half_dot = half_dot;
  k.half_widen = half_widen;
  k.half_narrow = half_narrow;
  k.attend = attend;
  k.gated = gated_portable;
  add_portable_blocks(k);
  return k;
}

}  // namespace lamina_kernels
