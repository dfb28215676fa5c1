// The AVX-512 VNNI variant of avx2_int8.cpp: the same file compiled again, its functions for
// AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of LAMINA_AVX2) and avx2_tiles.h's byte
// products as `vpdpbusd` (LAMINA_TILES_VNNI): one instruction where AVX2 needs `maddubs`,
// a 16-bit add and a `madd`; and, for prompts and batches of 4-bit rows, the 512-bit pair
// tiles (avx512_vnni_pairs.h). The integer sums are the same and so are the float steps
// that follow, so every result equals the AVX2 tier's bit for bit. Its table entry is
// add_vnni_int8 (isa.h), which the avx512_vbmi tier installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#define add_avx2_int8 add_vnni_int8_256

#include "avx2_int8.cpp"
#include "avx512_vnni_pairs.h"

namespace lamina_kernels {
namespace {

// Q4::load8 for both rows at once.
LAMINA_VNNI LAMINA_INLINE void load8_pair(const Q4 (&rows)[2], int c, __m512i (&w)[8]) {
  const auto first = pair_starts<16, 2>(rows[0].row, rows[1].row, c);
  nibble_pair([&](int a, int u) { return first[a] + 16 * u; }, w);
}

// products_int8 with the 4-bit rows in pair tiles.
LAMINA_VNNI void paired_products_int8(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1) {
  if (p.bits == 4) return paired_tiles<Q4>(p, begin, end, xs, m0, m1);
  products_int8(p, begin, end, xs, m0, m1);
}

}  // namespace

void add_vnni_int8(Kernels& k) {
  add_vnni_int8_256(k);
  k.products_int8 = paired_products_int8;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
