// The 512-bit pair tiles of the VNNI tier's grouped formats (avx2_tiles.h's grouped_tile two
// weight rows at once: row r's codes and factors in the low half of each register, row
// r + 1's in the high one, x broadcast to both halves), which halve the per-group work of
// each pair: conversions, factors, bias terms, the last chunks and the final sums. Every
// lane runs the operations the 256-bit tile runs, so each result equals grouped_tile's bit
// for bit. Included by the avx512_vnni_*.cpp files after the AVX2 file they compile again;
// each format's `load8_pair(rows, c, w)` (its load8 for both rows) is found by its type.
#pragma once

#if defined(__x86_64__)

#include <algorithm>
#include <array>

#include "avx2_tiles.h"
#include "avx512_vnni.h"

namespace lamina_kernels {
namespace {

// Rows of x at a time against a task's weight rows in the pair tiles (their q8 values stay
// in L1/L2 while the weight rows stream past).
constexpr int kXBlock = 64;

// Where chunk c of two rows starts (kBytes a chunk), each prefetched kLines cache lines
// ahead: a group's `load8_pair` reads from here.
template <int kBytes, int kLines>
LAMINA_VNNI LAMINA_INLINE std::array<const uint8_t*, 2> pair_starts(const uint8_t* row0, const uint8_t* row1, int c) {
  const std::array<const uint8_t*, 2> first = {row0 + static_cast<size_t>(kBytes) * c, row1 + static_cast<size_t>(kBytes) * c};
  for (const uint8_t* f : first) {
    for (int line = 0; line < kLines; ++line) _mm_prefetch(reinterpret_cast<const char*>(f + kPrefetch + 64 * line), _MM_HINT_T0);
  }
  return first;
}

// Nibble bytes of four chunks a register (quarters: chunk u and u + 4 of rows[0], then of
// rows[1], 16 bytes each at `bytes(row, chunk)`), split into low and high nibbles, passed
// to `adjust(u, low, high)` (a format's extra bits), and transposed in both halves:
// NibbleGroup's order for two rows.
template <class At, class Adjust>
LAMINA_VNNI LAMINA_INLINE void nibble_pair(At bytes, __m512i (&w)[8], Adjust adjust) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512i low[4], high[4];
  for (int u = 0; u < 4; ++u) {
    const __m512i v = quarters(bytes(0, u), bytes(0, u + 4), bytes(1, u), bytes(1, u + 4));
    low[u] = _mm512_and_si512(v, nibble);
    high[u] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    adjust(u, low[u], high[u]);
  }
  transpose4(low, w);
  transpose4(high, w + 4);
}

template <class At>
LAMINA_VNNI LAMINA_INLINE void nibble_pair(At bytes, __m512i (&w)[8]) {
  nibble_pair(bytes, w, [](int, __m512i&, __m512i&) {});
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
  for (int x0 = m0; x0 < m1; x0 += kXBlock) {
    const int x1 = std::min(m1, x0 + kXBlock);
    int r = begin;
    for (; r + 2 <= end; r += 2) {
      in_tiles<X>(x0, x1, [&](auto rows, int i) LAMINA_VNNI {
        grouped_pairs<Format, decltype(rows)::value>(p, r, xs + i, p.out + i * n + r, n);
      });
    }
    if (r < end) avx2_tiles::tiles<Format>(p, r, end, xs, x0, x1);
  }
}

}  // namespace
}  // namespace lamina_kernels

#endif  // __x86_64__
