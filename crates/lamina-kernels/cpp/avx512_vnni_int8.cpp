// The AVX-512 VNNI variant of avx2_int8.cpp: the same file compiled again, its functions for
// AVX-512 with VNNI (x86.h's LAMINA_VNNI in place of LAMINA_AVX2) and avx2_tiles.h's byte
// products as `vpdpbusd` (LAMINA_TILES_VNNI): one instruction where AVX2 needs `maddubs`,
// a 16-bit add and a `madd`. The integer sums are the same, so every result equals the AVX2
// tier's bit for bit. Its table entry is add_vnni_int8 (isa.h), which the avx512_vbmi tier
// installs.

#if defined(__x86_64__)

#include "avx512_vnni.h"

#define add_avx2_int8 add_vnni_int8

#include "avx2_int8.cpp"

#endif  // __x86_64__
