// The AVX2 tier's products of GGUF's 32-value block types as the file stores them (blocks.h):
// Q5_0, Q5_1, Q8_0 and IQ4_NL, with x rounded per 32 values, in avx2_tiles.h's tiles — the
// operations of the affine layout these types were once repacked into (one scale and one
// bias a chunk; Q5_0, Q5_1 and Q8_0 read in groups of eight blocks, as the 4-bit affine rows
// are);
// only the codes and the factors are read from the blocks (llama.cpp's unpacking: nibbles
// side by side, Q5's fifth bits spread from their 32-bit word, IQ4_NL's table by a byte
// shuffle).

#if defined(__x86_64__)

#include <cstring>
#include <utility>

#include "avx2_tiles.h"
#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

using avx2_tiles::at;
using avx2_tiles::nibbles;
using avx2_tiles::pair_sums;
using avx2_tiles::Signed;
using avx2_tiles::signed_sums;
using avx2_tiles::signed_weights;

// 0x10 in each byte whose bit (its index mod 8) is set in the byte of `words` that `pick`
// copies to it (llama.cpp's bytes_from_bits_32: every other bit set, compared with all ones).
LAMINA_AVX2 inline __m256i spread_bits(__m256i words, __m256i pick) {
  const __m256i others = _mm256_or_si256(_mm256_shuffle_epi8(words, pick), _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_and_si256(_mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

inline uint32_t word_at(const uint8_t* b) {
  uint32_t word;
  std::memcpy(&word, b, 4);
  return word;
}

// 0x10 in byte j where bit j of the 32-bit word at `bits` is set.
LAMINA_AVX2 inline __m256i fifth_bits(const uint8_t* bits) {
  return spread_bits(_mm256_set1_epi32(static_cast<int>(word_at(bits))),
                     _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
}

// The same for two blocks' words, as NibbleGroup splits their values: `low` bits 0-15 of
// `a` | of `b` (values 0-15 of each), `high` bits 16-31.
LAMINA_AVX2 inline void fifth_bits_pair(const uint8_t* a, const uint8_t* b, __m256i& low, __m256i& high) {
  const __m256i words = _mm256_set1_epi64x(static_cast<int64_t>(static_cast<uint64_t>(word_at(b)) << 32 | word_at(a)));
  low = spread_bits(words, _mm256_set_epi64x(0x0505050505050505, 0x0404040404040404, 0x0101010101010101, 0));
  high = spread_bits(words, _mm256_set_epi64x(0x0707070707070707, 0x0606060606060606, 0x0303030303030303,
                                              0x0202020202020202));
}

// The f16 value at byte `offset` of each of blocks [g, g + count) of a row (zero past them),
// each inserted into its lane (a store of them and a vector load stalls on store
// forwarding).
template <int kBytes, size_t... J>
LAMINA_AVX2 inline __m128i eight_halves(const uint8_t* first, int count, std::index_sequence<J...>) {
  __m128i h = _mm_setzero_si128();
  ((h = static_cast<int>(J) < count ? _mm_insert_epi16(h, u16_at(first + kBytes * J), J) : h), ...);
  return h;
}

template <int kBytes>
LAMINA_AVX2 inline __m256 halves8(const uint8_t* row, int offset, int g, int count) {
  const uint8_t* first = row + static_cast<size_t>(kBytes) * g + offset;
  return _mm256_cvtph_ps(eight_halves<kBytes>(first, count, std::make_index_sequence<8>()));
}

// A row of blocks of kBytes bytes, d first.
template <int kBytes>
struct BlockRow {
  static constexpr float kShift = 0.0f;
  const uint8_t* row = nullptr;

  BlockRow() = default;
  BlockRow(const Problem& p, int r) : row(p.row(r)) {}
  const uint8_t* block(int c) const {
    const uint8_t* b = row + static_cast<size_t>(kBytes) * c;
    // Every block (at most 34 bytes: a prefetch every few blocks skips lines; decoding
    // through Gemma 3's Q8_0 head took 1.2x as long).
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetch), _MM_HINT_T0);
    return b;
  }
};

// Q5_0 (d, 32 fifth bits, 16 bytes of nibbles; bias -16 d) and Q5_1 (d, m, then the same;
// bias m): codes 0-31, unsigned.
template <bool kOffset>
struct FiveBits : BlockRow<kOffset ? 24 : 22> {
  static constexpr int kBytes = kOffset ? 24 : 22, kHigh = kOffset ? 4 : 2;
  // Twelve rows of x a tile on AVX2 (harness Q5_0 2048 x 640 x 256: 8.4 against 8.8 ms with
  // eight); the VNNI pair tiles keep the eight they were measured with.
#if defined(LAMINA_TILES_VNNI)
  static constexpr int kRows = 1, kXRows = 8, kSummed = 4;
#else
  static constexpr int kRows = 1, kXRows = 12, kSummed = 4;
#endif
  using Weights = __m256i;
  using BlockRow<kBytes>::BlockRow;
  LAMINA_AVX2 Weights load(int c) const {
    const uint8_t* b = this->block(c);
    return _mm256_or_si256(nibbles(b + kHigh + 4), fifth_bits(b + kHigh));
  }
  LAMINA_AVX2 void load8(int c, __m256i (&w)[8]) const {
    const uint8_t* first = this->row + static_cast<size_t>(kBytes) * c;
    for (int line = 0; line < 3; ++line) {
      _mm_prefetch(reinterpret_cast<const char*>(first + kPrefetch + 64 * line), _MM_HINT_T0);
    }
    avx2_tiles::NibbleGroup group([first](int u) { return first + kBytes * u + kHigh + 4; });
    for (int u = 0; u < 4; ++u) {
      __m256i low, high;
      fifth_bits_pair(first + kBytes * u + kHigh, first + kBytes * (u + 4) + kHigh, low, high);
      group.low[u] = _mm256_or_si256(group.low[u], low);
      group.high[u] = _mm256_or_si256(group.high[u], high);
    }
    group.in_order(w);
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return pair_sums(w, x); }
  LAMINA_AVX2 void factors8(int g, int count, __m256& s, __m256& b) const {
    s = halves8<kBytes>(this->row, 0, g, count);
    b = kOffset ? halves8<kBytes>(this->row, 2, g, count) : _mm256_mul_ps(s, _mm256_set1_ps(-16.0f));
  }
};
using Q5_0 = FiveBits<false>;
using Q5_1 = FiveBits<true>;

// Q8_0 (d, 32 signed bytes; avx2_tiles.h's Signed, no bias), a chunk at a time: a row's last
// chunks (fewer than eight) in Q8Grouped's tiles.
struct Q8_0 : BlockRow<34> {
  static constexpr bool kBiased = false;
  using Weights = Signed;
  using BlockRow::BlockRow;
  LAMINA_AVX2 Weights load(int c) const { return signed_weights(_mm256_loadu_si256(at(block(c) + 2))); }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return signed_sums(w, x); }
  LAMINA_AVX2 void factors8(int g, int count, __m256& s, __m256& b) const {
    s = halves8<34>(row, 0, g, count);
    b = _mm256_setzero_ps();
  }
};

// Eight Q8_0 blocks from `first` in x's grouped order: chunk u's 32 codes are its units 0-7,
// the first 16 bytes (units 0-3) of chunks u | u + 4 transposed into registers 0-3, the last
// 16 into 4-7 (as NibbleGroup's low and high halves).
LAMINA_AVX2 inline void q8_0_group(const uint8_t* first, __m256i (&w)[8]) {
  constexpr int kBytes = 34;
  for (int line = 0; line < 5; ++line) {
    _mm_prefetch(reinterpret_cast<const char*>(first + kPrefetch + 64 * line), _MM_HINT_T0);
  }
  __m256i low[4], high[4];
  for (int u = 0; u < 4; ++u) {
    const uint8_t* a = first + kBytes * u + 2;
    const uint8_t* b = first + kBytes * (u + 4) + 2;
    low[u] = avx2_tiles::halves(a, b);
    high[u] = avx2_tiles::halves(a + 16, b + 16);
  }
  avx2_tiles::transpose4(low, w);
  avx2_tiles::transpose4(high, w + 4);
}

#if !defined(LAMINA_TILES_VNNI)
// Q8_0 read in groups of eight blocks on the AVX2 tier (one row of x or many; x in its grouped
// order: Kernels::groups): each group's signed codes in x's order (q8_0_group), `maddubs` of
// |code| and x's bytes with the code's sign per register, one conversion and one FMA per
// group where chunk order needs one each; a row's last chunks (fewer than eight) as Q8_0's.
struct Q8Grouped : Q8_0 {
  static constexpr int kBytes = 34;
  // kSummed only selects the grouped tiles here: each register's pairs go to 32 bits. A
  // tile of 16 rows of x (accumulators in memory): a batch of 16 unpacks each group once
  // (harness, the SmolLM2 head 49152 x 576 against 10 rows: 9.0 -> 8.0 ms; 16: 13.3 -> 12.6).
  static constexpr int kRows = 1, kXRows = 16, kSummed = 1;
  static constexpr bool kSigned = true;
  using Q8_0::Q8_0;
  LAMINA_AVX2 void load8(int c, __m256i (&w)[8]) const { q8_0_group(row + static_cast<size_t>(kBytes) * c, w); }
};
#endif

#if defined(LAMINA_TILES_VNNI)
// Q8_0 for `vpdpbusd`, which takes unsigned bytes against signed ones: each code as
// q + 128 (its top bit flipped; kFlip: the tiles take 128 x x's chunk sums back from the
// integer sums, which stay exact), read in groups of eight blocks like the 5-bit rows. The
// VNNI tier only (`maddubs`'s 16-bit pair sums, 255 x 127 x 2, would saturate). The integer
// sums are Q8Grouped's, and so are the float steps after them: the AVX2 tier's results.
struct Q8Offset : BlockRow<34> {
  static constexpr int kBytes = 34;
  // kSummed only selects the grouped tiles here: `vpdpbusd` sums each lane in 32 bits.
  static constexpr int kRows = 1, kXRows = 8, kSummed = 4, kFlip = 128;
  static constexpr bool kBiased = false;
  using Weights = __m256i;
  using BlockRow::BlockRow;
  LAMINA_AVX2 static __m256i flipped(__m256i codes) { return _mm256_xor_si256(codes, _mm256_set1_epi8(-128)); }
  LAMINA_AVX2 Weights load(int c) const { return flipped(_mm256_loadu_si256(at(block(c) + 2))); }
  // Chunks [c, c + 8) as q8_0_group gives them, flipped.
  LAMINA_AVX2 void load8(int c, __m256i (&w)[8]) const {
    q8_0_group(row + static_cast<size_t>(kBytes) * c, w);
    for (auto& r : w) r = flipped(r);
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return pair_sums(w, x); }
  LAMINA_AVX2 void factors8(int g, int count, __m256& s, __m256& b) const {
    s = halves8<34>(row, 0, g, count);
    b = _mm256_setzero_ps();
  }
};
#endif

// IQ4_NL (d, 16 bytes of nibbles): each nibble's table value (blocks.h's kIq4Values), as
// Q8_0's signed bytes.
struct IQ4_NL : BlockRow<18> {
  static constexpr int kRows = 2, kXRows = 3;
  using Weights = Signed;
  using BlockRow::BlockRow;
  LAMINA_AVX2 Weights load(int c) const {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
    return signed_weights(_mm256_shuffle_epi8(table, nibbles(block(c) + 2)));
  }
  LAMINA_AVX2 static __m256i sums(Weights w, __m256i x) { return signed_sums(w, x); }
  LAMINA_AVX2 void factors8(int g, int count, __m256& s, __m256& b) const {
    s = halves8<18>(row, 0, g, count);
    b = _mm256_setzero_ps();
  }
};

// One pair: the 1 x 1 tile.
template <class Row>
LAMINA_AVX2 float dot(const Problem& p, int r, const float*, const PreparedRow& x) {
  float out = 0.0f;
  avx2_tiles::tile<Row, 1, 1>(p, r, &x, &out, 0);
  return out;
}

template <class Row>
void add(Kernels& k, Format f) {
  k.dot_blocks_int8[static_cast<int>(f)] = dot<Row>;
  k.products_blocks_int8[static_cast<int>(f)] = avx2_tiles::tiles<Row>;
}

}  // namespace

void add_avx2_small_blocks(Kernels& k) {
  add<Q5_0>(k, Format::q5_0);
  add<Q5_1>(k, Format::q5_1);
#if defined(LAMINA_TILES_VNNI)
  add<Q8Offset>(k, Format::q8_0);
#else
  add<Q8Grouped>(k, Format::q8_0);
  k.grouped_q8_0 = true;
#endif
  add<IQ4_NL>(k, Format::iq4_nl);
}

}  // namespace lamina_kernels

#endif  // __x86_64__
