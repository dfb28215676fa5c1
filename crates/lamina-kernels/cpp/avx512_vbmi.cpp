// The AVX-512 VBMI tier (Ice Lake, Zen 4 and later; the tier also needs VNNI, which every
// such CPU has): rows of any other width (2, 3, 5, 6, 7 bits) sixteen values at a time
// through a byte permutation, and the integer products with VNNI's byte dot products
// (avx512_vnni_*.cpp).

#if defined(__x86_64__)

#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

// Sixteen values of a row of any other width (2, 3, 5, 6, 7 bits: Q5_0, Q5_K, ... as MLX
// holds them): 32 values take 4 * bits bytes, each half of 16 values its own 2 * bits
// bytes. One byte permutation puts the two bytes holding each value in its lane, a per-lane
// shift and mask extract it.
struct BitLanes {
  __m512i lanes, shifts, mask;
  __mmask64 load;  // bytes past a half are never needed
  int half_bytes;

  LAMINA_VBMI explicit BitLanes(int bits) : half_bytes(2 * bits) {
    alignas(64) uint8_t index[64];
    alignas(64) uint32_t shift[16];
    for (int j = 0; j < 16; ++j) {
      const int bit = bits * j, byte = bit >> 3;
      index[4 * j] = static_cast<uint8_t>(byte);
      index[4 * j + 1] = index[4 * j + 2] = index[4 * j + 3] = static_cast<uint8_t>(byte + 1);
      shift[j] = static_cast<uint32_t>(bit & 7);
    }
    lanes = _mm512_load_si512(index);
    shifts = _mm512_load_si512(shift);
    mask = _mm512_set1_epi32((1 << bits) - 1);
    load = (uint64_t{1} << half_bytes) - 1;
  }

  // Values 16 * half .. 16 * half + 15 of the row `w`, as floats.
  LAMINA_VBMI __m512 sixteen(const uint8_t* w, int half) const {
    const __m512i bytes = _mm512_maskz_loadu_epi8(load, w + static_cast<size_t>(half) * half_bytes);
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi8(lanes, bytes), shifts), mask));
  }
};

// One row of any other width against one row of x: per group, the values times x, then
// the scale.
LAMINA_VBMI float dot_bits(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const BitLanes bits(p.bits);
  const uint8_t* w = p.row(r);
  const RowParams params = row_params_avx512(p, r);
  const float* s = params.scales;
  auto sixteen = [&](int half) LAMINA_VBMI {
    return _mm512_mul_ps(bits.sixteen(w, half), _mm512_loadu_ps(xv + 16 * half));
  };
  __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int half = g * p.group / 16; half < (g + 1) * p.group / 16; half += 2) {
      a0 = _mm512_add_ps(a0, sixteen(half));
      a1 = _mm512_add_ps(a1, sixteen(half + 1));
    }
    const __m512 scale = _mm512_set1_ps(s[g]);
    if (g % 2 == 0) {
      t0 = _mm512_fmadd_ps(scale, _mm512_add_ps(a0, a1), t0);
    } else {
      t1 = _mm512_fmadd_ps(scale, _mm512_add_ps(a0, a1), t1);
    }
  }
  return hsum512(bias_dots_avx512(params.biases, x.group_sums.data(), p.groups(), _mm512_add_ps(t0, t1)));
}

// Row r of any other width as K floats (a prompt's tiles: Gemma 3's Q5_0 tensors).
LAMINA_VBMI void dequantize_bits(const Problem& p, int r, float* dst) {
  const BitLanes bits(p.bits);
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  for (int half = 0; half < p.k / 16; ++half) {
    const int g = 16 * half / p.group;
    _mm512_storeu_ps(dst + 16 * half, _mm512_fmadd_ps(_mm512_set1_ps(s[g]), bits.sixteen(w, half), _mm512_set1_ps(b[g])));
  }
}

}  // namespace

Kernels avx512_vbmi_kernels(Kernels k) {
  k.isa = Isa::avx512_vbmi;
  k.name = "avx512_vbmi";
  k.dot_bits = dot_bits;
  k.dequantize_bits = dequantize_bits;
  add_vnni_int8(k);
  add_vnni_blocks(k);
  add_vnni_small_blocks(k);
  return k;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
