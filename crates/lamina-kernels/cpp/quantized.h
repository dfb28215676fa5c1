// The quantized products' plain-pointer problem, shared by the quantized matmul primitive
// and the fused primitives built on it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lamina_kernels {

// out[M, N] = x[M, K] @ dequantize(w)^T for MLX's affine layout: `w` packed little-endian
// bit streams, one per row; per-group f32 scales and biases.
struct Problem {
  const float* x;       // [M, K], row-major
  const uint8_t* w;     // [N, K * bits / 8] bytes
  const float* scales;  // [N, K / group]
  const float* biases;  // [N, K / group]
  float* out;           // [M, N]
  int m, n, k, group, bits;
  int row_bytes() const { return k * bits / 8; }
  int groups() const { return k / group; }
  // Row r's packed values, scales and biases.
  const uint8_t* row(int r) const { return w + static_cast<size_t>(r) * row_bytes(); }
  const float* row_scales(int r) const { return scales + static_cast<size_t>(r) * groups(); }
  const float* row_biases(int r) const { return biases + static_cast<size_t>(r) * groups(); }
};

// Computes a problem with the fastest path for its shape: one row (decoding) reads each
// packed weight once; up to 32 rows dequantize each weight row once into L1; more go
// through sgemm on dequantized tiles. Rows are split over the pool when large enough.
void quantized_products(const Problem& p);

}  // namespace lamina_kernels
