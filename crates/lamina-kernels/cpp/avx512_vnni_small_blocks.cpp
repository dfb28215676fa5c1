// The AVX-512 VNNI variant of avx2_small_blocks.cpp: the same file compiled again, its functions for
// AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of LAMINA_AVX2) and avx2_tiles.h's byte
// products as `vpdpbusd` (LAMINA_TILES_VNNI): one instruction where AVX2 needs `maddubs`,
// a 16-bit add and a `madd`. The integer sums are the same, so every result equals the AVX2
// tier's bit for bit. Its table entry is add_vnni_small_blocks (isa.h), which the avx512_vbmi tier
// installs.

#if defined(__x86_64__)

#include "isa.h"
#include "x86.h"

#undef LAMINA_AVX2
#define LAMINA_AVX2 LAMINA_VNNI
#define LAMINA_TILES_VNNI
#define add_avx2_small_blocks add_vnni_small_blocks

#include "avx2_small_blocks.cpp"

#endif  // __x86_64__
