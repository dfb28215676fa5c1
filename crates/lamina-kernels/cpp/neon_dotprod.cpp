// The neon_dotprod tier: the NEON tier with its products with x rounded to 8 bits
// (neon_affine.h, neon_blocks.h) on Armv8.2's byte dot products (`sdot`: four products into
// each 32-bit lane, one instruction for sixteen bytes; Apple silicon, Graviton 2 and later,
// Ampere Altra, Cortex-A76 and later). The integer sums are the NEON tier's, so are the
// results, bit for bit. Chosen at start-up where the CPU has them (dispatch.cpp); the
// kernels here are compiled for them (the pragmas) and run nowhere else.

#if defined(__aarch64__)

// The standard headers first, compiled as for every aarch64 (their inline functions are
// shared with the other files). Clang before 16 declares the dot-product intrinsics only
// where the whole file targets the extension: here they are declared, and arm_neon.h's
// functions (static: this file's own) compiled for it.
#if defined(__clang__)
#if !defined(__ARM_FEATURE_DOTPROD)
#define __ARM_FEATURE_DOTPROD 1
#endif
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#include <arm_neon.h>
#pragma clang attribute pop
#else
#include <arm_neon.h>
#endif

#include <algorithm>
#include <vector>

#include "isa.h"
#include "loops.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif

#include "neon_affine.h"
#include "neon_blocks.h"

namespace lamina_kernels {
namespace {

// sums + the products of w and x, four to a lane.
inline int32x4_t sdot(int32x4_t sums, int8x16_t w, int8x16_t x) { return vdotq_s32(sums, w, x); }

struct SdotDots {
  static int32x4_t scaled(int32x4_t sums, int8x16_t w, int8x16_t x, int16_t scale) {
    return vmlaq_n_s32(sums, sdot(vdupq_n_s32(0), w, x), scale);
  }
  static int32x4_t plain(int32x4_t sums, int8x16_t w, int8x16_t x) { return sdot(sums, w, x); }
};

void add_int8_sdot(Kernels& k) {
  neon_blocks::add_affine<SdotDots>(k);
  neon_blocks::add_blocks<SdotDots>(k);
}

}  // namespace

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

Kernels neon_dotprod_kernels(Kernels below) {
  Kernels k = below;
  k.isa = Isa::neon_dotprod;
  k.name = "neon_dotprod";
  add_int8_sdot(k);
  return k;
}

}  // namespace lamina_kernels

#endif  // __aarch64__
