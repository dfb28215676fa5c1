// The AVX2 tier's products of GGUF's super-block formats (blocks.h) with x rounded per 256
// values (ggml's Q8_K, in quantized.h's block_order): Q4_K, Q5_K and Q6_K, the formats of
// Q4_K_M and Q5_K_M files, Q3_K and Q2_K (Q3_K_M, Q2_K files) and IQ4_XS.
//
// A block is unpacked into eight registers of 32 codes in x's order: register r holds, in
// 32-bit lane u, four codes of sub-block u. A pair's `maddubs` products of a few registers
// are then summed as 16-bit lanes (each lane one sub-block's, as many as fit: 8 registers of
// 4-bit codes, 4 of 5-bit, 2 of 6-bit) before one `madd` with the sub-blocks' scales, where
// a row-order layout needs a `madd` per 32 values: `maddubs` and `madd` share one port on
// many x86 cores. Per block one FMA of the 32-bit sums by d x d_x and one of the minimum
// terms (llama.cpp's vec_dot_q4_K_q8_K; its repacked 8-row gemm sums as these do).
//
// A weight row meets up to kTile rows of x at once, each block unpacked once for all of
// them (prompts and batches); every (weight row, row of x) pair runs the same operations
// whatever the tile holds, so a row of x gets the same outputs alone or beside others.

#if defined(__x86_64__)

#include <algorithm>
#include <cstring>

#include "avx2_tiles.h"
#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

using avx2_tiles::group_sums;
using avx2_tiles::halves;
using avx2_tiles::kWeightBytes;
using avx2_tiles::transpose4;

constexpr int kTile = 8;

LAMINA_AVX2 inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

LAMINA_AVX2 inline float half(const uint8_t* b) { return _cvtsh_ss(u16_at(b)); }

// One block unpacked in x's order (see the top of this file).
struct Block {
  __m256i codes[8];   // register r, lane u: codes 4r .. 4r + 3 of sub-block u (unsigned, < 64)
  __m256i signs[8];   // a signed format's values (IQ4_XS; codes: their magnitudes)
  __m256i scales[2];  // 16-bit lanes 2u, 2u + 1: sub-block u's scale in registers 0-3 / 4-7
  __m256i mins;       // 16-bit weights of x's 16-value sums in the minimum term
  float d, dmin;      // the block's factors: d x scale x code - dmin x (min term)
};

// Q4_K's and Q5_K's eight 6-bit scales (bytes 0-7) and minimums (8-15) (ggml's
// get_scale_min_k4, four words at a time as llama.cpp unpacks them).
LAMINA_AVX2 inline __m128i scales_mins_k4(const uint8_t* packed) {
  constexpr uint32_t kMask1 = 0x3f3f3f3f, kMask2 = 0x0f0f0f0f, kMask3 = 0x03030303;
  uint32_t u[3];
  std::memcpy(u, packed, 12);
  const uint32_t mins_high = ((u[2] >> 4) & kMask2) | (((u[1] >> 6) & kMask3) << 4);
  const uint32_t scales_high = (u[2] & kMask2) | (((u[0] >> 6) & kMask3) << 4);
  return _mm_set_epi32(static_cast<int>(mins_high), static_cast<int>(u[1] & kMask1), static_cast<int>(scales_high),
                       static_cast<int>(u[0] & kMask1));
}

// Q4_K and Q5_K: the 128 bytes of low nibbles hold sub-blocks 2j (low) and 2j + 1 (high) in
// bytes 32j .. 32j + 31; Q5_K's fifth bits are bit s of byte i of qh for value i of sub-block s.
template <bool kFive>
LAMINA_AVX2 LAMINA_INLINE void unpack_q4_q5_k(const uint8_t* b, Block& out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const uint8_t* qs = b + (kFive ? 48 : 16);
  for (int h = 0; h < 2; ++h) {
    const __m256i l = halves(qs + 16 * h, qs + 64 + 16 * h);       // sub-blocks 0, 1 | 4, 5
    const __m256i m = halves(qs + 32 + 16 * h, qs + 96 + 16 * h);  // sub-blocks 2, 3 | 6, 7
    __m256i a[4] = {_mm256_and_si256(l, nibble), _mm256_and_si256(_mm256_srli_epi16(l, 4), nibble),
                    _mm256_and_si256(m, nibble), _mm256_and_si256(_mm256_srli_epi16(m, 4), nibble)};
    if constexpr (kFive) {
      // Bits 0-3 of the low half for sub-blocks 0-3, of the high half (bits 4-7 moved down)
      // for 4-7; bit s to bit 4.
      const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + 16 * h));
      const __m256i bits = _mm256_inserti128_si256(_mm256_castsi128_si256(qh), _mm_srli_epi16(qh, 4), 1);
      a[0] = _mm256_or_si256(a[0], _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(1)), 4));
      a[1] = _mm256_or_si256(a[1], _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(2)), 3));
      a[2] = _mm256_or_si256(a[2], _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(4)), 2));
      a[3] = _mm256_or_si256(a[3], _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(8)), 1));
    }
    transpose4(a, out.codes + 4 * h);
  }
  const __m128i sm = scales_mins_k4(b + 4);
  out.scales[0] = out.scales[1] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sm, sm));
  // Each 32-value minimum twice, for the two 16-value sums of x it weighs.
  out.mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
  out.d = half(b);
  out.dmin = half(b + 2);
}

// Q6_K's, Q3_K's and Q2_K's sixteen scales (16-bit lanes) arranged for group_sums: lanes
// 2u, 2u + 1 of scales[h] hold scale 2u + h (sub-block u's first or second 16 values).
LAMINA_AVX2 LAMINA_INLINE void per_16_scales(__m256i sc, Block& out) {
  out.scales[0] = _mm256_shuffle_epi8(sc, _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1,
                                                           4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
  out.scales[1] = _mm256_shuffle_epi8(sc, _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15, 2, 3,
                                                           2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15));
}

// Q6_K: per 128 values, low nibbles of bytes 0-31 / 32-63 are sub-blocks 0 / 1, high nibbles
// 2 / 3, bits 2s, 2s + 1 of qh's 32 bytes sub-block s's upper two. codes - 32 multiply as
// unsigned codes; 32 x scale x (x's sum) is a minimum term (dmin = d). A scale per 16 values:
// registers 0-3 hold each sub-block's first 16, 4-7 its second.
LAMINA_AVX2 LAMINA_INLINE void unpack_q6_k(const uint8_t* b, Block& out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const uint8_t *ql = b, *qh = b + 128;
  for (int h = 0; h < 2; ++h) {
    const __m256i lo = halves(ql + 16 * h, ql + 64 + 16 * h);       // sub-blocks 0, 2 | 4, 6
    const __m256i hi = halves(ql + 32 + 16 * h, ql + 96 + 16 * h);  // sub-blocks 1, 3 | 5, 7
    const __m256i up = halves(qh + 16 * h, qh + 32 + 16 * h);
    const __m256i a[4] = {
        _mm256_or_si256(_mm256_and_si256(lo, nibble), _mm256_slli_epi16(_mm256_and_si256(up, _mm256_set1_epi8(0x03)), 4)),
        _mm256_or_si256(_mm256_and_si256(hi, nibble), _mm256_slli_epi16(_mm256_and_si256(up, _mm256_set1_epi8(0x0C)), 2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo, 4), nibble), _mm256_and_si256(up, _mm256_set1_epi8(0x30))),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(hi, 4), nibble),
                        _mm256_srli_epi16(_mm256_and_si256(up, _mm256_set1_epi8(static_cast<char>(0xC0))), 2))};
    transpose4(a, out.codes + 4 * h);
  }
  const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
  per_16_scales(sc, out);
  out.mins = _mm256_slli_epi16(sc, 5);
  out.d = out.dmin = half(b + 208);
}

// The 2-bit codes of Q2_K and Q3_K: per 128 values, bits 2j, 2j + 1 of bytes 0-31 hold
// sub-block j's values 0-31 (ggml's dequantize_row_q2_K), so a[s] takes chunk s (bytes 0-31)
// in its low half and chunk s + 4 (bytes 32-63) in its high one; kThird adds each code's
// third bit (bit u of byte i of Q3_K's hmask for value i of sub-block u).
template <bool kThird>
LAMINA_AVX2 LAMINA_INLINE void unpack_2bit_codes(const uint8_t* qs, const uint8_t* hmask, Block& out) {
  const __m256i three = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = halves(qs + 16 * h, qs + 32 + 16 * h);
    __m256i a[4];
    for (int s = 0; s < 4; ++s) a[s] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * s), three);
    if constexpr (kThird) {
      const __m256i bits = halves(hmask + 16 * h, hmask + 16 * h);
      for (int s = 0; s < 4; ++s) {
        const __m256i bit = _mm256_setr_m128i(_mm_set1_epi8(static_cast<char>(1 << s)),
                                              _mm_set1_epi8(static_cast<char>(1 << (s + 4))));
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bits, bit), bit);
        a[s] = _mm256_or_si256(a[s], _mm256_and_si256(set, _mm256_set1_epi8(4)));
      }
    }
    transpose4(a, out.codes + 4 * h);
  }
}

// Q2_K: 16 bytes of 4-bit scales (low nibble) and minimums (high), then the codes, d, dmin.
LAMINA_AVX2 LAMINA_INLINE void unpack_q2_k(const uint8_t* b, Block& out) {
  unpack_2bit_codes<false>(b + 16, nullptr, out);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  per_16_scales(_mm256_cvtepu8_epi16(_mm_and_si128(packed, nibble)), out);
  out.mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), nibble));
  out.d = half(b + 80);
  out.dmin = half(b + 82);
}

// Q3_K: hmask, the codes' low bits, twelve bytes of sixteen 6-bit scales (ggml's layout,
// unpacked as dequantize_row_q3_K does), d. codes - 4 multiply as unsigned codes 0-7; 4 x
// scale x (x's sum) is a minimum term (dmin = d).
LAMINA_AVX2 LAMINA_INLINE void unpack_q3_k(const uint8_t* b, Block& out) {
  unpack_2bit_codes<true>(b + 32, b, out);
  constexpr uint32_t kMask1 = 0x03030303, kMask2 = 0x0f0f0f0f;
  uint32_t aux[3];
  std::memcpy(aux, b + 96, 12);
  const __m128i scales6 = _mm_setr_epi32(static_cast<int>((aux[0] & kMask2) | ((aux[2] & kMask1) << 4)),
                                         static_cast<int>((aux[1] & kMask2) | (((aux[2] >> 2) & kMask1) << 4)),
                                         static_cast<int>(((aux[0] >> 4) & kMask2) | (((aux[2] >> 4) & kMask1) << 4)),
                                         static_cast<int>(((aux[1] >> 4) & kMask2) | (((aux[2] >> 6) & kMask1) << 4)));
  const __m256i sc = _mm256_cvtepi8_epi16(_mm_sub_epi8(scales6, _mm_set1_epi8(32)));
  per_16_scales(sc, out);
  out.mins = _mm256_slli_epi16(sc, 2);
  out.d = out.dmin = half(b + 108);
}

// A format: its unpacking, how many registers' products fit in 16-bit lanes (a lane sums
// 2 x kSummed products of a code and a byte of x: 15 x 127 x 16, 31 x 127 x 8, 63 x 127 x 4)
// and whether its scales and minimums are per 16 values (Q6_K, Q3_K, Q2_K) or per 32.
template <void (*Unpack)(const uint8_t*, Block&), int kSummedRegisters, bool kScalesPer16>
struct Kind {
  static constexpr int kSummed = kSummedRegisters;
  static constexpr bool kPer16 = kScalesPer16;
  LAMINA_AVX2 LAMINA_INLINE static void unpack(const uint8_t* b, Block& out) { Unpack(b, out); }
};
using Q4K = Kind<unpack_q4_q5_k<false>, 8, false>;
using Q5K = Kind<unpack_q4_q5_k<true>, 4, false>;
using Q6K = Kind<unpack_q6_k, 2, true>;
using Q3K = Kind<unpack_q3_k, 4, true>;
using Q2K = Kind<unpack_q2_k, 4, true>;

// IQ4_XS's eight 6-bit scales - 32 (the low four bits of scale u are bits 4u .. 4u + 3 of
// the 32-bit word at b + 4, its high two bits 2u, 2u + 1 of the 16-bit word at b + 2), as
// the 16-bit lanes 2u and 2u + 1.
LAMINA_AVX2 inline __m256i iq4_xs_scales(const uint8_t* b) {
  uint32_t low_bits;
  std::memcpy(&low_bits, b + 4, 4);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i low = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(low_bits)), _mm256_slli_epi32(lanes, 2));
  const __m256i high = _mm256_srlv_epi32(_mm256_set1_epi32(u16_at(b + 2)), _mm256_slli_epi32(lanes, 1));
  const __m256i scale = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi32(0x0F)),
                                                         _mm256_slli_epi32(_mm256_and_si256(high, _mm256_set1_epi32(3)), 4)),
                                         _mm256_set1_epi32(32));
  return _mm256_or_si256(_mm256_and_si256(scale, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(scale, 16));
}

// IQ4_XS block b's 256 entries of the 16-byte `table` its 4-bit indices pick (bytes 8 on:
// per 32 values 16 bytes, value j in the low nibble of byte j, value j + 16 in its high one),
// in x's order.
LAMINA_AVX2 LAMINA_INLINE void iq4_xs_values(const uint8_t* b, const void* table16, __m256i (&out)[8]) {
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(table16)));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const uint8_t* qs = b + 8;
  __m256i low[4], high[4];
  for (int s = 0; s < 4; ++s) {
    const __m256i v = halves(qs + 16 * s, qs + 16 * (s + 4));  // chunk s | chunk s + 4
    low[s] = _mm256_shuffle_epi8(table, _mm256_and_si256(v, nibble));
    high[s] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
  }
  transpose4(low, out);
  transpose4(high, out + 4);
}

#if !defined(LAMINA_TILES_VNNI)  // the VNNI tier's K-quant products: avx512_vnni_blocks.cpp

// IQ4_XS (d, 16 high and 32 low bits of eight 6-bit scales, then per 32 values 16 bytes of
// indices into kIq4Values: value j in the low nibble of byte j, value j + 16 in its high
// one). Its table values are signed (-127..113); as unsigned codes (+ 128) a pair's products
// would saturate `maddubs`'s 16-bit lanes, so the codes hold |value| and `signs` the values:
// `maddubs` multiplies |value| by x's byte with the value's sign (a pair at most 2 x 127 x
// 127), and each register's products go to 32 bits by one `madd` with the sub-block scales.
// No minimum term (dmin = 0).
LAMINA_AVX2 LAMINA_INLINE void unpack_iq4_xs(const uint8_t* b, Block& out) {
  iq4_xs_values(b, kIq4Values, out.signs);
  for (int r = 0; r < 8; ++r) out.codes[r] = _mm256_abs_epi8(out.signs[r]);
  out.scales[0] = out.scales[1] = iq4_xs_scales(b);
  out.mins = _mm256_setzero_si256();
  out.d = half(b);
  out.dmin = 0.0f;
}

// kSummed 0: a signed format (rows_of multiplies its codes apart), no minimum term.
using IQ4XS = Kind<unpack_iq4_xs, 0, false>;

// Weight row r against rows xs[0 .. kCount), into out[i * stride].
template <class K, int kCount>
LAMINA_AVX2 void rows_of(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format);
  const int8_t* xq[kCount];
  const int16_t* sums[kCount];
  const float* dx[kCount];
  __m256 acc[kCount];
  const __m256 zero = opaque_zero();
  for (int i = 0; i < kCount; ++i) {
    xq[i] = xs[i].q8.data();
    sums[i] = xs[i].bsums.data();
    dx[i] = xs[i].q8_scales.data();
    acc[i] = zero;
  }
  Block block;
  for (int blk = 0; blk < p.k / kBlockValues; ++blk) {
    K::unpack(row + static_cast<size_t>(blk) * bytes, block);
    if constexpr (K::kSummed == 0) {
      // A signed format: |value| times x's bytes with the value's sign (a pair at most
      // 2 x 127 x 127), each register to 32 bits by its own `madd` with the sub-block scales.
      // Each code register meets every row of x in turn, so that the codes and signs stay in
      // registers (row by row, their 16 registers would not).
      const size_t at = static_cast<size_t>(blk) * kBlockValues;
      __m256i isum[kCount];
      for (int i = 0; i < kCount; ++i) isum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
#pragma GCC unroll 8
        for (int i = 0; i < kCount; ++i) {
          const __m256i xs = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + at + 32 * r)), block.signs[r]);
          isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(_mm256_maddubs_epi16(block.codes[r], xs), block.scales[0]));
        }
      }
      for (int i = 0; i < kCount; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(block.d * dx[i][blk]), _mm256_cvtepi32_ps(isum[i]), acc[i]);
      }
      // (Not an `else` around the unsigned formats' loop: GCC 12 then schedules this one
      // ~4% slower, harness IQ4_XS 2048 x 2048 x 256: 28.7 against 27.5 ms.)
      continue;
    }
#pragma GCC unroll 8
    for (int i = 0; i < kCount; ++i) {
      const size_t at = static_cast<size_t>(blk) * kBlockValues;
      const __m256i isum = group_sums<K::kSummed>(block.codes, xq[i] + at, block.scales);
      const __m256i msum = _mm256_madd_epi16(block.mins, load(sums[i] + at / 16));
      const float d = dx[i][blk];
      acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(block.d * d), _mm256_cvtepi32_ps(isum), acc[i]);
      acc[i] = _mm256_fnmadd_ps(_mm256_set1_ps(block.dmin * d), _mm256_cvtepi32_ps(msum), acc[i]);
    }
  }
  for (int i = 0; i < kCount; ++i) out[i * stride] = hsum(acc[i]);
}

template <class K>
LAMINA_AVX2 float dot(const Problem& p, int r, const float*, const PreparedRow& x) {
  float out;
  rows_of<K, 1>(p, r, &x, &out, 1);
  return out;
}

// Weight rows [begin, end) against rows [m0, m1) of x: per block of weight rows that stays in
// cache (kWeightBytes), each tile of kTile rows of x (the rest in one tile, in L1) against
// every weight row of the block in turn. (x's rows in blocks of 192 KiB met by each weight
// row in turn read them from L2 for every weight row: ~10% slower on this order's harness,
// Q4_K and Q6_K at 2048 x 2048 x 256.)
template <class K>
LAMINA_AVX2 void products(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  const int weight_rows = std::max(1, kWeightBytes / p.row_bytes());
  for (int r0 = begin; r0 < end; r0 += weight_rows) {
    const int r1 = std::min(end, r0 + weight_rows);
    in_tiles<kTile>(m0, m1, [&](auto rows, int m) LAMINA_AVX2 {
      for (int r = r0; r < r1; ++r) {
        rows_of<K, decltype(rows)::value>(p, r, xs + m, p.out + static_cast<size_t>(m) * p.n + r, p.n);
      }
    });
  }
}

template <class K>
void add(Kernels& k, Format f) {
  k.dot_blocks_int8[static_cast<int>(f)] = dot<K>;
  k.products_blocks_int8[static_cast<int>(f)] = products<K>;
}

#endif  // !LAMINA_TILES_VNNI

}  // namespace

#if !defined(LAMINA_TILES_VNNI)
void add_avx2_blocks(Kernels& k) {
  add<Q4K>(k, Format::q4_k);
  add<Q5K>(k, Format::q5_k);
  add<Q6K>(k, Format::q6_k);
  add<Q3K>(k, Format::q3_k);
  add<Q2K>(k, Format::q2_k);
  add<IQ4XS>(k, Format::iq4_xs);
}
#endif  // !LAMINA_TILES_VNNI

}  // namespace lamina_kernels

#endif  // __x86_64__
