// The AVX2 tier's tiles of products with x rounded to 8 bits per 32 values, for weights
// whose values come in 32-value chunks with one scale and one bias each: MLX's affine layout
// with GGUF's groups (avx2_int8.cpp) and GGUF's 32-value block types (avx2_small_blocks.cpp).
//
// A tile is a few weight rows against a few rows of x, each chunk of weights unpacked once
// for all of them. Every (weight row, row of x) pair runs the same sequence of operations
// whatever the tile's size, so a row's outputs do not depend on the rows beside it: one
// chain of FMAs over the chunks, each chunk's factor (scale x x's d) computed eight at a
// time, then the bias terms. Formats whose codes are small unsigned numbers (4-bit affine,
// Q5_0, Q5_1) are read in groups of eight chunks instead (grouped_tile): x's 256 values in
// quantized.h's block_order, each 32-bit lane one chunk's, so a chunk's products add up as
// 16-bit lanes across registers and convert once (one `madd` per 4 or 8 `maddubs` where the
// chunk order needs one each: they share a port on many x86 cores).
//
// A weight format is a struct: `Format(p, r)` for row r; `load(c)` unpacks chunk c once;
// with `kSummed` (summed_of), `load8(c, w)` unpacks chunks [c, c + 8) in x's grouped order;
// `sums(w, x)` multiplies it with 32 bytes of x (in the order `prepare` rounds them) into
// eight 32-bit sums; `factors8(g, count, s, b)` gives the scales and biases of chunks
// [g, g + count) (zero past them); `kShift` is what the bias terms add back (q - kShift is
// multiplied); `kRows` x `kXRows` is the tile (its accumulators, unpacked weights and x fill
// the 16 registers).
#pragma once

#if defined(__x86_64__)

#include <algorithm>
#include <vector>

#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace avx2_tiles {
// File-local: the VNNI files compile these templates again with wider targets (a shared
// inline definition would let the linker keep either copy).
namespace {

inline const __m256i* at(const void* p) { return reinterpret_cast<const __m256i*>(p); }

// A chunk's 32-bit sums: 32 byte products summed in pairs (maddubs: the first factor
// unsigned, the second signed), then in fours; with VNNI one `dpbusd` (no pair here reaches
// maddubs's 16-bit saturation, so both give the same sums).
LAMINA_AVX2 inline __m256i pair_sums(__m256i unsigned_bytes, __m256i signed_bytes) {
#if defined(LAMINA_TILES_VNNI)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned_bytes, signed_bytes);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_bytes, signed_bytes), _mm256_set1_epi16(1));
#endif
}

// 16 bytes' nibbles as 32 bytes: the low nibbles, then the high ones (byte j's pair lands
// in lanes j and j + 16).
LAMINA_AVX2 inline __m256i nibbles(const uint8_t* bytes) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

// Signed weight bytes, multiplied by maddubs as |w| times x with w's sign (at most
// 2 * 128 * 127 a pair).
struct Signed {
  __m256i magnitude, signs;
};

LAMINA_AVX2 inline Signed signed_weights(__m256i w) { return {_mm256_abs_epi8(w), w}; }
LAMINA_AVX2 inline __m256i signed_sums(Signed w, __m256i x) {
  return pair_sums(w.magnitude, _mm256_sign_epi8(x, w.signs));
}

// 16 bytes at `low` and 16 at `high` as one register.
LAMINA_AVX2 inline __m256i halves(const uint8_t* low, const uint8_t* high) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(low));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_loadu_si128(reinterpret_cast<const __m128i*>(high)), 1);
}

// Four registers a[s], each 128-bit half holding four 4-code units of one chunk (s in the
// low half, s + 4 in the high one), as out[v]: lane s (and 4 + s) holding unit v of a[s].
LAMINA_AVX2 inline void transpose4(const __m256i (&a)[4], __m256i* out) {
  const __m256i t0 = _mm256_unpacklo_epi32(a[0], a[1]), t1 = _mm256_unpackhi_epi32(a[0], a[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(a[2], a[3]), t3 = _mm256_unpackhi_epi32(a[2], a[3]);
  out[0] = _mm256_unpacklo_epi64(t0, t2);
  out[1] = _mm256_unpackhi_epi64(t0, t2);
  out[2] = _mm256_unpacklo_epi64(t1, t3);
  out[3] = _mm256_unpackhi_epi64(t1, t3);
}

// Eight chunks of 16 nibble bytes (chunk u's at bytes(u)), split before the transpose: low[u]
// holds the low nibbles of chunks u | u + 4 (their positions 0-15), high[u] the high ones
// (16-31). `in_order` transposes them into a group's eight registers in x's order
// (quantized.h's block_order: register r, lane u = positions 4r .. 4r + 3 of chunk u).
struct NibbleGroup {
  __m256i low[4], high[4];

  template <class At>
  LAMINA_AVX2 explicit NibbleGroup(At bytes) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    for (int u = 0; u < 4; ++u) {
      const __m256i v = halves(bytes(u), bytes(u + 4));
      low[u] = _mm256_and_si256(v, nibble);
      high[u] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    }
  }
  LAMINA_AVX2 void in_order(__m256i (&w)[8]) const {
    transpose4(low, w);
    transpose4(high, w + 4);
  }
};

// A group's eight 32-bit sums against its 256 bytes of x (lane u: chunk u's): the `maddubs`
// of kSummed registers at a time added as 16-bit lanes, then summed in pairs times `scales`
// (16-bit lanes, both of a pair the same; scales[0] for registers 0-3, scales[1] for 4-7:
// the K-quants' integer sub-block scales). With VNNI, `dpbusd` sums each lane's products in
// 32 bits and the lane's scale multiplies them: the same integers.
#if defined(LAMINA_TILES_VNNI)
// Registers [first, last) of w (an even count) against x's matching 32 bytes each, summed by
// `vpdpbusd` in two chains.
LAMINA_AVX2 inline __m256i dot_chains(const __m256i (&w)[8], const int8_t* x, int first, int last) {
  __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
  for (int r = first; r < last; r += 2) {
    even = _mm256_dpbusd_epi32(even, w[r], _mm256_loadu_si256(at(x + 32 * r)));
    odd = _mm256_dpbusd_epi32(odd, w[r + 1], _mm256_loadu_si256(at(x + 32 * (r + 1))));
  }
  return _mm256_add_epi32(even, odd);
}
#endif

template <int kSummed>
LAMINA_AVX2 inline __m256i group_sums(const __m256i (&w)[8], const int8_t* x, const __m256i (&scales)[2]) {
#if defined(LAMINA_TILES_VNNI)
  constexpr int kParts = kSummed == 8 ? 1 : 2;  // 4-bit codes: one scale for all eight
  __m256i sum = _mm256_setzero_si256();
  for (int h = 0; h < kParts; ++h) {
    const __m256i scale = _mm256_srai_epi32(_mm256_slli_epi32(scales[h], 16), 16);
    sum = _mm256_add_epi32(sum, _mm256_mullo_epi32(dot_chains(w, x, 8 / kParts * h, 8 / kParts * (h + 1)), scale));
  }
  return sum;
#else
  __m256i sum = _mm256_setzero_si256();
  for (int r = 0; r < 8; r += kSummed) {
    __m256i products = _mm256_maddubs_epi16(w[r], _mm256_loadu_si256(at(x + 32 * r)));
    for (int j = 1; j < kSummed; ++j) {
      products = _mm256_add_epi16(products, _mm256_maddubs_epi16(w[r + j], _mm256_loadu_si256(at(x + 32 * (r + j)))));
    }
    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(products, scales[r / 4]));
  }
  return sum;
#endif
}

// The same with every scale 1 (the 32-value formats: their factors are applied in floats).
template <int kSummed>
LAMINA_AVX2 inline __m256i group_sums(const __m256i (&w)[8], const int8_t* x) {
#if defined(LAMINA_TILES_VNNI)
  return dot_chains(w, x, 0, 8);
#else
  const __m256i ones[2] = {_mm256_set1_epi16(1), _mm256_set1_epi16(1)};
  return group_sums<kSummed>(w, x, ones);
#endif
}

// A group's eight 32-bit sums (lane u: chunk u's) of signed codes in x's order: per register
// |w| times x's bytes with w's sign (`maddubs`'s pairs at most 2 x 127 x 127, so each
// register goes to 32 bits by itself).
LAMINA_AVX2 inline __m256i signed_group_sums(const __m256i (&w)[8], const int8_t* x) {
  __m256i sum = _mm256_setzero_si256();
  for (int r = 0; r < 8; ++r) sum = _mm256_add_epi32(sum, signed_sums(signed_weights(w[r]), _mm256_loadu_si256(at(x + 32 * r))));
  return sum;
}

// Whether a grouped format's codes are signed bytes (Format::kSigned: signed_group_sums).
template <class Format>
constexpr bool signed_of() {
  if constexpr (requires { Format::kSigned; }) {
    return Format::kSigned;
  } else {
    return false;
  }
}

// Whether a format's chunks have bias terms ((bias + kShift x scale) x x's chunk sums);
// Format::kBiased false: none (Q8_0), and the tiles skip them.
template <class Format>
constexpr bool biased_of() {
  if constexpr (requires { Format::kBiased; }) {
    return Format::kBiased;
  } else {
    return true;
  }
}

// How many registers of a format's unsigned codes a 16-bit lane can sum (Format::kSummed:
// 8 for 4-bit codes, 4 for 5-bit); 0: the format is read chunk by chunk (signed bytes).
template <class Format>
constexpr int summed_of() {
  if constexpr (requires { Format::kSummed; }) {
    return Format::kSummed;
  } else {
    return 0;
  }
}

// What a format's codes are offset by (Format::kFlip: stored as q + kFlip, for unsigned
// byte products of signed codes), which its integer sums take back as kFlip x x's chunk
// sums (PreparedRow::bsums); 0: none.
template <class Format>
constexpr int flip_of() {
  if constexpr (requires { Format::kFlip; }) {
    return Format::kFlip;
  } else {
    return 0;
  }
}

// kFlip x the sums of x's chunks [g, g + 8) (zero without an offset).
template <int kFlip>
LAMINA_AVX2 inline __m256i flipped_sums(const PreparedRow& x, int g) {
  if constexpr (kFlip == 0) {
    return _mm256_setzero_si256();
  } else {
    const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.bsums.data() + g));
    return _mm256_mullo_epi32(_mm256_cvtepi16_epi32(sums), _mm256_set1_epi32(kFlip));
  }
}

// kFlip x the sum of x's chunk c, in lane 0 (a chunk's sums are added across lanes).
template <int kFlip>
LAMINA_AVX2 inline __m256i flipped_chunk(const PreparedRow& x, int c) {
  if constexpr (kFlip == 0) {
    return _mm256_setzero_si256();
  } else {
    return _mm256_setr_epi32(kFlip * x.bsums[c], 0, 0, 0, 0, 0, 0, 0);
  }
}

// Eight f16 values from `src` as f32 (fewer than eight: the rest zero; each lane as the
// full load would give it). `before`: how many values may be read before `src` (a row's
// earlier groups): with 8 - count of them, the eight values ending at src + count are
// loaded and moved down.
LAMINA_AVX2 inline __m256 widen8(const uint16_t* src, int count, int before) {
  if (count == 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  if (before >= 8 - count) {
    const __m256 ending = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + count - 8)));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 moved = _mm256_permutevar8x32_ps(ending, _mm256_add_epi32(lane, _mm256_set1_epi32(8 - count)));
    return _mm256_and_ps(moved, _mm256_castsi256_ps(first_lanes(count)));
  }
  alignas(32) float lanes[8] = {};
  for (int j = 0; j < count; ++j) lanes[j] = _cvtsh_ss(src[j]);
  return _mm256_load_ps(lanes);
}

// Eight of a row's scales or biases from group `first` on as f32 (f16 or f32 ones; fewer than
// eight: the rest zero), `before` groups of the row before them (see widen8).
LAMINA_AVX2 inline __m256 groups8(const Problem& p, const void* values, size_t first, int count, int before) {
  if (p.half_scales) return widen8(static_cast<const uint16_t*>(values) + first, count, before);
  const float* src = static_cast<const float*>(values) + first;
  if (count == 8) return _mm256_loadu_ps(src);
  return _mm256_maskload_ps(src, first_lanes(count));
}

// Per-thread room for a tile's factors.
inline float* factor_room(size_t floats) {
  thread_local std::vector<float> room;
  if (room.size() < floats) room.resize(floats);
  return room.data();
}

// The tile's integer products: per pair, one chain of FMAs over the chunks (factor x the
// chunk's sums), summed across its lanes into partial[a][i]. (Unrolled: the accumulators stay
// in registers.)
template <class Format, int W, int X>
LAMINA_AVX2 inline void products_of(const Format* rows, const int8_t* const* xq, const float* factors, int padded,
                                    int chunks, float (&partial)[W][X]) {
  __m256 acc[W][X];
#pragma GCC unroll 8
  for (int a = 0; a < W; ++a) {
#pragma GCC unroll 8
    for (int i = 0; i < X; ++i) acc[a][i] = _mm256_setzero_ps();
  }
  for (int c = 0; c < chunks; ++c) {
    typename Format::Weights w[W];
#pragma GCC unroll 8
    for (int a = 0; a < W; ++a) w[a] = rows[a].load(c);
#pragma GCC unroll 8
    for (int i = 0; i < X; ++i) {
      const __m256i x = _mm256_loadu_si256(at(xq[i] + 32 * c));
#pragma GCC unroll 8
      for (int a = 0; a < W; ++a) {
        const __m256 sums = _mm256_cvtepi32_ps(Format::sums(w[a], x));
        acc[a][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(factors + (a * X + i) * padded + c), sums, acc[a][i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < W; ++a) {
#pragma GCC unroll 8
    for (int i = 0; i < X; ++i) partial[a][i] = hsum(acc[a][i]);
  }
}

// The tile of a format read in groups (summed_of): per group of eight chunks, each weight
// row's codes unpacked in x's order and its eight scales and biases read, then per pair one
// conversion of the group's eight sums and an FMA by the chunks' factors (scale x x's d),
// and the bias terms (bias + shift x scale) x x's chunk sums in the same pass over x's rows
// (none for formats without them: biased_of; codes offset by kFlip: kFlip x x's integer
// chunk sums taken back first). A row's last chunks (fewer than eight; x in
// chunk order) one at a time. The factors are read per group here, the tiles
// being one weight row wide (a factor pass and its stores cost more than they saved).
template <class Format, int W, int X>
LAMINA_AVX2 void grouped_tile(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  constexpr int kSummed = summed_of<Format>(), kFlip = flip_of<Format>();
  constexpr bool kBiased = biased_of<Format>();
  const int chunks = p.k / 32;
  Format rows[W];
  for (int a = 0; a < W; ++a) rows[a] = Format(p, r + a);
  // One accumulator a pair: the products and the bias terms (the registers hold no more).
  __m256 acc[W][X];
  const __m256 zero = opaque_zero();
#pragma GCC unroll 8
  for (int a = 0; a < W; ++a) {
#pragma GCC unroll 8
    for (int i = 0; i < X; ++i) acc[a][i] = zero;
  }
  const __m256 shift = _mm256_set1_ps(Format::kShift);
  for (int g = 0; g < chunks; g += 8) {
    const int count = std::min(8, chunks - g);
    __m256 s[W], sb[W];
#pragma GCC unroll 8
    for (int a = 0; a < W; ++a) {
      __m256 b;
      rows[a].factors8(g, count, s[a], b);
      sb[a] = _mm256_fmadd_ps(s[a], shift, b);
    }
    if (count == 8) {
      __m256i w[W][8];
#pragma GCC unroll 8
      for (int a = 0; a < W; ++a) rows[a].load8(g, w[a]);
#pragma GCC unroll 8
      for (int i = 0; i < X; ++i) {
        const __m256 d = _mm256_loadu_ps(xs[i].q8_scales.data() + g);
        const int8_t* x = xs[i].q8.data() + 32 * static_cast<size_t>(g);
        const __m256i back = flipped_sums<kFlip>(xs[i], g);
        const __m256 group = _mm256_loadu_ps(xs[i].group_sums.data() + g);
#pragma GCC unroll 8
        for (int a = 0; a < W; ++a) {
          __m256i integer;
          if constexpr (signed_of<Format>()) {
            integer = signed_group_sums(w[a], x);
          } else {
            integer = _mm256_sub_epi32(group_sums<kSummed>(w[a], x), back);
          }
          const __m256 sums = _mm256_cvtepi32_ps(integer);
          const __m256 biased = kBiased ? _mm256_fmadd_ps(sb[a], group, acc[a][i]) : acc[a][i];
          acc[a][i] = _mm256_fmadd_ps(_mm256_mul_ps(s[a], d), sums, biased);
        }
      }
    } else {
      for (int i = 0; i < X && kBiased; ++i) {
        const __m256 group = _mm256_loadu_ps(xs[i].group_sums.data() + g);
        for (int a = 0; a < W; ++a) acc[a][i] = _mm256_fmadd_ps(sb[a], group, acc[a][i]);
      }
      alignas(32) float scales[W][8];
      for (int a = 0; a < W; ++a) _mm256_store_ps(scales[a], s[a]);
      for (int c = g; c < chunks; ++c) {
        typename Format::Weights w[W];
        for (int a = 0; a < W; ++a) w[a] = rows[a].load(c);
        for (int i = 0; i < X; ++i) {
          const __m256i x = _mm256_loadu_si256(at(xs[i].q8.data() + 32 * static_cast<size_t>(c)));
          const float d = xs[i].q8_scales[c];
          const __m256i back = flipped_chunk<kFlip>(xs[i], c);
          for (int a = 0; a < W; ++a) {
            const __m256 sums = _mm256_cvtepi32_ps(_mm256_sub_epi32(Format::sums(w[a], x), back));
            acc[a][i] = _mm256_fmadd_ps(_mm256_set1_ps(scales[a][c - g] * d), sums, acc[a][i]);
          }
        }
      }
    }
  }
  for (int i = 0; i < X; ++i) {
    for (int a = 0; a < W; ++a) out[i * stride + a] = hsum(acc[a][i]);
  }
}

// Weight rows [r, r + W) against the rows xs[0..X) of x (32-value chunks): out[i * stride + a]
// for row a and row i of x. Chunk by chunk: the factors first (a pass over the row's
// scales), then the products (interleaving them per eight chunks was slower on prompts:
// SmolLM2 Q4_1 prefill 139 -> 123 tok/s); grouped formats: grouped_tile.
template <class Format, int W, int X>
LAMINA_AVX2 void tile(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  if constexpr (summed_of<Format>() > 0) {
    grouped_tile<Format, W, X>(p, r, xs, out, stride);
    return;
  }
  const int chunks = p.k / 32;
  const int padded = padded8(chunks);
  Format rows[W];
  for (int a = 0; a < W; ++a) rows[a] = Format(p, r + a);
  // Per block of eight groups: each pair's chunk factors (scale x x's d), stored for the
  // products; and the bias terms, sum over groups of (bias + shift x scale) x x's group sum
  // (past the last group both are zero).
  float* factors = factor_room(static_cast<size_t>(W) * X * padded);
  __m256 bias[W][X];
  for (int a = 0; a < W; ++a) {
    for (int i = 0; i < X; ++i) bias[a][i] = _mm256_setzero_ps();
  }
  const __m256 shift = _mm256_set1_ps(Format::kShift);
  for (int g = 0; g < chunks; g += 8) {
    const int count = std::min(8, chunks - g);
    for (int a = 0; a < W; ++a) {
      __m256 s, b;
      rows[a].factors8(g, count, s, b);
      const __m256 sb = _mm256_fmadd_ps(s, shift, b);
      for (int i = 0; i < X; ++i) {
        _mm256_storeu_ps(factors + (a * X + i) * padded + g, _mm256_mul_ps(s, _mm256_loadu_ps(xs[i].q8_scales.data() + g)));
        bias[a][i] = _mm256_fmadd_ps(sb, _mm256_loadu_ps(xs[i].group_sums.data() + g), bias[a][i]);
      }
    }
  }
  const int8_t* xq[X];
  for (int i = 0; i < X; ++i) xq[i] = xs[i].q8.data();
  float partial[W][X];
  products_of<Format, W, X>(rows, xq, factors, padded, chunks, partial);
  for (int i = 0; i < X; ++i) {
    for (int a = 0; a < W; ++a) out[i * stride + a] = partial[a][i] + hsum(bias[a][i]);
  }
}

// Bytes of weight rows a task keeps in cache while tiles of x's rows (in L1) meet each.
constexpr int kWeightBytes = 256 * 1024;

// Weight rows [begin, end) against rows [m0, m1) of x in tiles (smaller ones at the edges).
// With fewer rows of x than a tile holds (decoding), one weight row at a time: the packed
// rows stream from memory in one sequence (several interleaved streams read ~30% slower).
template <class Format>
LAMINA_AVX2 void tiles(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  constexpr int W = Format::kRows;
  const bool wide = m1 - m0 >= Format::kXRows;
  const int weight_rows = std::max(W, kWeightBytes / p.row_bytes() / W * W);
  for (int r0 = begin; r0 < end; r0 += weight_rows) {
    const int r1 = std::min(end, r0 + weight_rows);
    in_tiles<Format::kXRows>(m0, m1, [&](auto rows, int i) LAMINA_AVX2 {
      constexpr int X = decltype(rows)::value;
      int r = r0;
      if (wide) {
        for (; r + W <= r1; r += W) tile<Format, W, X>(p, r, xs + i, p.out + i * static_cast<size_t>(p.n) + r, p.n);
      }
      for (; r < r1; ++r) tile<Format, 1, X>(p, r, xs + i, p.out + i * static_cast<size_t>(p.n) + r, p.n);
    });
  }
}

}  // namespace
}  // namespace avx2_tiles
}  // namespace lamina_kernels

#endif  // __x86_64__
