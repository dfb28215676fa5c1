// The AVX2 tier's products of GGUF's super-block formats (blocks.h) with x rounded per 256
// values (ggml's Q8_K): Q4_K, Q5_K and Q6_K, the formats of Q4_K_M and Q5_K_M files. Per
// 32 values one `maddubs` of the unsigned codes with x's bytes and one `madd` with the
// sub-block's integer scale; per block one FMA of the eight 32-bit sums by d x d_x, the
// minimum terms summed aside (llama.cpp's vec_dot_q4_K_q8_K).
//
// A weight row meets up to kTile rows of x at once, each block unpacked once for all of
// them (prompts and batches); every (weight row, row of x) pair runs the same operations
// whatever the tile holds, so a row of x gets the same outputs alone or beside others.

#if defined(__x86_64__)

#include <cstring>

#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

constexpr int kTile = 4;

LAMINA_AVX2 inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

LAMINA_AVX2 inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

LAMINA_AVX2 inline float half(const uint8_t* b) { return _cvtsh_ss(u16_at(b)); }

// 32 codes (unsigned, < 64) against 32 bytes of x, scaled per 16 by `scales` (16-bit lanes):
// eight 32-bit sums.
LAMINA_AVX2 inline __m256i scaled(__m256i codes, const int8_t* x, __m256i scales) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, load(x)), scales);
}

// One block unpacked for AVX2: eight registers of 32 codes (values 32c .. 32c + 31), their
// per-16 scales as 16-bit lanes, and the minimum terms' integer weights per 16 values.
struct Block {
  __m256i codes[8];
  __m256i scales[8];
  __m256i mins;   // 16-bit weights of x's 16-value sums in the minimum term
  float d, dmin;  // the block's factors: d x scale x code - dmin x (min term)
};

// Q4_K's and Q5_K's eight 6-bit scales and minimums (ggml's get_scale_min_k4, four words
// at a time as llama.cpp unpacks them): bytes 0-7 scales, 8-15 minimums.
inline void scales_mins_k4(const uint8_t* packed, uint8_t out[16]) {
  constexpr uint32_t kMask1 = 0x3f3f3f3f, kMask2 = 0x0f0f0f0f, kMask3 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kMask2) | (((u[1] >> 6) & kMask3) << 4);
  const uint32_t mins_low = u[1] & kMask1;
  u[1] = (u[2] & kMask2) | (((u[0] >> 6) & kMask3) << 4);
  u[2] = mins_low;
  u[0] &= kMask1;
  std::memcpy(out, u, 16);
}

#define LAMINA_INLINE __attribute__((always_inline)) inline

template <bool kFive>
LAMINA_AVX2 LAMINA_INLINE void unpack_q4_q5_k(const uint8_t* b, Block& out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  uint8_t sm[16];
  scales_mins_k4(b + 4, sm);
  const uint8_t* qs = b + (kFive ? 48 : 16);
  __m256i high = kFive ? load(b + 16) : _mm256_setzero_si256();
  for (int c = 0; c < 4; ++c) {
    const __m256i q = load(qs + 32 * c);
    __m256i low = _mm256_and_si256(q, nibble);
    __m256i up = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
    if constexpr (kFive) {
      low = _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(high, one), 4));
      up = _mm256_or_si256(up, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 1), one), 4));
      high = _mm256_srli_epi16(high, 2);
    }
    out.codes[2 * c] = low;
    out.codes[2 * c + 1] = up;
  }
  for (int s = 0; s < 8; ++s) out.scales[s] = _mm256_set1_epi16(sm[s]);
  // Each 32-value minimum twice, for the two 16-value sums of x it weighs.
  const __m128i mins = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8));
  out.mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
  out.d = half(b);
  out.dmin = half(b + 2);
}

// Q6_K's bits 4-5 of 32 codes: bits shift .. shift + 1 of each byte of h.
LAMINA_AVX2 inline __m256i high_bits(__m256i h, int shift, __m256i pair) {
  return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, shift), pair), 4);
}

// Q6_K: codes - 32 multiply as unsigned codes; 32 x scale x (x's sum) is a minimum term
// (dmin = d).
LAMINA_AVX2 LAMINA_INLINE void unpack_q6_k(const uint8_t* b, Block& out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F), pair = _mm256_set1_epi8(3);
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int n = 0; n < 2; ++n) {
    const __m256i a = load(b + 64 * n), c = load(b + 64 * n + 32), h = load(b + 128 + 32 * n);
    out.codes[4 * n] = _mm256_or_si256(_mm256_and_si256(a, nibble), high_bits(h, 0, pair));
    out.codes[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(c, nibble), high_bits(h, 2, pair));
    out.codes[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), nibble), high_bits(h, 4, pair));
    out.codes[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), nibble), high_bits(h, 6, pair));
  }
  for (int s = 0; s < 8; ++s) {
    out.scales[s] = _mm256_setr_m128i(_mm_set1_epi16(sc[2 * s]), _mm_set1_epi16(sc[2 * s + 1]));
  }
  out.mins = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc))), 5);
  out.d = out.dmin = half(b + 208);
}

// Weight row r against rows xs[0 .. kCount), into out[i * stride].
template <void (*Unpack)(const uint8_t*, Block&), int kCount>
LAMINA_AVX2 void rows_of(const Problem& p, int r, const PreparedRow* const* xs, float* out, size_t stride) {
  constexpr int count = kCount;
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format);
  __m256 acc[kCount];
  float mins[kCount];
  for (int i = 0; i < count; ++i) acc[i] = _mm256_setzero_ps(), mins[i] = 0.0f;
  Block block;
  for (int blk = 0; blk < p.k / kBlockValues; ++blk) {
    Unpack(row + static_cast<size_t>(blk) * bytes, block);
    for (int i = 0; i < count; ++i) {
      const PreparedRow& x = *xs[i];
      const int8_t* xq = x.q8.data() + static_cast<size_t>(blk) * kBlockValues;
      const int16_t* sums = x.bsums.data() + static_cast<size_t>(blk) * 16;
      __m256i isum = _mm256_setzero_si256();
      for (int c = 0; c < 8; ++c) isum = _mm256_add_epi32(isum, scaled(block.codes[c], xq + 32 * c, block.scales[c]));
      const __m256i m = _mm256_madd_epi16(block.mins, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums)));
      const float dx = x.q8_scales[blk];
      acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(block.d * dx), _mm256_cvtepi32_ps(isum), acc[i]);
      mins[i] += (block.dmin * dx) * static_cast<float>(hsum_i32(m));
    }
  }
  for (int i = 0; i < count; ++i) out[i * stride] = hsum(acc[i]) - mins[i];
}

template <void (*Unpack)(const uint8_t*, Block&)>
LAMINA_AVX2 float dot(const Problem& p, int r, const float*, const PreparedRow& x) {
  const PreparedRow* xs[1] = {&x};
  float out;
  rows_of<Unpack, 1>(p, r, xs, &out, 1);
  return out;
}

template <void (*Unpack)(const uint8_t*, Block&)>
LAMINA_AVX2 void products(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  for (int r = begin; r < end; ++r) {
    int m = m0;
    for (; m + kTile <= m1; m += kTile) {
      const PreparedRow* tile[kTile];
      for (int i = 0; i < kTile; ++i) tile[i] = &xs[m + i];
      rows_of<Unpack, kTile>(p, r, tile, p.out + static_cast<size_t>(m) * p.n + r, p.n);
    }
    for (; m < m1; ++m) {
      const PreparedRow* one[1] = {&xs[m]};
      rows_of<Unpack, 1>(p, r, one, p.out + static_cast<size_t>(m) * p.n + r, p.n);
    }
  }
}

template <void (*Unpack)(const uint8_t*, Block&)>
void add(Kernels& k, Format f) {
  k.dot_blocks_int8[static_cast<int>(f)] = dot<Unpack>;
  k.products_blocks_int8[static_cast<int>(f)] = products<Unpack>;
}

}  // namespace

void add_avx2_blocks(Kernels& k) {
  add<unpack_q4_q5_k<false>>(k, Format::q4_k);
  add<unpack_q4_q5_k<true>>(k, Format::q5_k);
  add<unpack_q6_k>(k, Format::q6_k);
}

}  // namespace lamina_kernels

#endif  // __x86_64__
