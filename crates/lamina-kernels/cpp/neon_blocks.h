// The NEON tiers' products of GGUF's block formats with x rounded to 8 bits (ggml's Q8_K
// per 256 values, Q8_0 per 32): every format, one row of x (decoding) and tiles of many
// (batches, prompts). A tile unpacks a few weight rows once and meets every row of x with
// them, where the portable kernels unpack a block again for each row of x.
//
// x's super-blocks are read in order (Kernels::grouped_super_blocks false: a 16-value
// group's bytes side by side), its 32-value chunks chunk by chunk. The byte products are
// summed as integers by `Dots` (neon_int8.cpp: `smull` and pairwise adds, every aarch64;
// neon_dotprod.cpp: `sdot`), exactly, so both tiers give the same integers; the floats that
// follow are the portable tier's, term by term, and one row of x gives the same result in a
// tile as alone.
//
// `Dots` is a struct of two functions, each adding the products of 16 signed bytes w x x
// to 32-bit lanes: `scaled(sums, w, x, scale)` scale times them, `plain(sums, w, x)` as
// they are (which lane holds which products is theirs to choose: the lanes are summed).
#pragma once

#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <vector>

#include "isa.h"
#include "loops.h"

namespace lamina_kernels {
namespace neon_blocks {
// File-local: neon_dotprod.cpp compiles these templates again for `sdot` (a shared inline
// definition would let the linker keep either copy).
namespace {

// Bytes of unpacked weight rows a tile keeps while the rows of x meet them (L1-sized).
constexpr size_t kUnpackedBytes = 32 * 1024;

// Weight rows [begin, end) against rows [m0, m1) of x: `Row` unpacks a few weight rows at a
// time (as many as kUnpackedBytes hold), then each row of x meets them in turn;
// out[i * N + r].
template <class Row>
void tiles(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  thread_local std::vector<Row> rows;
  const int per_tile = static_cast<int>(std::max<size_t>(1, kUnpackedBytes / std::max<size_t>(1, Row::bytes(p))));
  for (int r0 = begin; r0 < end; r0 += per_tile) {
    const int r1 = std::min(end, r0 + per_tile);
    rows.resize(r1 - r0);
    for (int r = r0; r < r1; ++r) rows[r - r0].unpack(p, r);
    for (int i = m0; i < m1; ++i) {
      float* out = p.out + static_cast<size_t>(i) * p.n;
      for (int r = r0; r < r1; ++r) out[r] = rows[r - r0].dot(xs[i]);
    }
  }
}

// One row of x: the same row unpacked, the same dot.
template <class Row>
float one_row(const Problem& p, int r, const float*, const PreparedRow& x) {
  thread_local Row row;
  row.unpack(p, r);
  return row.dot(x);
}

// ---------------------------------------------------------------------------------------
// Super-blocks (Q2_K-Q6_K, IQ4_XS): blocks.h's unpacking, x rounded per 256 values in order.

template <class Dots>
struct SuperRow {
  std::vector<Unpacked> blocks;

  static size_t bytes(const Problem& p) { return sizeof(Unpacked) * (p.k / kBlockValues); }

  void unpack(const Problem& p, int r) {
    const uint8_t* row = p.row(r);
    const size_t size = block_bytes(p.format);
    blocks.resize(p.k / kBlockValues);
    for (size_t b = 0; b < blocks.size(); ++b) lamina_kernels::unpack(p.format, row + b * size, blocks[b]);
  }

  // Per block: isum = sum over 16-value groups of scale x (codes . x's bytes), msum = sum of
  // min x x's group sums (ggml's Q8_K bsums), then blocks.h's block_sum, added block by block.
  float dot(const PreparedRow& x) const {
    float total = 0.0f;
    for (size_t b = 0; b < blocks.size(); ++b) {
      const Unpacked& u = blocks[b];
      const int8_t* xq = x.q8.data() + b * kBlockValues;
      int32x4_t sums = vdupq_n_s32(0);
      for (int s = 0; s < 16; ++s) sums = Dots::scaled(sums, vld1q_s8(u.q + 16 * s), vld1q_s8(xq + 16 * s), u.scale[s]);
      const int16_t* group_sums = x.bsums.data() + b * 16;
      const int8x16_t min = vld1q_s8(u.min);
      const int16x8_t min_low = vmovl_s8(vget_low_s8(min)), min_high = vmovl_high_s8(min);
      const int16x8_t sums_low = vld1q_s16(group_sums), sums_high = vld1q_s16(group_sums + 8);
      int32x4_t mins = vmull_s16(vget_low_s16(min_low), vget_low_s16(sums_low));
      mins = vmlal_high_s16(mins, min_low, sums_low);
      mins = vmlal_s16(mins, vget_low_s16(min_high), vget_low_s16(sums_high));
      mins = vmlal_high_s16(mins, min_high, sums_high);
      total += block_sum(u.d, u.dmin, x.q8_scales[b], vaddvq_s32(sums), vaddvq_s32(mins));
    }
    return total;
  }
};

// ---------------------------------------------------------------------------------------
// 32-value blocks (Q5_0, Q5_1, Q8_0, IQ4_NL): per block its codes as blocks.h's code_offset
// makes them (Q5_0's values + 16), its d and its bias factor (m - offset x d).

struct Chunk {
  int8_t codes[32];
  float d, bias;
};

// Sixteen codes' fifth bits (bits [first, first + 16) of the 32-bit qh) as 0x10 bytes.
inline uint8x16_t fifth_bits(const uint8_t* qh, int first) {
  const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[first / 8]), vdup_n_u8(qh[first / 8 + 1]));
  const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  return vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10));
}

// A block's codes, d and bias factor: the bytes and floats blocks.h's unpack and the
// portable dot_int8_small make of it.
inline void unpack_chunk(Format f, const uint8_t* b, Chunk& out) {
  float dmin = 0.0f;
  int min = 0;
  const uint8x16_t nibble = vdupq_n_u8(0x0F);
  int8x16_t low, high;
  switch (f) {
    case Format::q8_0:
      low = vld1q_s8(reinterpret_cast<const int8_t*>(b + 2));
      high = vld1q_s8(reinterpret_cast<const int8_t*>(b + 18));
      break;
    case Format::iq4_nl: {
      const int8x16_t table = vld1q_s8(kIq4Values);
      const uint8x16_t qs = vld1q_u8(b + 2);
      low = vqtbl1q_s8(table, vandq_u8(qs, nibble));
      high = vqtbl1q_s8(table, vshrq_n_u8(qs, 4));
      break;
    }
    default: {  // Q5_0 (qh at 2, qs at 6) and Q5_1 (m at 2, qh at 4, qs at 8): the 5-bit values
      const bool q5_1 = f == Format::q5_1;
      const uint8_t* qh = b + (q5_1 ? 4 : 2);
      const uint8x16_t qs = vld1q_u8(b + (q5_1 ? 8 : 6));
      low = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(qs, nibble), fifth_bits(qh, 0)));
      high = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(qs, 4), fifth_bits(qh, 16)));
      if (q5_1) {
        dmin = widen_half(u16_at(b + 2), false);
        min = -1;
      }
      break;
    }
  }
  // Q5_0's codes are its values (q + 16); the others' as stored.
  vst1q_s8(out.codes, low);
  vst1q_s8(out.codes + 16, high);
  out.d = widen_half(u16_at(b), false);
  out.bias = -(dmin * static_cast<float>(min)) - static_cast<float>(code_offset(f)) * out.d;
}

template <class Dots>
struct SmallRow {
  std::vector<Chunk> chunks;

  static size_t bytes(const Problem& p) { return sizeof(Chunk) * (p.k / 32); }

  void unpack(const Problem& p, int r) {
    const uint8_t* row = p.row(r);
    const size_t size = block_bytes(p.format);
    chunks.resize(p.k / 32);
    for (size_t c = 0; c < chunks.size(); ++c) unpack_chunk(p.format, row + c * size, chunks[c]);
  }

  // Per block (d x d_x) x the integer dot of its codes with x's bytes, and its bias factor x
  // x's exact sum over the block, added as the portable dot_int8_small adds them.
  float dot(const PreparedRow& x) const {
    float total = 0.0f, bias = 0.0f;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const Chunk& chunk = chunks[c];
      const int8_t* xq = x.q8.data() + 32 * c;
      int32x4_t sums = Dots::plain(vdupq_n_s32(0), vld1q_s8(chunk.codes), vld1q_s8(xq));
      sums = Dots::plain(sums, vld1q_s8(chunk.codes + 16), vld1q_s8(xq + 16));
      total += (chunk.d * x.q8_scales[c]) * static_cast<float>(vaddvq_s32(sums));
      bias += chunk.bias * x.group_sums[c];
    }
    return total + bias;
  }
};

// Every block format's one-row kernel and tiles into k, x's super-blocks in order.
template <class Dots>
void add_blocks(Kernels& k) {
  k.grouped_super_blocks = false;
  for (int f = 1; f < kFormats; ++f) {
    if (small_blocks(static_cast<Format>(f))) {
      k.dot_blocks_int8[f] = one_row<SmallRow<Dots>>;
      k.products_blocks_int8[f] = tiles<SmallRow<Dots>>;
    } else {
      k.dot_blocks_int8[f] = one_row<SuperRow<Dots>>;
      k.products_blocks_int8[f] = tiles<SuperRow<Dots>>;
    }
  }
}

}  // namespace
}  // namespace neon_blocks
}  // namespace lamina_kernels

#endif  // __aarch64__
