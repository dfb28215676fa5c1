// The AVX-512 VNNI variant of avx2_small_blocks.cpp (Q5_0, Q5_1, Q8_0, IQ4_NL): that file
// compiled again, its functions for AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of
// LAMINA_AVX2) and avx2_tiles.h's byte products as `vpdpbusd` (LAMINA_TILES_VNNI), one
// instruction where AVX2 needs `maddubs`, a 16-bit add and a `madd`; and, for prompts and
// batches of Q5_0 and Q5_1, avx2_tiles.h's grouped tile two weight rows at once in 512-bit
// registers (row r's codes and factors in the low half, row r + 1's in the high one, x
// broadcast to both halves), which halves the per-group work of each pair: conversions,
// factors, bias terms, the last chunks and the final sums. Every lane runs the operations
// the 256-bit tile runs (the same integer sums; each half's floats take the same steps), so
// every result equals the AVX2 tier's bit for bit. Its table entry is add_vnni_small_blocks
// (isa.h), which the avx512_vbmi tier installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#define add_avx2_small_blocks add_vnni_small_blocks_256

#include "avx2_small_blocks.cpp"

namespace lamina_kernels {
namespace {

// FiveBits::load8 for rows[0] (the low half) and rows[1] at once: each 16 bytes of nibbles
// from four blocks in one register, the fifth bits added (+16) under byte masks built from
// the blocks' 32-bit words, then the transpose in both halves; the same codes as pairing
// the two rows' load8.
template <class Format>
LAMINA_VNNI LAMINA_INLINE void load8_pair(const Format (&rows)[2], int c, __m512i (&w)[8]) {
  constexpr int kBytes = Format::kBytes, kHigh = Format::kHigh;
  const uint8_t* first[2] = {rows[0].row + static_cast<size_t>(kBytes) * c, rows[1].row + static_cast<size_t>(kBytes) * c};
  for (const uint8_t* f : first) {
    for (int line = 0; line < 3; ++line) _mm_prefetch(reinterpret_cast<const char*>(f + kPrefetch + 64 * line), _MM_HINT_T0);
  }
  const __m512i nibble = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(0x10);
  __m512i low[4], high[4];
  for (int u = 0; u < 4; ++u) {
    // Quarter q: chunk u (q even) or u + 4 (q odd) of row q / 2.
    const uint8_t* block[4] = {first[0] + kBytes * u, first[0] + kBytes * (u + 4), first[1] + kBytes * u,
                               first[1] + kBytes * (u + 4)};
    const __m512i v = quarters(block[0] + kHigh + 4, block[1] + kHigh + 4, block[2] + kHigh + 4, block[3] + kHigh + 4);
    uint64_t low_bits = 0, high_bits = 0;
    for (int q = 0; q < 4; ++q) {
      const uint64_t word = word_at(block[q] + kHigh);
      low_bits |= (word & 0xFFFF) << (16 * q);
      high_bits |= (word >> 16) << (16 * q);
    }
    low[u] = _mm512_and_si512(v, nibble);
    high[u] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    low[u] = _mm512_mask_add_epi8(low[u], low_bits, low[u], sixteen);
    high[u] = _mm512_mask_add_epi8(high[u], high_bits, high[u], sixteen);
  }
  transpose4(low, w);
  transpose4(high, w + 4);
}

// Q8Offset::load8 for both rows at once: each 16 bytes of four blocks in one register
// (quarters: chunk u and u + 4 of rows[0], then of rows[1]), flipped, then the transpose in
// both halves.
LAMINA_VNNI LAMINA_INLINE void load8_pair(const Q8Offset (&rows)[2], int c, __m512i (&w)[8]) {
  constexpr int kBytes = Q8Offset::kBytes;
  const uint8_t* first[2] = {rows[0].row + static_cast<size_t>(kBytes) * c, rows[1].row + static_cast<size_t>(kBytes) * c};
  for (const uint8_t* f : first) {
    for (int line = 0; line < 5; ++line) _mm_prefetch(reinterpret_cast<const char*>(f + kPrefetch + 64 * line), _MM_HINT_T0);
  }
  const __m512i flip = _mm512_set1_epi8(-128);
  __m512i low[4], high[4];
  for (int u = 0; u < 4; ++u) {
    const uint8_t* block[4] = {first[0] + kBytes * u + 2, first[0] + kBytes * (u + 4) + 2, first[1] + kBytes * u + 2,
                               first[1] + kBytes * (u + 4) + 2};
    low[u] = _mm512_xor_si512(quarters(block[0], block[1], block[2], block[3]), flip);
    high[u] = _mm512_xor_si512(quarters(block[0] + 16, block[1] + 16, block[2] + 16, block[3] + 16), flip);
  }
  transpose4(low, w);
  transpose4(high, w + 4);
}

// grouped_tile (avx2_tiles.h) for weight rows r and r + 1 against rows xs[0 .. X), into
// out[i * stride] and out[i * stride + 1].
template <class Format, int X>
LAMINA_VNNI void grouped_pairs(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  constexpr int kFlip = avx2_tiles::flip_of<Format>();
  const int chunks = p.k / 32;
  const Format rows[2] = {Format(p, r), Format(p, r + 1)};
  __m512 acc[X];
#pragma GCC unroll 16
  for (int i = 0; i < X; ++i) acc[i] = _mm512_setzero_ps();
  const __m256 shift = _mm256_set1_ps(Format::kShift);
  for (int g = 0; g < chunks; g += 8) {
    const int count = std::min(8, chunks - g);
    __m256 s[2], sb[2];
    for (int a = 0; a < 2; ++a) {
      __m256 b;
      rows[a].factors8(g, count, s[a], b);
      sb[a] = _mm256_fmadd_ps(s[a], shift, b);
    }
    const __m512 scale = pair(s[0], s[1]), bias = pair(sb[0], sb[1]);
#pragma GCC unroll 16
    for (int i = 0; i < X; ++i) acc[i] = _mm512_fmadd_ps(bias, both(xs[i].group_sums.data() + g), acc[i]);
    if (count == 8) {
      __m512i w[8];
      load8_pair(rows, g, w);
#pragma GCC unroll 16
      for (int i = 0; i < X; ++i) {
        const int8_t* x = xs[i].q8.data() + 32 * static_cast<size_t>(g);
        const __m512i back = _mm512_broadcast_i32x8(avx2_tiles::flipped_sums<kFlip>(xs[i], g));
        const __m512 sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot_chains(w, x, 0, 8), back));
        acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(scale, both(xs[i].q8_scales.data() + g)), sums, acc[i]);
      }
    } else {
      alignas(32) float scales[2][8];
      for (int a = 0; a < 2; ++a) _mm256_store_ps(scales[a], s[a]);
      for (int c = g; c < chunks; ++c) {
        const __m512i w = pair(rows[0].load(c), rows[1].load(c));
        const __m512 factors = pair(_mm256_set1_ps(scales[0][c - g]), _mm256_set1_ps(scales[1][c - g]));
#pragma GCC unroll 16
        for (int i = 0; i < X; ++i) {
          const __m512i x = both(xs[i].q8.data() + 32 * static_cast<size_t>(c));
          const __m512i back = _mm512_broadcast_i32x8(avx2_tiles::flipped_chunk<kFlip>(xs[i], c));
          const __m512 sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x), back));
          acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(factors, _mm512_set1_ps(xs[i].q8_scales[c])), sums, acc[i]);
        }
      }
    }
  }
  for (int i = 0; i < X; ++i) {
    out[i * stride] = hsum(_mm512_castps512_ps256(acc[i]));
    out[i * stride + 1] = hsum(_mm512_extractf32x8_ps(acc[i], 1));
  }
}

// avx2_tiles.h's tiles, two weight rows at a time where a tile of rows of x fills (the last
// row of an odd count, and decoding, as the 256-bit tiles run them).
template <class Format>
LAMINA_VNNI void paired_tiles(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  constexpr int X = Format::kXRows;
  if (m1 - m0 < X) {
    avx2_tiles::tiles<Format>(p, begin, end, xs, m0, m1);
    return;
  }
  const size_t n = p.n;
  for (int x0 = m0; x0 < m1; x0 += avx2_tiles::kXBlock) {
    const int x1 = std::min(m1, x0 + avx2_tiles::kXBlock);
    int r = begin;
    for (; r + 2 <= end; r += 2) {
      in_tiles<X>(x0, x1, [&](auto rows, int i) {
        grouped_pairs<Format, decltype(rows)::value>(p, r, xs + i, p.out + i * n + r, n);
      });
    }
    if (r < end) avx2_tiles::tiles<Format>(p, r, end, xs, x0, x1);
  }
}

}  // namespace

void add_vnni_small_blocks(Kernels& k) {
  add_vnni_small_blocks_256(k);
  k.products_blocks_int8[static_cast<int>(Format::q5_0)] = paired_tiles<Q5_0>;
  k.products_blocks_int8[static_cast<int>(Format::q5_1)] = paired_tiles<Q5_1>;
  k.products_blocks_int8[static_cast<int>(Format::q8_0)] = paired_tiles<Q8Offset>;
  k.grouped_q8_0 = true;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
