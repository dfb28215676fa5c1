// The AVX-512 VNNI variant of avx2_small_blocks.cpp (Q5_0, Q5_1, Q8_0, IQ4_NL): that file
// compiled again, its functions for AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of
// LAMINA_AVX2) and avx2_tiles.h's byte products as `vpdpbusd` (LAMINA_TILES_VNNI), one
// instruction where AVX2 needs `maddubs`, a 16-bit add and a `madd`; and, for prompts and
// batches of Q5_0, Q5_1 and Q8_0, the 512-bit pair tiles (avx512_vnni_pairs.h). All three
// equal the AVX2 tier's results bit for bit (the same integer sums, the same float steps;
// Q8_0's codes offset by 128: Q8Offset). Its table entry is add_vnni_small_blocks (isa.h),
// which the avx512_vbmi tier installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#define add_avx2_small_blocks add_vnni_small_blocks_256

#include "avx2_small_blocks.cpp"
#include "avx512_vnni_pairs.h"

namespace lamina_kernels {
namespace {

// FiveBits::load8 for rows[0] (the low half) and rows[1] at once: nibble_pair's codes, the
// fifth bits added (+16) under byte masks built from the blocks' 32-bit words; the same
// codes as pairing the two rows' load8.
template <bool kOffset>
LAMINA_VNNI LAMINA_INLINE void load8_pair(const FiveBits<kOffset> (&rows)[2], int c, __m512i (&w)[8]) {
  constexpr int kBytes = FiveBits<kOffset>::kBytes, kHigh = FiveBits<kOffset>::kHigh;
  const auto first = pair_starts<kBytes, 3>(rows[0].row, rows[1].row, c);
  const auto block = [&](int a, int chunk) { return first[a] + kBytes * chunk; };
  const __m512i sixteen = _mm512_set1_epi8(0x10);
  nibble_pair([&](int a, int chunk) { return block(a, chunk) + kHigh + 4; }, w,
              [&](int u, __m512i& low, __m512i& high) LAMINA_VNNI {
                // Quarter q: chunk u (q even) or u + 4 (q odd) of row q / 2.
                uint64_t low_bits = 0, high_bits = 0;
                for (int q = 0; q < 4; ++q) {
                  const uint64_t word = word_at(block(q / 2, u + 4 * (q % 2)) + kHigh);
                  low_bits |= (word & 0xFFFF) << (16 * q);
                  high_bits |= (word >> 16) << (16 * q);
                }
                low = _mm512_mask_add_epi8(low, low_bits, low, sixteen);
                high = _mm512_mask_add_epi8(high, high_bits, high, sixteen);
              });
}

// Q8Offset::load8 for both rows at once: each 16 bytes of four blocks in one register
// (quarters: chunk u and u + 4 of rows[0], then of rows[1]), flipped, then the transpose in
// both halves.
LAMINA_VNNI LAMINA_INLINE void load8_pair(const Q8Offset (&rows)[2], int c, __m512i (&w)[8]) {
  constexpr int kBytes = Q8Offset::kBytes;
  const auto first = pair_starts<kBytes, 5>(rows[0].row, rows[1].row, c);
  const __m512i flip = _mm512_set1_epi8(-128);
  __m512i low[4], high[4];
  for (int u = 0; u < 4; ++u) {
    const uint8_t* block[4] = {first[0] + kBytes * u + 2, first[0] + kBytes * (u + 4) + 2, first[1] + kBytes * u + 2,
                               first[1] + kBytes * (u + 4) + 2};
    low[u] = _mm512_xor_si512(quarters(block[0], block[1], block[2], block[3]), flip);
    high[u] = _mm512_xor_si512(quarters(block[0] + 16, block[1] + 16, block[2] + 16, block[3] + 16), flip);
  }
  transpose4(low, w);
  transpose4(high, w + 4);
}

}  // namespace

void add_vnni_small_blocks(Kernels& k) {
  add_vnni_small_blocks_256(k);
  k.products_blocks_int8[static_cast<int>(Format::q5_0)] = paired_tiles<Q5_0>;
  k.products_blocks_int8[static_cast<int>(Format::q5_1)] = paired_tiles<Q5_1>;
  k.products_blocks_int8[static_cast<int>(Format::q8_0)] = paired_tiles<Q8Offset>;
  k.grouped_q8_0 = true;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
