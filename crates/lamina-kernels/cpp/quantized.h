// The quantized products' plain-pointer problem, shared by the quantized matmul primitive
// and the fused primitives built on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lamina_kernels {

// `n` f16 values as f32 (the tier's widening: F16C, NEON, or a loop).
void widen_f16(const uint16_t* src, int n, float* dst);

// out[M, N] = x[M, K] @ dequantize(w)^T for MLX's affine layout: `w` packed little-endian
// bit streams, one per row; per-group scales and biases, f32 or f16 (as GGUF stores them:
// a quarter fewer bytes per 4-bit weight to read).
struct Problem {
  const float* x;       // [M, K], row-major
  const uint8_t* w;     // [N, K * bits / 8] bytes
  const void* scales;   // [N, K / group], f32 or f16
  const void* biases;   // [N, K / group], the same dtype
  float* out;           // [M, N]
  int m, n, k, group, bits;
  bool half_scales;     // scales and biases are f16
  int row_bytes() const { return k * bits / 8; }
  int groups() const { return k / group; }
  // Row r's packed values.
  const uint8_t* row(int r) const { return w + static_cast<size_t>(r) * row_bytes(); }
  // Row r's scales and biases as f32 (f16 ones widened into a per-thread buffer, valid
  // until the next call for the same kind on this thread).
  const float* row_scales(int r) const { return row_of(scales, r, scale_buffer()); }
  const float* row_biases(int r) const { return row_of(biases, r, bias_buffer()); }

 private:
  const float* row_of(const void* data, int r, std::vector<float>& buffer) const {
    const size_t first = static_cast<size_t>(r) * groups();
    if (!half_scales) return static_cast<const float*>(data) + first;
    buffer.resize(groups());
    widen_f16(static_cast<const uint16_t*>(data) + first, groups(), buffer.data());
    return buffer.data();
  }
  static std::vector<float>& scale_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
  }
  static std::vector<float>& bias_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
  }
};

// Value j of a packed row (a little-endian bit stream of `bits`-wide values).
inline uint32_t value_at(const uint8_t* row, int row_bytes, int j, int bits) {
  const int bit = j * bits;
  const int byte = bit >> 3;
  uint32_t two = row[byte];
  if (byte + 1 < row_bytes) two |= static_cast<uint32_t>(row[byte + 1]) << 8;
  return (two >> (bit & 7)) & ((1u << bits) - 1u);
}

// x prepared once per row of x: per-group sums, and for 4-bit the even/odd split of each
// 32-value chunk (byte j of a chunk holds values 2j and 2j + 1).
struct PreparedRow {
  std::vector<float> group_sums;
  std::vector<float> split;  // [K]: per 32-chunk, 16 even values then 16 odd values
};

inline PreparedRow prepare(const Problem& p, const float* x) {
  PreparedRow out;
  out.group_sums.assign(p.groups(), 0.0f);
  for (int g = 0; g < p.groups(); ++g) {
    float sum = 0.0f;
    for (int j = 0; j < p.group; ++j) sum += x[g * p.group + j];
    out.group_sums[g] = sum;
  }
  if (p.bits == 4) {
    out.split.resize(p.k);
    for (int c = 0; c < p.k / 32; ++c) {
      for (int j = 0; j < 16; ++j) {
        out.split[32 * c + j] = x[32 * c + 2 * j];
        out.split[32 * c + 16 + j] = x[32 * c + 2 * j + 1];
      }
    }
  }
  return out;
}

// sum over groups of biases[g] * (the group's sum of x).
inline float bias_dot(const Problem& p, int r, const PreparedRow& x) {
  const float* b = p.row_biases(r);
  float sum = 0.0f;
  for (int g = 0; g < p.groups(); ++g) sum += b[g] * x.group_sums[g];
  return sum;
}

// Computes a problem with the fastest path for its shape: one row (decoding) reads each
// packed weight once; up to 32 rows dequantize each weight row once into L1; more go
// through sgemm on dequantized tiles. Rows are split over the pool when large enough.
void quantized_products(const Problem& p);

}  // namespace lamina_kernels
