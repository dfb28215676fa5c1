// Included first by the avx512_vnni_*.cpp files, each of which then includes an AVX2 file to
// compile it again: from here on LAMINA_AVX2 means AVX-512 with VNNI (x86.h's LAMINA_VNNI),
// and avx2_tiles.h's byte products are `vpdpbusd` (LAMINA_TILES_VNNI). Also the helpers of
// their 512-bit tiles, which hold two weight rows side by side (row r in the low half).
#pragma once

#if defined(__x86_64__)

#include "isa.h"
#include "x86.h"

#undef LAMINA_AVX2
#define LAMINA_AVX2 LAMINA_VNNI
#define LAMINA_TILES_VNNI

namespace lamina_kernels {
namespace {

// Two 256-bit halves as one register.
LAMINA_VNNI inline __m512i pair(__m256i low, __m256i high) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}
LAMINA_VNNI inline __m512 pair(__m256 low, __m256 high) { return _mm512_insertf32x8(_mm512_castps256_ps512(low), high, 1); }

// 32 bytes at p (x's bytes, or eight floats) in both halves.
LAMINA_VNNI inline __m512i both(const void* p) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}
LAMINA_VNNI inline __m512 both(const float* p) { return _mm512_broadcast_f32x8(_mm256_loadu_ps(p)); }

// avx2_tiles.h's dot_chains for two rows' registers: x's 32 bytes for register r in both halves.
LAMINA_VNNI inline __m512i dot_chains(const __m512i (&w)[8], const int8_t* x, int first, int last) {
  __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
  for (int r = first; r < last; r += 2) {
    even = _mm512_dpbusd_epi32(even, w[r], both(x + 32 * r));
    odd = _mm512_dpbusd_epi32(odd, w[r + 1], both(x + 32 * (r + 1)));
  }
  return _mm512_add_epi32(even, odd);
}

// Four 16-byte pieces as one register, `first` in the low quarter.
LAMINA_VNNI inline __m512i quarters(const uint8_t* first, const uint8_t* second, const uint8_t* third,
                                    const uint8_t* fourth) {
  auto piece = [](const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); };
  const __m512i low = _mm512_inserti32x4(_mm512_castsi128_si512(piece(first)), piece(second), 1);
  return _mm512_inserti32x4(_mm512_inserti32x4(low, piece(third), 2), piece(fourth), 3);
}

// avx2_tiles.h's transpose4 in both halves.
LAMINA_VNNI inline void transpose4(const __m512i (&a)[4], __m512i* out) {
  const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

}  // namespace
}  // namespace lamina_kernels

#endif  // __x86_64__
