// The AVX2 tier's one-row products with x rounded to 8 bits (Activations::int8): the packed
// values multiplied with x's bytes as integers, every width.
//
// Rows whose groups are single 32-value chunks with f16 scales and biases (every GGUF
// file's) take the fast loop: eight chunks at a time, their scales and biases widened in
// registers, each chunk's factor (scale x x's d) computed eight at once, two chains of FMAs,
// and the bias term in the same pass. Other rows (wider groups, f32 scales) loop over groups.

#if defined(__x86_64__)

#include <cstring>

#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

// sum over chunks of factor(c) x chunk(c) (`Chunk` gives a chunk's eight 32-bit sums as
// floats), plus sum over groups of (bias + shift x scale) x x's group sum: the fast loop for
// 32-value groups with f16 scales.
template <class Chunk>
LAMINA_AVX2 inline float g32_f16_row(const Problem& p, int r, const PreparedRow& x, float shift, const Chunk& chunk) {
  const size_t first = static_cast<size_t>(r) * p.groups();
  const uint16_t* s16 = static_cast<const uint16_t*>(p.scales) + first;
  const uint16_t* b16 = static_cast<const uint16_t*>(p.biases) + first;
  const float* d = x.q8_scales.data();
  const float* sums = x.group_sums.data();
  const int chunks = p.k / 32;
  const __m256 shift8 = _mm256_set1_ps(shift);
  __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), bias = _mm256_setzero_ps();
  alignas(32) float factor[8];
  int c0 = 0;
  for (; c0 + 8 <= chunks; c0 += 8) {
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s16 + c0)));
    const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b16 + c0)));
    _mm256_store_ps(factor, _mm256_mul_ps(s, _mm256_loadu_ps(d + c0)));
    bias = _mm256_fmadd_ps(_mm256_fmadd_ps(s, shift8, b), _mm256_loadu_ps(sums + c0), bias);
    for (int i = 0; i < 8; i += 2) {
      t0 = _mm256_fmadd_ps(_mm256_broadcast_ss(factor + i), chunk(c0 + i), t0);
      t1 = _mm256_fmadd_ps(_mm256_broadcast_ss(factor + i + 1), chunk(c0 + i + 1), t1);
    }
  }
  float tail = 0.0f;
  for (int c = c0; c < chunks; ++c) {
    const float s = _cvtsh_ss(s16[c]), b = _cvtsh_ss(b16[c]);
    t0 = _mm256_fmadd_ps(_mm256_set1_ps(s * d[c]), chunk(c), t0);
    tail += (b + shift * s) * sums[c];
  }
  return hsum(_mm256_add_ps(t0, t1)) + hsum(bias) + tail;
}

// The same for any row: per group, its chunks times the group's scale x each chunk's d.
template <class Chunk>
LAMINA_AVX2 inline float any_row(const Problem& p, int r, const PreparedRow& x, float shift, const Chunk& chunk) {
  if (p.group == 32 && p.half_scales) return g32_f16_row(p, r, x, shift, chunk);
  const RowParams params = row_params_avx2(p, r);
  const float* d = x.q8_scales.data();
  const int per_group = p.group / 32;
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    for (int c = g * per_group; c < (g + 1) * per_group; ++c) {
      total = _mm256_fmadd_ps(_mm256_set1_ps(params.scales[g] * d[c]), chunk(c), total);
    }
  }
  const float* sums = x.group_sums.data();
  const int groups = p.groups();
  const float shifted = shift == 0.0f ? 0.0f : shift * bias_dot_avx2(params.scales, sums, groups);
  return hsum(total) + shifted + bias_dot_avx2(params.biases, sums, groups);
}

const __m256i* at(const void* p) { return reinterpret_cast<const __m256i*>(p); }

// 4-bit weights: per 32-value chunk the low and the high nibbles side by side in one
// register (x is split to match), multiplied with x's bytes and summed in pairs (maddubs:
// weights unsigned, x signed; at most 2 * 15 * 127 a pair), then in fours.
struct Q4Chunk {
  const uint8_t* row;
  const int8_t* xq;
  LAMINA_AVX2 __m256 operator()(int c) const {
    const uint8_t* bytes = row + 16 * c;
    _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetch), _MM_HINT_T0);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
    const __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
    const __m256i xv = _mm256_loadu_si256(at(xq + 32 * c));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1)));
  }
};

// 8-bit weights: sum q x = sum (q - 128) x + 128 sum x. The first as integers: q - 128 is a
// signed byte (q xor 0x80), multiplied by maddubs as |q - 128| times x with q - 128's sign
// (at most 2 * 128 * 127 a pair); the second from x's exact group sums (the shift).
struct Q8Chunk {
  const uint8_t* row;
  const int8_t* xq;
  LAMINA_AVX2 __m256 operator()(int c) const {
    if ((c & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(row + 32 * c + kPrefetch), _MM_HINT_T0);
    const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(at(row + 32 * c)), _mm256_set1_epi8(static_cast<char>(0x80)));
    const __m256i xv = _mm256_loadu_si256(at(xq + 32 * c));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
};

// Any other width (2, 3, 5, 6 bits: Q5_0, Q5_K, Q3_K ...). Sixteen values span 2 * bits
// bytes (at most 12): one 16-byte load broadcast to both halves, each value's two bytes
// shuffled into its 16-bit lane, shifted up so that its top bit is the lane's (a multiply by
// a power of two: AVX2 has no per-lane 16-bit shift), then down by 16 - bits. Multiplied
// with x widened to 16 bits and summed in pairs (madd; values below 128 times at most 128),
// two halves a 32-value chunk.
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

// By width (0 and 1 unused).
constexpr SixteenLanes kSixteenLanes[9] = {sixteen_lanes(2), sixteen_lanes(2), sixteen_lanes(2),
                                           sixteen_lanes(3), sixteen_lanes(4), sixteen_lanes(5),
                                           sixteen_lanes(6), sixteen_lanes(7), sixteen_lanes(8)};

// A 32-value chunk spans 4 * bits bytes, read as two 16-byte loads (from its start and from
// 2 * bits into it). From 5 bits on (Q5_0, Q5_K) a chunk holds 16 bytes or more: the last
// chunk's second half loads the 16 bytes that end the row instead. 2 and 3 bits copy the
// row's last chunks into a padded buffer.
struct BitsChunk {
  const uint8_t* row;
  const int8_t* xq;
  int bits, last;
  __m256i shuffle, shuffle_end, multiply;
  __m128i down;
  uint8_t* copy;  // 48 zeroed bytes

  LAMINA_AVX2 BitsChunk(const Problem& p, int r, const PreparedRow& x, uint8_t* padded)
      : row(p.row(r)), xq(x.q8.data()), bits(p.bits), last(p.k / 32 - 1), copy(padded) {
    const SixteenLanes& lanes = kSixteenLanes[bits];
    shuffle = _mm256_load_si256(at(lanes.shuffle));
    shuffle_end = _mm256_load_si256(at(lanes.shuffle_end));
    multiply = _mm256_load_si256(at(lanes.multiply));
    down = _mm_cvtsi32_si128(16 - bits);
  }

  // Sixteen values (placed in `bytes` as `order` says) times sixteen of x, summed in pairs:
  // eight 32-bit sums.
  LAMINA_AVX2 __m256i sixteen(const uint8_t* bytes, __m256i order, const int8_t* x) const {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
    const __m256i w = _mm256_srl_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(both, order), multiply), down);
    return _mm256_madd_epi16(w, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))));
  }

  LAMINA_AVX2 __m256 operator()(int c) const {
    const int chunk_bytes = 4 * bits;
    const uint8_t* bytes = row + static_cast<size_t>(chunk_bytes) * c;
    const int8_t* x = xq + 32 * c;
    __m256i sums;
    if (c < last - 1 || (c < last && bits >= 3)) {
      sums = _mm256_add_epi32(sixteen(bytes, shuffle, x), sixteen(bytes + 2 * bits, shuffle, x + 16));
    } else if (bits >= 5) {
      sums = _mm256_add_epi32(sixteen(bytes, shuffle, x), sixteen(bytes + chunk_bytes - 16, shuffle_end, x + 16));
    } else {
      std::memcpy(copy, bytes, chunk_bytes);
      sums = _mm256_add_epi32(sixteen(copy, shuffle, x), sixteen(copy + 2 * bits, shuffle, x + 16));
    }
    return _mm256_cvtepi32_ps(sums);
  }
};

LAMINA_AVX2 float dot_q4_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  return any_row(p, r, x, 0.0f, Q4Chunk{p.row(r), x.q8.data()});
}

LAMINA_AVX2 float dot_q8_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  return any_row(p, r, x, 128.0f, Q8Chunk{p.row(r), x.q8.data()});
}

LAMINA_AVX2 float dot_bits_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  alignas(16) uint8_t padded[48] = {};
  return any_row(p, r, x, 0.0f, BitsChunk(p, r, x, padded));
}

}  // namespace

void add_avx2_int8(Kernels& k) {
  k.dot_q4_int8 = dot_q4_int8;
  k.dot_q8_int8 = dot_q8_int8;
  k.dot_bits_int8 = dot_bits_int8;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
