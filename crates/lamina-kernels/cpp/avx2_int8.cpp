// The AVX2 tier's products with x rounded to 8 bits (Activations::int8): the packed values
// multiplied with x's bytes as integers, every width, for one row of x, a batch or a prompt.
//
// Weights in GGUF's layout (Problem::gguf_layout: single 32-value chunks per group) go
// through avx2_tiles.h's tiles; other rows (wider groups) loop over groups, one pair at a
// time.

#if defined(__x86_64__)

#include <algorithm>
#include <cstring>
#include <vector>

#include "avx2_tiles.h"
#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

using avx2_tiles::at;
using avx2_tiles::pair_sums;
using avx2_tiles::Signed;
using avx2_tiles::tile;
using avx2_tiles::tiles;

// The scales and biases of an affine row's chunks (GGUF's layout: one group a chunk).
struct AffineFactors {
  const Problem* p = nullptr;
  int r = 0;

  AffineFactors() = default;
  AffineFactors(const Problem& problem, int row) : p(&problem), r(row) {}
  LAMINA_AVX2 void factors8(int g, int count, __m256& s, __m256& b) const {
    const size_t first = static_cast<size_t>(r) * (p->k / 32) + g;
    s = avx2_tiles::groups8(*p, p->scales, first, count, g);
    b = avx2_tiles::groups8(*p, p->biases, first, count, g);
  }
};

// The affine weight formats (avx2_tiles.h's interface; 8 bits: q - 128 multiplied as a
// signed byte, kShift 128).

// 4-bit weights: per 32-value chunk the low and the high nibbles side by side in one
// register (x is split to match); at most 2 * 15 * 127 a pair.
struct Q4 : AffineFactors {
  static constexpr float kShift = 0.0f;
  static constexpr int kRows = 1, kXRows = 12, kSummed = 8;
  using Weights = __m256i;
  const uint8_t* row;

  Q4() = default;
  LAMINA_AVX2 Q4(const Problem& p, int r) : AffineFactors(p, r), row(p.row(r)) {}
  LAMINA_AVX2 Weights load(int c) const {
    const uint8_t* bytes = row + 16 * c;
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetch), _MM_HINT_T0);
    return avx2_tiles::nibbles(bytes);
  }
  LAMINA_AVX2 void load8(int c, __m256i (&w)[8]) const {
    const uint8_t* bytes = row + 16 * c;
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetch + 64), _MM_HINT_T0);
    avx2_tiles::NibbleGroup([bytes](int u) { return bytes + 16 * u; }).in_order(w);
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return pair_sums(w, x); }
};

// 8-bit weights: sum q x = sum (q - 128) x + 128 sum x. The first as integers: q - 128 is a
// signed byte (q xor 0x80, avx2_tiles.h's Signed); the second from x's exact group sums (the
// shift).
struct Q8 : AffineFactors {
  static constexpr float kShift = 128.0f;
  static constexpr int kRows = 2, kXRows = 3;
  using Weights = Signed;
  const uint8_t* row;

  Q8() = default;
  LAMINA_AVX2 Q8(const Problem& p, int r) : AffineFactors(p, r), row(p.row(r)) {}
  LAMINA_AVX2 Weights load(int c) const {
    if ((c & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(row + 32 * c + kPrefetch), _MM_HINT_T0);
    const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(at(row + 32 * c)), _mm256_set1_epi8(static_cast<char>(0x80)));
    return avx2_tiles::signed_weights(w);
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return avx2_tiles::signed_sums(w, x); }
};

// Any other width (2, 3, 5, 6 bits: Q5_0, Q5_K, Q3_K ...). Sixteen values span 2 * bits
// bytes (at most 12): one 16-byte load broadcast to both halves, each value's two bytes
// shuffled into its 16-bit lane, shifted up so that its top bit is the lane's (a multiply by
// a power of two: AVX2 has no per-lane 16-bit shift), then down by 16 - bits. A chunk's two
// halves are packed into 32 bytes in x's order (values below 64: at most 2 * 63 * 127 a pair).
struct SixteenLanes {
  alignas(32) int8_t shuffle[32];
  // The same for sixteen values ending a 16-byte load (a row's last chunk: a load from
  // 2 * bits into it would pass the row's end). Index 16 (past the load) reads byte 0: only
  // for the last value, whose bits end its byte, so the shift drops it.
  alignas(32) int8_t shuffle_end[32];
  alignas(32) int16_t multiply[16];
};

constexpr SixteenLanes sixteen_lanes(int bits) {
  SixteenLanes t{};
  for (int i = 0; i < 16; ++i) {
    const int bit = bits * i;
    t.shuffle[2 * i] = static_cast<int8_t>(bit >> 3);
    t.shuffle[2 * i + 1] = static_cast<int8_t>((bit >> 3) + 1);
    t.shuffle_end[2 * i] = static_cast<int8_t>((bit >> 3) + 16 - 2 * bits);
    t.shuffle_end[2 * i + 1] = static_cast<int8_t>(((bit >> 3) + 17 - 2 * bits) & 15);
    t.multiply[i] = static_cast<int16_t>(1 << (16 - bits - (bit & 7)));
  }
  return t;
}

// A 32-value chunk spans 4 * bits bytes, read as two 16-byte loads (from its start and from
// 2 * bits into it). From 5 bits on (Q5_0, Q5_K) a chunk holds 16 bytes or more: the last
// chunk's second half loads the 16 bytes that end the row instead. 2 and 3 bits copy the
// row's last chunks into a zeroed buffer.
template <int B>
struct Bits : AffineFactors {
  static constexpr float kShift = 0.0f;
  static constexpr int kRows = 4, kXRows = 2;
  static constexpr int kChunkBytes = 4 * B;
  static constexpr SixteenLanes kLanes = sixteen_lanes(B);
  using Weights = __m256i;
  const uint8_t* row;
  int last;

  Bits() = default;
  LAMINA_AVX2 Bits(const Problem& p, int r) : AffineFactors(p, r), row(p.row(r)), last(p.k / 32 - 1) {}

  // Sixteen values (placed in `bytes` as `order` says) in 16-bit lanes. (The tables are read
  // where they are used: a tile's rows share them.)
  LAMINA_AVX2 static __m256i sixteen(const uint8_t* bytes, const int8_t* order) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
    const __m256i shuffled = _mm256_shuffle_epi8(both, _mm256_load_si256(at(order)));
    return _mm256_srli_epi16(_mm256_mullo_epi16(shuffled, _mm256_load_si256(at(kLanes.multiply))), 16 - B);
  }

  // Values 0-15 and 16-31 as bytes: packing interleaves the 128-bit halves (0-7, 16-23,
  // 8-15, 24-31), the permute puts them back in order.
  LAMINA_AVX2 static __m256i bytes(__m256i first, __m256i second) {
    return _mm256_permute4x64_epi64(_mm256_packus_epi16(first, second), 0xD8);
  }

  LAMINA_AVX2 Weights load(int c) const {
    const uint8_t* at_chunk = row + static_cast<size_t>(kChunkBytes) * c;
    if (c < last - 1 || (c < last && B >= 3)) {
      return bytes(sixteen(at_chunk, kLanes.shuffle), sixteen(at_chunk + 2 * B, kLanes.shuffle));
    }
    if (B >= 5) return bytes(sixteen(at_chunk, kLanes.shuffle), sixteen(at_chunk + kChunkBytes - 16, kLanes.shuffle_end));
    alignas(16) uint8_t copy[48] = {};
    std::memcpy(copy, at_chunk, kChunkBytes);
    return bytes(sixteen(copy, kLanes.shuffle), sixteen(copy + 2 * B, kLanes.shuffle));
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return pair_sums(w, x); }
};

// The same for any row, one pair at a time: per group, its chunks times the group's scale x
// each chunk's d.
template <class Format>
LAMINA_AVX2 float any_row(const Problem& p, int r, const PreparedRow& x) {
  const Format row(p, r);
  const RowParams params = row_params_avx2(p, r);
  const float* d = x.q8_scales.data();
  const int per_group = p.group / 32;
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    for (int c = g * per_group; c < (g + 1) * per_group; ++c) {
      const __m256 sums = _mm256_cvtepi32_ps(Format::sums(row.load(c), _mm256_loadu_si256(at(x.q8.data() + 32 * c))));
      total = _mm256_fmadd_ps(_mm256_set1_ps(params.scales[g] * d[c]), sums, total);
    }
  }
  const float* sums = x.group_sums.data();
  const int groups = p.groups();
  const float shifted = Format::kShift == 0.0f ? 0.0f : Format::kShift * bias_dot_avx2(params.scales, sums, groups);
  return hsum(total) + shifted + bias_dot_avx2(params.biases, sums, groups);
}

// One pair: GGUF's layout as the 1 x 1 tile (what products_int8 computes for it), any other
// group by group.
template <class Format>
LAMINA_AVX2 float dot(const Problem& p, int r, const float*, const PreparedRow& x) {
  if (!p.gguf_layout()) return any_row<Format>(p, r, x);
  float out = 0.0f;
  tile<Format, 1, 1>(p, r, &x, &out, 0);
  return out;
}

// GGUF's layout in tiles, by width: 2, 3, 4, 5, 6 or 8 bits (MLX's affine layout has no
// other).
LAMINA_AVX2 void products_int8(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  switch (p.bits) {
    case 2: return tiles<Bits<2>>(p, begin, end, xs, m0, m1);
    case 3: return tiles<Bits<3>>(p, begin, end, xs, m0, m1);
    case 4: return tiles<Q4>(p, begin, end, xs, m0, m1);
    case 5: return tiles<Bits<5>>(p, begin, end, xs, m0, m1);
    case 6: return tiles<Bits<6>>(p, begin, end, xs, m0, m1);
    default: return tiles<Q8>(p, begin, end, xs, m0, m1);
  }
}

// One pair, for 2, 3, 5 or 6 bits.
LAMINA_AVX2 float dot_bits(const Problem& p, int r, const float* x, const PreparedRow& prepared) {
  switch (p.bits) {
    case 2: return dot<Bits<2>>(p, r, x, prepared);
    case 3: return dot<Bits<3>>(p, r, x, prepared);
    case 5: return dot<Bits<5>>(p, r, x, prepared);
    default: return dot<Bits<6>>(p, r, x, prepared);
  }
}

}  // namespace

void add_avx2_int8(Kernels& k) {
  k.dot_q4_int8 = dot<Q4>;
  k.dot_q8_int8 = dot<Q8>;
  k.dot_bits_int8 = dot_bits;
  k.products_int8 = products_int8;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
