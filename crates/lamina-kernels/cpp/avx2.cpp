// The AVX2 tier (x86-64 with AVX2, FMA and F16C: Haswell, Zen and later): 4- and 8-bit
// one-row products and dequantized rows, any other width (2, 3, 5, 6, 7 bits: the Q5_0,
// Q5_K, Q6_K tensors inside Q4_K_M files) eight values at a time, the batch dots, f16
// widening, half-precision rows, and the decode attention's loops at 256 bits. Products with
// x rounded to 8 bits are in avx2_int8.cpp.

#if defined(__x86_64__)

#include <algorithm>
#include <cstring>

#include "isa.h"
#include "loops.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

LAMINA_AVX2 float dot_q4(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const RowParams params = row_params_avx2(p, r);
  const float* s = params.scales;
  const float* xs = x.split.data();
  const __m128i low_mask = _mm_set1_epi8(0x0F);
  __m256 total = _mm256_setzero_ps();
  const int chunks_per_group = p.group / 32;
  for (int g = 0; g < p.groups(); ++g) {
    // Four independent accumulators: one chain of FMAs would wait on each one's latency.
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (int c = 0; c < chunks_per_group; ++c) {
      const int chunk = g * chunks_per_group + c;
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * chunk));
      const __m128i lo = _mm_and_si128(bytes, low_mask);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_mask);
      const float* xe = xs + 32 * chunk;
      const float* xo = xe + 16;
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(xe), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                           _mm256_loadu_ps(xe + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(xo), a2);
      a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
                           _mm256_loadu_ps(xo + 8), a3);
    }
    const __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), acc, total);
  }
  return hsum(total) + bias_dot_avx2(params.biases, x.group_sums.data(), p.groups());
}

// Eight 8-bit values from `row + j` as floats.
LAMINA_AVX2 inline __m256 eight_q8(const uint8_t* row, int j) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j))));
}

LAMINA_AVX2 float dot_q8(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const RowParams params = row_params_avx2(p, r);
  const float* s = params.scales;
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    // Four independent accumulators (one chain of FMAs would wait on each one's latency);
    // the group is a multiple of 8.
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    const int end = (g + 1) * p.group;
    int j = g * p.group;
    for (; j + 32 <= end; j += 32) {
      a0 = _mm256_fmadd_ps(eight_q8(row, j), _mm256_loadu_ps(xv + j), a0);
      a1 = _mm256_fmadd_ps(eight_q8(row, j + 8), _mm256_loadu_ps(xv + j + 8), a1);
      a2 = _mm256_fmadd_ps(eight_q8(row, j + 16), _mm256_loadu_ps(xv + j + 16), a2);
      a3 = _mm256_fmadd_ps(eight_q8(row, j + 24), _mm256_loadu_ps(xv + j + 24), a3);
    }
    for (; j < end; j += 8) a0 = _mm256_fmadd_ps(eight_q8(row, j), _mm256_loadu_ps(xv + j), a0);
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), sum, total);
  }
  return hsum(total) + bias_dot_avx2(params.biases, x.group_sums.data(), p.groups());
}

// dst[0..8) = scale * eight bytes + bias.
LAMINA_AVX2 inline void put8(__m128i eight, __m256 scale, __m256 bias, float* dst) {
  _mm256_storeu_ps(dst, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight)), scale, bias));
}

// 32 values (16 bytes of 4-bit pairs) of one group: dst[j] = s * q_j + b.
LAMINA_AVX2 inline void dequantize_q4_chunk(const uint8_t* src, float s, float b,
                                                                     float* dst) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  const __m128i first = _mm_unpacklo_epi8(lo, hi);  // values 0..15 in order
  const __m128i second = _mm_unpackhi_epi8(lo, hi);  // values 16..31
  const __m256 scale = _mm256_set1_ps(s), bias = _mm256_set1_ps(b);
  put8(first, scale, bias, dst);
  put8(_mm_srli_si128(first, 8), scale, bias, dst + 8);
  put8(second, scale, bias, dst + 16);
  put8(_mm_srli_si128(second, 8), scale, bias, dst + 24);
}

LAMINA_AVX2 void dequantize_q4_q8(const Problem& p, int r, float* dst) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  if (p.bits == 4) {
    for (int c = 0; c < p.k / 32; ++c) {
      const int g = (32 * c) / p.group;
      dequantize_q4_chunk(row + 16 * c, s[g], b[g], dst + 32 * c);
    }
    return;
  }
  for (int j = 0; j < p.k; j += 8) {  // 8 bits
    const int g = j / p.group;
    const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j));
    put8(eight, _mm256_set1_ps(s[g]), _mm256_set1_ps(b[g]), dst + j);
  }
}

// out[i * ldo] = dot(w, x + i * k) for the m rows of x; four rows share each load of w.
LAMINA_AVX2 void dots(const float* w, const float* x, int m, int k, float* out,
                                                    int ldo) {
  const int tail = k - k % 8;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* x0 = x + static_cast<size_t>(i) * k;
    const float *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) {
      const __m256 wv = _mm256_loadu_ps(w + j);
      a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + j), a0);
      a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + j), a1);
      a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + j), a2);
      a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + j), a3);
    }
    float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
    for (int j = tail; j < k; ++j) {
      s0 += w[j] * x0[j];
      s1 += w[j] * x1[j];
      s2 += w[j] * x2[j];
      s3 += w[j] * x3[j];
    }
    out[static_cast<size_t>(i) * ldo] = s0;
    out[static_cast<size_t>(i + 1) * ldo] = s1;
    out[static_cast<size_t>(i + 2) * ldo] = s2;
    out[static_cast<size_t>(i + 3) * ldo] = s3;
  }
  for (; i < m; ++i) {
    const float* xi = x + static_cast<size_t>(i) * k;
    __m256 a = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(xi + j), a);
    float sum = hsum(a);
    for (int j = tail; j < k; ++j) sum += w[j] * xi[j];
    out[static_cast<size_t>(i) * ldo] = sum;
  }
}

// The same for two weight rows at once (out[i * ldo] and out[i * ldo + 1]): a 2 x 4 block
// of accumulators, six loads per eight FMAs.
LAMINA_AVX2 void dots2(const float* w0, const float* w1, const float* x, int m,
                                                     int k, float* out, int ldo) {
  const int tail = k - k % 8;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* x0 = x + static_cast<size_t>(i) * k;
    const float *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) {
      const __m256 u = _mm256_loadu_ps(w0 + j), v = _mm256_loadu_ps(w1 + j);
      __m256 xv = _mm256_loadu_ps(x0 + j);
      a0 = _mm256_fmadd_ps(u, xv, a0);
      b0 = _mm256_fmadd_ps(v, xv, b0);
      xv = _mm256_loadu_ps(x1 + j);
      a1 = _mm256_fmadd_ps(u, xv, a1);
      b1 = _mm256_fmadd_ps(v, xv, b1);
      xv = _mm256_loadu_ps(x2 + j);
      a2 = _mm256_fmadd_ps(u, xv, a2);
      b2 = _mm256_fmadd_ps(v, xv, b2);
      xv = _mm256_loadu_ps(x3 + j);
      a3 = _mm256_fmadd_ps(u, xv, a3);
      b3 = _mm256_fmadd_ps(v, xv, b3);
    }
    const float* xs[4] = {x0, x1, x2, x3};
    float sa[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    float sb[4] = {hsum(b0), hsum(b1), hsum(b2), hsum(b3)};
    for (int r = 0; r < 4; ++r) {
      for (int j = tail; j < k; ++j) {
        sa[r] += w0[j] * xs[r][j];
        sb[r] += w1[j] * xs[r][j];
      }
      out[static_cast<size_t>(i + r) * ldo] = sa[r];
      out[static_cast<size_t>(i + r) * ldo + 1] = sb[r];
    }
  }
  if (i < m) {
    const float* rest = x + static_cast<size_t>(i) * k;
    dots(w0, rest, m - i, k, out + static_cast<size_t>(i) * ldo, ldo);
    dots(w1, rest, m - i, k, out + static_cast<size_t>(i) * ldo + 1, ldo);
  }
}

LAMINA_AVX2 inline __m256 widen8(const uint16_t* src, bool bf16) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  return _mm256_cvtph_ps(raw);
}

LAMINA_AVX2 float half_dot(const uint16_t* w, const float* x, int k, bool bf16) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= k; j += 16) {
    a0 = _mm256_fmadd_ps(widen8(w + j, bf16), _mm256_loadu_ps(x + j), a0);
    a1 = _mm256_fmadd_ps(widen8(w + j + 8, bf16), _mm256_loadu_ps(x + j + 8), a1);
  }
  for (; j + 8 <= k; j += 8) a0 = _mm256_fmadd_ps(widen8(w + j, bf16), _mm256_loadu_ps(x + j), a0);
  float sum = hsum(_mm256_add_ps(a0, a1));
  for (; j < k; ++j) sum += widen_half(w[j], bf16) * x[j];
  return sum;
}

LAMINA_AVX2 void half_widen(const uint16_t* src, float* dst, int k, bool bf16) {
  int j = 0;
  for (; j + 8 <= k; j += 8) _mm256_storeu_ps(dst + j, widen8(src + j, bf16));
  for (; j < k; ++j) dst[j] = widen_half(src[j], bf16);
}

// dst[0..8) = v rounded to nearest even (NaN stays NaN).
LAMINA_AVX2 inline void narrow8(__m256 v, uint16_t* dst, bool bf16) {
  __m128i out;
  if (bf16) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i top = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    top = _mm256_blendv_epi8(top, _mm256_set1_epi32(0x7FC0), nan);
    out = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(top, top), 0b1000));
  } else {
    out = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), out);
}

LAMINA_AVX2 void half_narrow(const float* src, uint16_t* dst, size_t n, bool bf16) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) narrow8(_mm256_loadu_ps(src + i), dst + i, bf16);
  for (; i < n; ++i) narrow_half(src[i], dst + i, bf16);
}


// Eight values of a row of any width b (2..8 bits) from value 8c on: they take the b bytes
// from byte b * c. The bytes are loaded once into both 128-bit halves, one byte shuffle
// puts the two bytes holding each value in its 32-bit lane, a per-lane shift and a mask
// extract it.
struct EightLanes {
  __m256i index, shifts, mask;
  int bits, safe;  // chunks whose 8-byte load stays inside the row

  LAMINA_AVX2 EightLanes(int b, int row_bytes, int chunks) : bits(b) {
    alignas(32) int8_t idx[32];
    alignas(32) int32_t shift[8];
    for (int j = 0; j < 8; ++j) {
      const int bit = b * j, byte = bit >> 3;
      idx[4 * j] = static_cast<int8_t>(byte);
      idx[4 * j + 1] = static_cast<int8_t>(byte + 1);
      idx[4 * j + 2] = idx[4 * j + 3] = static_cast<int8_t>(-128);  // zero
      shift[j] = bit & 7;
    }
    index = _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
    shifts = _mm256_load_si256(reinterpret_cast<const __m256i*>(shift));
    mask = _mm256_set1_epi32((1 << b) - 1);
    safe = row_bytes >= 8 ? std::min(chunks, (row_bytes - 8) / b + 1) : 0;
  }

  // Values 8c .. 8c + 7 of the row `w`, as floats.
  LAMINA_AVX2 __m256 eight(const uint8_t* w, int c) const {
    __m128i raw;
    if (c < safe) {
      raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + static_cast<size_t>(bits) * c));
    } else {
      alignas(16) uint8_t copy[16] = {};
      std::memcpy(copy, w + static_cast<size_t>(bits) * c, bits);
      raw = _mm_load_si128(reinterpret_cast<const __m128i*>(copy));
    }
    const __m256i both = _mm256_broadcastsi128_si256(raw);
    const __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(both, index), shifts), mask);
    return _mm256_cvtepi32_ps(v);
  }
};

// One row of any width against one row of x: per group, the values times x in two
// chains, then the scale.
LAMINA_AVX2 float dot_bits(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const int chunks = p.k / 8, per_group = p.group / 8;
  const EightLanes lanes(p.bits, p.row_bytes(), chunks);
  const uint8_t* w = p.row(r);
  const RowParams params = row_params_avx2(p, r);
  const float* s = params.scales;
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int c = g * per_group; c < (g + 1) * per_group; c += 2) {
      a0 = _mm256_fmadd_ps(lanes.eight(w, c), _mm256_loadu_ps(xv + 8 * c), a0);
      a1 = _mm256_fmadd_ps(lanes.eight(w, c + 1), _mm256_loadu_ps(xv + 8 * c + 8), a1);
    }
    total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), _mm256_add_ps(a0, a1), total);
  }
  return hsum(total) + bias_dot_avx2(params.biases, x.group_sums.data(), p.groups());
}

// Row r of any width as K floats.
LAMINA_AVX2 void dequantize_bits(const Problem& p, int r, float* dst) {
  const int chunks = p.k / 8;
  const EightLanes lanes(p.bits, p.row_bytes(), chunks);
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  for (int c = 0; c < chunks; ++c) {
    const int g = 8 * c / p.group;
    _mm256_storeu_ps(dst + 8 * c, _mm256_fmadd_ps(_mm256_set1_ps(s[g]), lanes.eight(w, c), _mm256_set1_ps(b[g])));
  }
}

LAMINA_AVX2 void attend(const Part& p) { attend_loops(p); }

// quantized.h's round_chunk, eight values at a time (size: a multiple of 32): the same
// maximum, product and rounding (the conversion rounds to nearest, ties to even, as
// nearbyint does), so the same bytes as the portable loop.
LAMINA_AVX2 float round_values(const float* values, int size, int8_t* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 largest = _mm256_setzero_ps();
  for (int j = 0; j < size; j += 8) largest = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(values + j)), largest);
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps(largest, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float d = _mm_cvtss_f32(m) / 127.0f;
  const __m256 inverse = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int j = 0; j < size; j += 32) {
    __m256i q[4];
    for (int a = 0; a < 4; ++a) q[a] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(values + j + 8 * a), inverse));
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm256_permutevar8x32_epi32(bytes, order));
  }
  return d;
}

}  // namespace

Kernels avx2_kernels(Kernels k) {
  k.isa = Isa::avx2;
  k.name = "avx2";
  k.dot_q4 = dot_q4;
  k.dot_q8 = dot_q8;
  k.dot_bits = dot_bits;
  add_avx2_int8(k);
  k.dequantize_q4_q8 = dequantize_q4_q8;
  k.dequantize_bits = dequantize_bits;
  k.dots = dots;
  k.dots2 = dots2;
  k.widen_f16 = widen_avx2;
  k.round_chunk = round_values;
  k.half_dot = half_dot;
  k.half_widen = half_widen;
  k.half_narrow = half_narrow;
  k.attend = attend;
  add_avx2_attention(k);
  add_avx2_blocks(k);
  add_avx2_small_blocks(k);
  k.grouped_chunks = true;
  return k;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
