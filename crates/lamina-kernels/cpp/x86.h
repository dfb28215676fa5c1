// What the x86 tiers share: the target attributes their functions are compiled for (the
// files themselves are compiled for the baseline, so that nothing outside these functions,
// inline library code included, can use an instruction the machine may lack) and
// horizontal sums.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#define LAMINA_AVX2 __attribute__((target("avx2,fma,f16c")))
// The AVX-512 subsets every AVX-512 kernel here may use (Skylake-X, Ice Lake, Zen 4 and
// later have all four).
#define LAMINA_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))
#define LAMINA_VBMI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))

namespace lamina_kernels {

// The sum of a vector's eight lanes.
LAMINA_AVX2 inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  lo = _mm_add_ps(lo, _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
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

// Bytes ahead of the current read that the one-row kernels prefetch (measured on SmolLM2's
// shapes: 2 KiB read the packed rows ~5% faster than the hardware prefetcher alone).
constexpr int kPrefetch = 2048;

}  // namespace lamina_kernels
#endif
