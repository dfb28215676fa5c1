// The AVX-512 VNNI tier's products of GGUF's super-block formats: avx2_blocks.cpp's
// unpacking compiled again (its functions for AVX-512 with VNNI, x86.h's LAMINA_VNNI in
// place of LAMINA_AVX2), with the byte products as `vpdpbusd` (one instruction where AVX2
// needs `maddubs`, a 16-bit add and a `madd`), and IQ4_XS as unsigned codes (value + 128,
// whose pairs need VNNI's 32-bit lanes; the AVX2 tier multiplies its signed values apart).
//
// The sub-block scales and the minimum terms are applied in floats, which takes fewer
// instructions per row of x than AVX2's integer scaling: per block, each lane's 32-bit sum
// (one sub-block's, or one 16-value group's) converts once and multiplies d x its scale
// (computed once per block for every row of x), the block's sum is scaled by x's d, and the
// minimum term is one FMA of dmin x the minimums with x's sums already times its d
// (PreparedRow::scaled_sums). For prompts and batches two weight rows run at once in
// 512-bit registers (row r's block in the low half, row r + 1's in the high one, each 32
// bytes of x in both halves); each half runs the one-row kernel's operations, so a row of x
// gets the same outputs alone, beside others or in either half. Its table entry is
// add_vnni_blocks (isa.h), which the avx512_vbmi tier installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#include "avx2_blocks.cpp"

#include <array>
#include <type_traits>

namespace lamina_kernels {
namespace {

using avx2_tiles::dot_chains;

// Bytes of x's rows the pair tiles keep in cache while their weight rows stream past.
constexpr int kXBytes = 192 * 1024;

// IQ4_XS's table values + 128 (see unpack_iq4_xs).
alignas(16) constexpr auto kIq4Shifted = [] {
  std::array<uint8_t, 16> table{};
  for (int i = 0; i < 16; ++i) table[i] = static_cast<uint8_t>(kIq4Values[i] + 128);
  return table;
}();

// IQ4_XS (d, 16 high and 32 low bits of eight 6-bit scales, then per 32 values 16 bytes of
// indices into kIq4Values: value j in the low nibble of byte j, value j + 16 in its high
// one). Its values are signed; as value + 128 they are unsigned codes (1-241), whose pairs
// would saturate `maddubs`'s 16-bit lanes but not `vpdpbusd`'s 32-bit ones (AVX2's kernel:
// avx2_blocks.cpp); 128 x scale x (x's sum) is then a minimum term (dmin = d).
LAMINA_VNNI LAMINA_INLINE void unpack_iq4_xs(const uint8_t* b, Block& out) {
  iq4_xs_values(b, kIq4Shifted.data(), out.codes);
  out.scales[0] = out.scales[1] = iq4_xs_scales(b);
  out.mins = _mm256_slli_epi16(out.scales[0], 7);
  out.d = out.dmin = half(b);
}
using IQ4XS = Kind<unpack_iq4_xs, 8, false>;

// The float operations of both widths: one row's 256-bit vectors or a pair's 512-bit ones.
LAMINA_VNNI inline __m256 cvt(__m256i v) { return _mm256_cvtepi32_ps(v); }
LAMINA_VNNI inline __m512 cvt(__m512i v) { return _mm512_cvtepi32_ps(v); }
LAMINA_VNNI inline __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
LAMINA_VNNI inline __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
LAMINA_VNNI inline __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
LAMINA_VNNI inline __m512 fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
LAMINA_VNNI inline __m256 fnma(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
LAMINA_VNNI inline __m512 fnma(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
// The 16-bit lanes 2u (`kHigh`: 2u + 1) of v as floats in 32-bit lane u.
template <bool kHigh>
LAMINA_VNNI inline __m256 lanes16(__m256i v) {
  return cvt(_mm256_srai_epi32(kHigh ? v : _mm256_slli_epi32(v, 16), 16));
}
template <bool kHigh>
LAMINA_VNNI inline __m512 lanes16(__m512i v) {
  return cvt(_mm512_srai_epi32(kHigh ? v : _mm512_slli_epi32(v, 16), 16));
}
// Eight floats of x (its scaled sums) for one row, or in both halves; x's d for every lane.
LAMINA_VNNI inline __m256 eight(const float* p, __m256) { return _mm256_loadu_ps(p); }
LAMINA_VNNI inline __m512 eight(const float* p, __m512) { return both(p); }
LAMINA_VNNI inline __m256 every(float v, __m256) { return _mm256_set1_ps(v); }
LAMINA_VNNI inline __m512 every(float v, __m512) { return _mm512_set1_ps(v); }

// A block's factors as floats, lane u of each row's half: scaled[h], d x the scale of
// registers 4h .. 4h + 3 of sub-block u (per-32 formats: of all eight, scaled[0]);
// mins[h], dmin x the minimum weight of x's 16-value group 2u + h.
template <class F>
struct Factors {
  F scaled[2], mins[2];
};

template <class K, class F, class I>
LAMINA_VNNI LAMINA_INLINE Factors<F> factors(const I (&scales)[2], I mins, F d, F dmin) {
  Factors<F> f;
  f.scaled[0] = mul(d, lanes16<false>(scales[0]));
  f.scaled[1] = K::kPer16 ? mul(d, lanes16<false>(scales[1])) : f.scaled[0];
  f.mins[0] = mul(dmin, lanes16<false>(mins));
  f.mins[1] = K::kPer16 ? mul(dmin, lanes16<true>(mins)) : f.mins[0];
  return f;
}

// acc plus one block's product with one row of x (256 bytes at x, its scaled sums, its d):
// the same operations in each 256-bit half of a pair.
template <class K, class F, class I>
LAMINA_VNNI LAMINA_INLINE F block_product(const I (&codes)[8], const Factors<F>& f, const int8_t* x,
                                          const float* sums, float dx, F acc) {
  F t;
  if constexpr (K::kPer16) {
    t = mul(cvt(dot_chains(codes, x, 0, 4)), f.scaled[0]);
    t = fma(cvt(dot_chains(codes, x, 4, 8)), f.scaled[1], t);
  } else {
    t = mul(cvt(dot_chains(codes, x, 0, 8)), f.scaled[0]);
  }
  acc = fma(t, every(dx, F{}), acc);
  if constexpr (K::kPer16) {
    acc = fnma(f.mins[0], eight(sums, F{}), acc);
    return fnma(f.mins[1], eight(sums + 8, F{}), acc);
  } else {
    return fnma(f.mins[0], eight(sums + 16, F{}), acc);
  }
}

// Weight row r against rows xs[0 .. kCount), into out[i * stride].
template <class K, int kCount>
LAMINA_VNNI void rows_of(const Problem& p, int r, const PreparedRow* xs, float* out, size_t stride) {
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format);
  __m256 acc[kCount];
  for (int i = 0; i < kCount; ++i) acc[i] = _mm256_setzero_ps();
  Block block;
  for (int blk = 0; blk < p.k / kBlockValues; ++blk) {
    K::unpack(row + static_cast<size_t>(blk) * bytes, block);
    const auto f = factors<K>(block.scales, block.mins, _mm256_set1_ps(block.d), _mm256_set1_ps(block.dmin));
#pragma GCC unroll 8
    for (int i = 0; i < kCount; ++i) {
      acc[i] = block_product<K>(block.codes, f, xs[i].q8.data() + static_cast<size_t>(blk) * kBlockValues,
                                xs[i].scaled_sums.data() + static_cast<size_t>(blk) * kScaledSums, xs[i].q8_scales[blk],
                                acc[i]);
    }
  }
  for (int i = 0; i < kCount; ++i) out[i * stride] = hsum(acc[i]);
}

template <class K>
LAMINA_VNNI float dot(const Problem& p, int r, const float*, const PreparedRow& x) {
  float out;
  rows_of<K, 1>(p, r, &x, &out, 1);
  return out;
}

// Two rows' blocks (the same block of each), side by side.
struct BlockPair {
  __m512i codes[8], scales[2], mins;
  __m512 d, dmin;
};

// unpack_q4_q5_k's codes for blocks a (low half) and b (high half) at once: its steps on
// 512-bit registers, the same bytes in each half.
template <bool kFive>
LAMINA_VNNI LAMINA_INLINE void q4_q5_k_codes(const uint8_t* a, const uint8_t* b, __m512i (&codes)[8]) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const uint8_t* qa = a + (kFive ? 48 : 16);
  const uint8_t* qb = b + (kFive ? 48 : 16);
  for (int h = 0; h < 2; ++h) {
    const int o = 16 * h;
    const __m512i l = quarters(qa + o, qa + 64 + o, qb + o, qb + 64 + o);
    const __m512i m = quarters(qa + 32 + o, qa + 96 + o, qb + 32 + o, qb + 96 + o);
    __m512i v[4] = {_mm512_and_si512(l, nibble), _mm512_and_si512(_mm512_srli_epi16(l, 4), nibble),
                    _mm512_and_si512(m, nibble), _mm512_and_si512(_mm512_srli_epi16(m, 4), nibble)};
    if constexpr (kFive) {
      const __m128i ha = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 16 + o));
      const __m128i hb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + o));
      const __m512i low = _mm512_inserti32x4(_mm512_castsi128_si512(ha), _mm_srli_epi16(ha, 4), 1);
      const __m512i bits = _mm512_inserti32x4(_mm512_inserti32x4(low, hb, 2), _mm_srli_epi16(hb, 4), 3);
      for (int s = 0; s < 4; ++s) {
        const __m512i bit = _mm512_and_si512(bits, _mm512_set1_epi8(static_cast<char>(1 << s)));
        v[s] = _mm512_or_si512(v[s], _mm512_slli_epi16(bit, 4 - s));
      }
    }
    transpose4(v, codes + 4 * h);
  }
}

// The bytes of v under `mask` (each byte's).
LAMINA_VNNI inline __m512i and_bytes(__m512i v, int mask) { return _mm512_and_si512(v, _mm512_set1_epi8(static_cast<char>(mask))); }

// unpack_q6_k's codes for blocks a (low half) and b (high half) at once.
LAMINA_VNNI LAMINA_INLINE void q6_k_codes(const uint8_t* a, const uint8_t* b, __m512i (&codes)[8]) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const uint8_t *qa = a + 128, *qb = b + 128;
  for (int h = 0; h < 2; ++h) {
    const int o = 16 * h;
    const __m512i lo = quarters(a + o, a + 64 + o, b + o, b + 64 + o);
    const __m512i hi = quarters(a + 32 + o, a + 96 + o, b + 32 + o, b + 96 + o);
    const __m512i up = quarters(qa + o, qa + 32 + o, qb + o, qb + 32 + o);
    const __m512i v[4] = {
        _mm512_or_si512(_mm512_and_si512(lo, nibble), _mm512_slli_epi16(and_bytes(up, 0x03), 4)),
        _mm512_or_si512(_mm512_and_si512(hi, nibble), _mm512_slli_epi16(and_bytes(up, 0x0C), 2)),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(lo, 4), nibble), and_bytes(up, 0x30)),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(hi, 4), nibble), _mm512_srli_epi16(and_bytes(up, 0xC0), 2))};
    transpose4(v, codes + 4 * h);
  }
}

// unpack_2bit_codes's codes (Q2_K; Q3_K with kThird) for blocks a and b at once, each
// code's third bit added (+4) under the byte mask of hmask's bit.
template <bool kThird>
LAMINA_VNNI LAMINA_INLINE void two_bit_codes(const uint8_t* qa, const uint8_t* ha, const uint8_t* qb, const uint8_t* hb,
                                             __m512i (&codes)[8]) {
  const __m512i three = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
  for (int h = 0; h < 2; ++h) {
    const int o = 16 * h;
    const __m512i v = quarters(qa + o, qa + 32 + o, qb + o, qb + 32 + o);
    __m512i w[4];
    for (int s = 0; s < 4; ++s) w[s] = _mm512_and_si512(_mm512_srli_epi16(v, 2 * s), three);
    if constexpr (kThird) {
      const __m512i bits = quarters(ha + o, ha + o, hb + o, hb + o);
      for (int s = 0; s < 4; ++s) {
        // Bit s of hmask's bytes for chunk s (the low quarters), bit s + 4 for chunk s + 4.
        const __m256i bit = _mm256_setr_m128i(_mm_set1_epi8(static_cast<char>(1 << s)),
                                              _mm_set1_epi8(static_cast<char>(1 << (s + 4))));
        w[s] = _mm512_mask_add_epi8(w[s], _mm512_test_epi8_mask(bits, pair(bit, bit)), w[s], four);
      }
    }
    transpose4(w, codes + 4 * h);
  }
}

// unpack_iq4_xs's codes (value + 128 by the table) for blocks a and b at once.
LAMINA_VNNI LAMINA_INLINE void iq4_xs_codes(const uint8_t* a, const uint8_t* b, __m512i (&codes)[8]) {
  const __m512i table = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Shifted.data())));
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const uint8_t *qa = a + 8, *qb = b + 8;
  __m512i low[4], high[4];
  for (int s = 0; s < 4; ++s) {
    const __m512i v = quarters(qa + 16 * s, qa + 16 * (s + 4), qb + 16 * s, qb + 16 * (s + 4));
    low[s] = _mm512_shuffle_epi8(table, _mm512_and_si512(v, nibble));
    high[s] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble));
  }
  transpose4(low, codes);
  transpose4(high, codes + 4);
}

// A pair's codes (blocks a and b) in 512-bit registers; the same bytes as pairing the two
// rows' own unpacking.
template <class K>
LAMINA_VNNI LAMINA_INLINE void codes_pair(const uint8_t* a, const uint8_t* b, __m512i (&codes)[8]) {
  if constexpr (std::is_same_v<K, Q4K> || std::is_same_v<K, Q5K>) {
    q4_q5_k_codes<std::is_same_v<K, Q5K>>(a, b, codes);
  } else if constexpr (std::is_same_v<K, Q6K>) {
    q6_k_codes(a, b, codes);
  } else if constexpr (std::is_same_v<K, Q3K>) {
    two_bit_codes<true>(a + 32, a, b + 32, b, codes);
  } else if constexpr (std::is_same_v<K, Q2K>) {
    two_bit_codes<false>(a + 16, nullptr, b + 16, nullptr, codes);
  } else {
    static_assert(std::is_same_v<K, IQ4XS>);
    iq4_xs_codes(a, b, codes);
  }
}

template <class K>
LAMINA_VNNI LAMINA_INLINE void unpack_pair(const uint8_t* a, const uint8_t* b, BlockPair& out) {
  // Each row's own codes go unused (codes_pair unpacks both at once): the compiler drops
  // them (no 256-bit transposes are left in the pair tiles).
  Block low, high;
  K::unpack(a, low);
  K::unpack(b, high);
  codes_pair<K>(a, b, out.codes);
  for (int h = 0; h < 2; ++h) out.scales[h] = pair(low.scales[h], high.scales[h]);
  out.mins = pair(low.mins, high.mins);
  out.d = _mm512_insertf32x8(_mm512_set1_ps(low.d), _mm256_set1_ps(high.d), 1);
  out.dmin = _mm512_insertf32x8(_mm512_set1_ps(low.dmin), _mm256_set1_ps(high.dmin), 1);
}

// Weight rows r and r + 1 against rows xs[0 .. kCount), into out[i * stride] and
// out[i * stride + 1].
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
    const auto f = factors<K>(block.scales, block.mins, block.d, block.dmin);
#pragma GCC unroll 16
    for (int i = 0; i < kCount; ++i) {
      acc[i] = block_product<K>(block.codes, f, xs[i].q8.data() + static_cast<size_t>(blk) * kBlockValues,
                                xs[i].scaled_sums.data() + static_cast<size_t>(blk) * kScaledSums, xs[i].q8_scales[blk],
                                acc[i]);
    }
  }
  for (int i = 0; i < kCount; ++i) {
    out[i * stride] = hsum(_mm512_castps512_ps256(acc[i]));
    out[i * stride + 1] = hsum(_mm512_extractf32x8_ps(acc[i], 1));
  }
}

// Rows of x a pair of weight rows meets at once (the 32 registers hold their accumulators).
constexpr int kPairTile = 12;

// Weight rows [begin, end) against rows [m0, m1) of x: blocks of x's rows that stay in
// cache (kXBytes), each pair of weight rows against kPairTile of them at a time (the rest in one tile),
// the last of an odd count of weight rows alone.
template <class K>
LAMINA_VNNI void products(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  const int block_rows = std::max(kPairTile, kXBytes / p.k / kPairTile * kPairTile);
  for (int x0 = m0; x0 < m1; x0 += block_rows) {
    const int x1 = std::min(m1, x0 + block_rows);
    int r = begin;
    for (; r + 2 <= end; r += 2) {
      float* out = p.out + r;
      in_tiles<kPairTile>(x0, x1, [&](auto rows, int m) LAMINA_VNNI {
        row_pairs_of<K, decltype(rows)::value>(p, r, xs + m, out + static_cast<size_t>(m) * p.n, p.n);
      });
    }
    if (r < end) {
      float* out = p.out + r;
      in_tiles<kTile>(x0, x1, [&](auto rows, int m) LAMINA_VNNI {
        rows_of<K, decltype(rows)::value>(p, r, xs + m, out + static_cast<size_t>(m) * p.n, p.n);
      });
    }
  }
}

template <class K>
void add(Kernels& k, Format f) {
  k.dot_blocks_int8[static_cast<int>(f)] = dot<K>;
  k.products_blocks_int8[static_cast<int>(f)] = products<K>;
}

}  // namespace

void add_vnni_blocks(Kernels& k) {
  add<Q4K>(k, Format::q4_k);
  add<Q5K>(k, Format::q5_k);
  add<Q6K>(k, Format::q6_k);
  add<Q3K>(k, Format::q3_k);
  add<Q2K>(k, Format::q2_k);
  add<IQ4XS>(k, Format::iq4_xs);
}

}  // namespace lamina_kernels

#endif  // __x86_64__
