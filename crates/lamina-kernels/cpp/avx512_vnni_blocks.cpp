// The AVX-512 VNNI variant of avx2_blocks.cpp (the K-quants): that file compiled again,
// its functions for AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of LAMINA_AVX2) and
// avx2_tiles.h's byte products as `vpdpbusd` (LAMINA_TILES_VNNI), one instruction where AVX2
// needs `maddubs`, a 16-bit add and a `madd`; and, for prompts and batches, two weight rows
// at once in 512-bit registers (row r's block in the low half, row r + 1's in the high one,
// each 32 bytes of x broadcast to both halves), which halves the per-block work of each
// pair: the sub-block scales, the minimum terms, the conversions and FMAs. Every lane runs
// the operations the 256-bit kernel runs (the integer sums are the same, and each half's
// floats take the same steps), so every result equals the AVX2 tier's bit for bit. Its table
// entry is add_vnni_blocks (isa.h), which the avx512_vbmi tier installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#define add_avx2_blocks add_vnni_blocks_256

#include "avx2_blocks.cpp"

#include <array>

namespace lamina_kernels {
namespace {

// IQ4_XS (d, 16 high and 32 low bits of eight 6-bit scales, then per 32 values 16 bytes of
// indices into kIq4Values: value j in the low nibble of byte j, value j + 16 in its high
// one). Its values are signed; as value + 128 they are unsigned codes (1-241), whose pairs
// would saturate `maddubs`'s 16-bit lanes but not `vpdpbusd`'s 32-bit ones, hence VNNI only;
// 128 x scale x (x's sum) is then a minimum term (dmin = d).
LAMINA_VNNI LAMINA_INLINE void unpack_iq4_xs(const uint8_t* b, Block& out) {
  alignas(16) static constexpr auto kShifted = [] {
    std::array<uint8_t, 16> table{};
    for (int i = 0; i < 16; ++i) table[i] = static_cast<uint8_t>(kIq4Values[i] + 128);
    return table;
  }();
  const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kShifted.data())));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const uint8_t* qs = b + 8;
  __m256i low[4], high[4];
  for (int s = 0; s < 4; ++s) {
    const __m256i v = halves(qs + 16 * s, qs + 16 * (s + 4));  // chunk s | chunk s + 4
    low[s] = _mm256_shuffle_epi8(table, _mm256_and_si256(v, nibble));
    high[s] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
  }
  transpose4(low, out.codes);
  transpose4(high, out.codes + 4);
  const uint16_t scales_high = u16_at(b + 2);
  alignas(32) int16_t scales[16];
  for (int u = 0; u < 8; ++u) {
    const int ls = ((b[4 + u / 2] >> (4 * (u % 2))) & 0x0F) | (((scales_high >> (2 * u)) & 3) << 4);
    scales[2 * u] = scales[2 * u + 1] = static_cast<int16_t>(ls - 32);
  }
  out.scales[0] = out.scales[1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(scales));
  out.mins = _mm256_slli_epi16(out.scales[0], 7);
  out.d = out.dmin = half(b);
}
using IQ4XS = Kind<unpack_iq4_xs, 8>;

// Two rows' blocks (the same block of each), side by side.
struct BlockPair {
  __m512i codes[8], scales[2], mins;
  __m512 d, dmin;
};

template <class K>
LAMINA_VNNI LAMINA_INLINE void unpack_pair(const uint8_t* a, const uint8_t* b, BlockPair& out) {
  Block low, high;
  K::unpack(a, low);
  K::unpack(b, high);
  for (int r = 0; r < 8; ++r) out.codes[r] = pair(low.codes[r], high.codes[r]);
  for (int h = 0; h < 2; ++h) out.scales[h] = pair(low.scales[h], high.scales[h]);
  out.mins = pair(low.mins, high.mins);
  out.d = _mm512_insertf32x8(_mm512_set1_ps(low.d), _mm256_set1_ps(high.d), 1);
  out.dmin = _mm512_insertf32x8(_mm512_set1_ps(low.dmin), _mm256_set1_ps(high.dmin), 1);
}

// avx2_tiles.h's group_sums (VNNI) for both rows: the same integer sums in each half.
template <int kSummed>
LAMINA_VNNI LAMINA_INLINE __m512i group_sums2(const __m512i (&w)[8], const int8_t* x, const __m512i (&scales)[2]) {
  constexpr int kParts = kSummed == 8 ? 1 : 2;
  __m512i sum = _mm512_setzero_si512();
  for (int h = 0; h < kParts; ++h) {
    const __m512i scale = _mm512_srai_epi32(_mm512_slli_epi32(scales[h], 16), 16);
    sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(dot_chains(w, x, 8 / kParts * h, 8 / kParts * (h + 1)), scale));
  }
  return sum;
}

// Weight rows r and r + 1 against rows xs[0 .. kCount), into out[i * stride] and
// out[i * stride + 1]: rows_of's operations, two rows a lane-half each.
template <class K, int kCount>
LAMINA_VNNI void row_pairs_of(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  const uint8_t* row = p.row(r);
  const uint8_t* next = p.row(r + 1);
  const int bytes = block_bytes(p.format);
  __m512 acc[kCount];
  for (int i = 0; i < kCount; ++i) acc[i] = _mm512_setzero_ps();
  BlockPair block;
  for (int blk = 0; blk < p.k / kBlockValues; ++blk) {
    unpack_pair<K>(row + static_cast<size_t>(blk) * bytes, next + static_cast<size_t>(blk) * bytes, block);
    const size_t at = static_cast<size_t>(blk) * kBlockValues;
#pragma GCC unroll 16
    for (int i = 0; i < kCount; ++i) {
      const __m512i isum = group_sums2<K::kSummed>(block.codes, xs[i].q8.data() + at, block.scales);
      const __m512i msum = _mm512_madd_epi16(block.mins, both(xs[i].bsums.data() + at / 16));
      const __m512 d = _mm512_set1_ps(xs[i].q8_scales[blk]);
      acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(block.d, d), _mm512_cvtepi32_ps(isum), acc[i]);
      acc[i] = _mm512_fnmadd_ps(_mm512_mul_ps(block.dmin, d), _mm512_cvtepi32_ps(msum), acc[i]);
    }
  }
  for (int i = 0; i < kCount; ++i) {
    out[i * stride] = hsum(_mm512_castps512_ps256(acc[i]));
    out[i * stride + 1] = hsum(_mm512_extractf32x8_ps(acc[i], 1));
  }
}

// Rows of x a pair of weight rows meets at once (the 32 registers hold their accumulators).
constexpr int kPairTile = 12;

// products' blocking, two weight rows at a time (the last of an odd count alone).
template <class K>
LAMINA_VNNI void products_in_pairs(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  const int block_rows = std::max(kPairTile, kXBytes / p.k / kPairTile * kPairTile);
  for (int x0 = m0; x0 < m1; x0 += block_rows) {
    const int x1 = std::min(m1, x0 + block_rows);
    int r = begin;
    for (; r + 2 <= end; r += 2) {
      int m = x0;
      float* out = p.out + r;
      for (; m + kPairTile <= x1; m += kPairTile) {
        row_pairs_of<K, kPairTile>(p, r, xs + m, out + static_cast<size_t>(m) * p.n, p.n);
      }
      for (; m + 4 <= x1; m += 4) row_pairs_of<K, 4>(p, r, xs + m, out + static_cast<size_t>(m) * p.n, p.n);
      for (; m < x1; ++m) row_pairs_of<K, 1>(p, r, xs + m, out + static_cast<size_t>(m) * p.n, p.n);
    }
    if (r < end) products<K>(p, r, end, xs, x0, x1);
  }
}

}  // namespace

void add_vnni_blocks(Kernels& k) {
  add_vnni_blocks_256(k);
  k.products_blocks_int8[static_cast<int>(Format::q4_k)] = products_in_pairs<Q4K>;
  k.products_blocks_int8[static_cast<int>(Format::q5_k)] = products_in_pairs<Q5K>;
  k.products_blocks_int8[static_cast<int>(Format::q6_k)] = products_in_pairs<Q6K>;
  k.products_blocks_int8[static_cast<int>(Format::q3_k)] = products_in_pairs<Q3K>;
  k.products_blocks_int8[static_cast<int>(Format::q2_k)] = products_in_pairs<Q2K>;
  add<IQ4XS>(k, Format::iq4_xs);
  k.products_blocks_int8[static_cast<int>(Format::iq4_xs)] = products_in_pairs<IQ4XS>;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
