// What the x86 tiers share: the target attributes their functions are compiled for (the
// files themselves are compiled for the baseline, so that nothing outside these functions,
// inline library code included, can use an instruction the machine may lack) and
// horizontal sums.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "quantized.h"

#define LAMINA_AVX2 __attribute__((target("avx2,fma,f16c")))
// The AVX-512 subsets every AVX-512 kernel here may use (Skylake-X, Ice Lake, Zen 4 and
// later have all four).
#define LAMINA_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))
#define LAMINA_VBMI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))
// AVX-512 with VNNI's byte dot products (Cascade Lake, Ice Lake, Zen 4 and later), for the
// avx512_vnni_*.cpp files' AVX2-width integer kernels.
#define LAMINA_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

// A small helper that must be inlined into its caller (a tile's unpacking).
#define LAMINA_INLINE __attribute__((always_inline)) inline

namespace lamina_kernels {

// Rows [m0, m1) of x in tiles of kMax rows and the rows left in one tile of exactly their
// count: run(std::integral_constant<int, N>{}, m) for the N rows from m. A batch of 16
// decoding rows is one tile of 12 and one of 4, not 12 and four of one (each of which
// would unpack the weights again: a decoding batch cost ~4 ms a row on SmolLM2).
template <int kLeft, class Run>
LAMINA_INLINE void edge_tile(int left, int m, Run& run) {
  if constexpr (kLeft > 0) {
    if (left == kLeft) {
      run(std::integral_constant<int, kLeft>{}, m);
    } else {
      edge_tile<kLeft - 1>(left, m, run);
    }
  }
}

template <int kMax, class Run>
LAMINA_INLINE void in_tiles(int m0, int m1, Run&& run) {
  int m = m0;
  for (; m + kMax <= m1; m += kMax) run(std::integral_constant<int, kMax>{}, m);
  edge_tile<kMax - 1>(m1 - m, m, run);
}

// Zero, which the compiler cannot see: a tile's accumulators that live in memory are then
// zeroed by vector stores, not a `memset` (`rep stos`: ~10% of a SmolLM2-sized tile on Zen 3).
LAMINA_AVX2 inline __m256 opaque_zero() {
  __m256 zero = _mm256_setzero_ps();
  asm("" : "+x"(zero));
  return zero;
}

// The sum of a vector's eight lanes.
LAMINA_AVX2 inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  lo = _mm_add_ps(lo, _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// A mask of lanes [0, count) of eight 32-bit lanes.
LAMINA_AVX2 inline __m256i first_lanes(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The sum of a vector's sixteen lanes (GCC 12's _mm512_reduce_add_ps trips its own
// uninitialized-value warning).
LAMINA_AVX512 inline float hsum512(__m512 v) {
  const __m256 high = _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 2, 3, 2)));
  return hsum(_mm256_add_ps(_mm512_castps512_ps256(v), high));
}

// sum over groups of biases[g] * group_sums[g], sixteen groups at a time.
LAMINA_AVX512 inline __m512 bias_dots_avx512(const float* b, const float* sums, int groups, __m512 acc) {
  int g = 0;
  for (; g + 16 <= groups; g += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(b + g), _mm512_loadu_ps(sums + g), acc);
  if (g < groups) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (groups - g)) - 1u);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, b + g), _mm512_maskz_loadu_ps(tail, sums + g), acc);
  }
  return acc;
}

// A row's scales and biases as f32: the stored ones, or f16 ones widened in registers
// into a per-thread buffer (inline: the call through the tier table cost as much as a
// short row's products).
struct RowParams {
  const float* scales;
  const float* biases;
};

inline std::vector<float>& row_params_buffer(int groups) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < 2 * static_cast<size_t>(groups)) buffer.resize(2 * static_cast<size_t>(groups));
  return buffer;
}

LAMINA_AVX2 inline void widen_avx2(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

LAMINA_AVX2 inline RowParams row_params_avx2(const Problem& p, int r) {
  const int groups = p.groups();
  const size_t first = static_cast<size_t>(r) * groups;
  if (!p.half_scales) {
    return {static_cast<const float*>(p.scales) + first, static_cast<const float*>(p.biases) + first};
  }
  float* buffer = row_params_buffer(groups).data();
  widen_avx2(static_cast<const uint16_t*>(p.scales) + first, groups, buffer);
  widen_avx2(static_cast<const uint16_t*>(p.biases) + first, groups, buffer + groups);
  return {buffer, buffer + groups};
}

// sum over groups of biases[g] * group_sums[g].
LAMINA_AVX2 inline float bias_dot_avx2(const float* b, const float* sums, int groups) {
  __m256 acc = _mm256_setzero_ps();
  int g = 0;
  for (; g + 8 <= groups; g += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(b + g), _mm256_loadu_ps(sums + g), acc);
  float total = hsum(acc);
  for (; g < groups; ++g) total += b[g] * sums[g];
  return total;
}

LAMINA_AVX512 inline void widen_avx512(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  }
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, tail, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, src + i)));
  }
}

LAMINA_AVX512 inline RowParams row_params_avx512(const Problem& p, int r) {
  const int groups = p.groups();
  const size_t first = static_cast<size_t>(r) * groups;
  if (!p.half_scales) {
    return {static_cast<const float*>(p.scales) + first, static_cast<const float*>(p.biases) + first};
  }
  float* buffer = row_params_buffer(groups).data();
  widen_avx512(static_cast<const uint16_t*>(p.scales) + first, groups, buffer);
  widen_avx512(static_cast<const uint16_t*>(p.biases) + first, groups, buffer + groups);
  return {buffer, buffer + groups};
}

// Bytes ahead of the current read that the one-row kernels prefetch (measured on SmolLM2's
// shapes: 2 KiB read the packed rows ~5% faster than the hardware prefetcher alone).
constexpr int kPrefetch = 2048;

}  // namespace lamina_kernels
#endif
