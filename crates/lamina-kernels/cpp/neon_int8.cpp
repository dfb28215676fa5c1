// The NEON tier's products with x rounded to 8 bits (neon_affine.h: MLX's affine 4- and
// 8-bit rows; neon_blocks.h: GGUF's block formats) on every aarch64's byte products: `smull`
// into 16-bit lanes, summed in pairs, then into 32-bit lanes.

#if defined(__aarch64__)

#include "neon_affine.h"
#include "neon_blocks.h"

namespace lamina_kernels {
namespace {

// Sixteen products of signed bytes summed in adjacent pairs (at most 2 x 128 x 127: a 16-bit
// lane holds each).
inline int16x8_t pair_products(int8x16_t w, int8x16_t x) {
  return vpaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)), vmull_high_s8(w, x));
}

struct PairDots {
  static int32x4_t scaled(int32x4_t sums, int8x16_t w, int8x16_t x, int16_t scale) {
    const int16x8_t pairs = pair_products(w, x);
    return vmlal_high_n_s16(vmlal_n_s16(sums, vget_low_s16(pairs), scale), pairs, scale);
  }
  static int32x4_t plain(int32x4_t sums, int8x16_t w, int8x16_t x) { return vpadalq_s16(sums, pair_products(w, x)); }
};

}  // namespace

void add_neon_int8(Kernels& k) {
  neon_blocks::add_affine<PairDots>(k);
  neon_blocks::add_blocks<PairDots>(k);
}

}  // namespace lamina_kernels

#endif  // __aarch64__
