// The NEON tiers' products of MLX's affine 4- and 8-bit rows with x rounded to 8 bits per
// 32 values (Activations::int8; as GGUF's Q4_0, Q4_1 and MLX's own 4- and 8-bit checkpoints
// are held): one row of x (decoding) and tiles of many (batches, prompts), any group that
// is a multiple of 32. Each 32-value chunk's byte products are summed as integers by `Dots`
// (neon_blocks.h), and the floats that follow are the portable tier's, term by term: per
// chunk scale x d_x x the sum, then the 8-bit rows' shift (128 x sum of scale x x's group
// sums) and the bias terms. One row of x gives the same result in a tile as alone.
#pragma once

#if defined(__aarch64__)

#include <arm_neon.h>

#include <vector>

#include "isa.h"
#include "neon_blocks.h"

namespace lamina_kernels {
namespace neon_blocks {
namespace {  // File-local, as neon_blocks.h.

template <class Dots>
struct AffineRow {
  const uint8_t* packed = nullptr;
  std::vector<float> scales, biases;
  int bits = 0, per_group = 1, chunks = 0;

  static size_t bytes(const Problem& p) { return static_cast<size_t>(p.k) * p.bits / 8 + 8 * p.groups(); }

  // The row's bytes where they lie, its scales and biases as f32.
  void unpack(const Problem& p, int r) {
    packed = p.row(r);
    const float* s = p.row_scales(r);
    scales.assign(s, s + p.groups());
    const float* b = p.row_biases(r);
    biases.assign(b, b + p.groups());
    bits = p.bits;
    per_group = p.group / 32;
    chunks = p.k / 32;
  }

  // Chunk c's codes: 4 bits, the low nibbles (even values) then the high ones, as x's split
  // order has them; 8 bits, q - 128 (a signed byte).
  int32_t chunk_sum(int c, const int8_t* xq) const {
    int8x16_t low, high;
    if (bits == 4) {
      const uint8x16_t bytes = vld1q_u8(packed + 16 * c);
      low = vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(0x0F)));
      high = vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4));
    } else {
      const uint8x16_t flip = vdupq_n_u8(0x80);
      low = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(packed + 32 * c), flip));
      high = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(packed + 32 * c + 16), flip));
    }
    return vaddvq_s32(Dots::plain(Dots::plain(vdupq_n_s32(0), low, vld1q_s8(xq)), high, vld1q_s8(xq + 16)));
  }

  float dot(const PreparedRow& x) const {
    float total = 0.0f;
    for (int c = 0; c < chunks; ++c) {
      total += scales[c / per_group] * x.q8_scales[c] * static_cast<float>(chunk_sum(c, x.q8.data() + 32 * c));
    }
    // 8 bits: sum q x = sum (q - 128) x + 128 sum x, the second from x's exact group sums.
    if (bits == 8) {
      float shift = 0.0f;
      for (size_t g = 0; g < scales.size(); ++g) shift += scales[g] * x.group_sums[g];
      total += 128.0f * shift;
    }
    float bias = 0.0f;
    for (size_t g = 0; g < biases.size(); ++g) bias += biases[g] * x.group_sums[g];
    return total + bias;
  }
};

// Tiles of 4- and 8-bit rows; other widths (which have no NEON kernel with x rounded, so
// never reach here) through the table's one-row kernel, pair by pair.
template <class Dots>
void affine_tiles(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  if (p.bits == 4 || p.bits == 8) return tiles<AffineRow<Dots>>(p, begin, end, xs, m0, m1);
  const RowDot dot = kernels().row_kernel(p).dot;
  for (int i = m0; i < m1; ++i) {
    for (int r = begin; r < end; ++r) p.out[static_cast<size_t>(i) * p.n + r] = dot(p, r, p.x + static_cast<size_t>(i) * p.k, xs[i]);
  }
}

// The 4- and 8-bit rows' one-row kernels and tiles into k.
template <class Dots>
void add_affine(Kernels& k) {
  k.dot_q4_int8 = one_row<AffineRow<Dots>>;
  k.dot_q8_int8 = one_row<AffineRow<Dots>>;
  k.products_int8 = affine_tiles<Dots>;
}

}  // namespace
}  // namespace neon_blocks
}  // namespace lamina_kernels

#endif  // __aarch64__
