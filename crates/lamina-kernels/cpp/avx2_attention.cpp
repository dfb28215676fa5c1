// The AVX2 tier's attention over one part of the keys (Kernels::attend16: head sizes that
// are multiples of 16 up to 256, no soft-capping): each key row loaded once per head, the
// exponentials eight at a time (the generic loop's scalar `exp` was most of a long
// context's attention), the weighted values in registers when they fit. And the gated
// unit's activations (Kernels::gated) on the same exponential, eight values at a time.

#if defined(__x86_64__)

#include <algorithm>
#include <cmath>

#include "isa.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

// exp(x) for x <= 0 to about 1 ulp: 2^n exp(f), n = round(x / ln 2), |f| <= ln 2 / 2
// (Cody-Waite), exp(f) by Cephes' expf polynomial, 2^n built in the exponent field (x is
// clamped where 2^n stays a normal number).
LAMINA_AVX2 inline __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 f = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  f = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), f);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(_mm256_mul_ps(y, f), f, _mm256_add_ps(f, _mm256_set1_ps(1.0f)));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(two_n));
}

LAMINA_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// attend16's weighted values for kHeads heads x kCols 8-value columns at a time, over all
// the keys, in registers (heads [r0, r0 + kHeads), columns [c0, c0 + kCols)): each output's
// FMAs in the keys' order, as the one-block loop runs them.
template <int kHeads, int kCols>
LAMINA_AVX2 void weighted_block(const Part& p, int r0, int c0) {
  const int n = p.end - p.begin;
  __m256 acc[kHeads][kCols];
  for (int r = 0; r < kHeads; ++r) {
    for (int c = 0; c < kCols; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride + 8 * c0;
    for (int r = 0; r < kHeads; ++r) {
      const __m256 w = _mm256_set1_ps(p.scores[static_cast<size_t>(r0 + r) * n + j]);
      for (int c = 0; c < kCols; ++c) acc[r][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * c), acc[r][c]);
    }
  }
  for (int r = 0; r < kHeads; ++r) {
    for (int c = 0; c < kCols; ++c) _mm256_storeu_ps(p.out + static_cast<size_t>(r0 + r) * p.dv + 8 * (c0 + c), acc[r][c]);
  }
}

template <int kHeads, int kCols>
LAMINA_AVX2 bool weighted_blocks(const Part& p, int dvk) {
  if (p.rep % kHeads != 0 || dvk % kCols != 0) return false;
  for (int r0 = 0; r0 < p.rep; r0 += kHeads) {
    for (int c0 = 0; c0 < dvk; c0 += kCols) weighted_block<kHeads, kCols>(p, r0, c0);
  }
  return true;
}

// The weighted values of a group whose accumulators do not fit the registers at once (Gemma
// 3: four heads of 256 values), in blocks of 12 registers; false: no block shape divides it.
LAMINA_AVX2 bool weighted_in_blocks(const Part& p, int dvk) {
  return weighted_blocks<4, 3>(p, dvk) || weighted_blocks<2, 6>(p, dvk) || weighted_blocks<1, 12>(p, dvk) ||
         weighted_blocks<2, 4>(p, dvk) || weighted_blocks<1, 8>(p, dvk) || weighted_blocks<12, 1>(p, dvk);
}

LAMINA_AVX2 void attend16(const Part& p) {
  const int n = p.end - p.begin, dk = p.d / 8, dvk = p.dv / 8;
  for (int r = 0; r < p.rep; ++r) {
    const float* qr = p.q + static_cast<size_t>(r) * p.d;
    float* scores = p.scores + static_cast<size_t>(r) * n;
    for (int j = 0; j < n; ++j) {
      const float* kj = p.keys + (p.begin + j) * p.key_stride;
      __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(qr), _mm256_loadu_ps(kj));
      __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(qr + 8), _mm256_loadu_ps(kj + 8));
      for (int c = 2; c < dk; c += 2) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qr + 8 * c), _mm256_loadu_ps(kj + 8 * c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qr + 8 * c + 8), _mm256_loadu_ps(kj + 8 * c + 8), a1);
      }
      scores[j] = hsum(_mm256_add_ps(a0, a1)) * p.scale;
    }
    __m256 top = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(scores + j));
    float largest = hmax(top);
    for (; j < n; ++j) largest = std::max(largest, scores[j]);
    p.max[r] = largest;
    const __m256 m = _mm256_set1_ps(largest);
    __m256 total = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
      const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m));
      _mm256_storeu_ps(scores + j, e);
      total = _mm256_add_ps(total, e);
    }
    if (j < n) {
      const __m256i tail = first_lanes(n - j);
      const __m256 e =
          _mm256_and_ps(exp_avx2(_mm256_sub_ps(_mm256_maskload_ps(scores + j, tail), m)), _mm256_castsi256_ps(tail));
      _mm256_maskstore_ps(scores + j, tail, e);
      total = _mm256_add_ps(total, e);
    }
    p.sum[r] = hsum(total);
  }
  if (p.rep * dvk > 12 && weighted_in_blocks(p, dvk)) return;
  __m256 acc[12];  // rep * dv / 8 <= 12 accumulators in registers when they fit
  const bool in_registers = p.rep * dvk <= 12;
  if (!in_registers) std::fill(p.out, p.out + static_cast<size_t>(p.rep) * p.dv, 0.0f);
  for (int i = 0; i < p.rep * dvk && in_registers; ++i) acc[i] = _mm256_setzero_ps();
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride;
    for (int r = 0; r < p.rep; ++r) {
      const __m256 w = _mm256_set1_ps(p.scores[static_cast<size_t>(r) * n + j]);
      float* o = p.out + static_cast<size_t>(r) * p.dv;
      for (int c = 0; c < dvk; ++c) {
        if (in_registers) {
          acc[r * dvk + c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * c), acc[r * dvk + c]);
        } else {
          _mm256_storeu_ps(o + 8 * c, _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * c), _mm256_loadu_ps(o + 8 * c)));
        }
      }
    }
  }
  for (int i = 0; i < p.rep * dvk && in_registers; ++i) _mm256_storeu_ps(p.out + 8 * i, acc[i]);
}

// activate(gate, v) x up for eight values (SiLU, GELU with tanh): v x sigmoid(t), t = v or
// 2u (gate.h), with e = exp(-|t|) (exp_avx2's domain): sigmoid(t) = 1 / (1 + e) for t >= 0,
// e / (1 + e) below.
LAMINA_AVX2 inline __m256 gated8(Gate gate, __m256 v, __m256 up) {
  __m256 t = v;
  if (gate == Gate::GeluTanh) {
    const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), v), v);
    t = _mm256_mul_ps(_mm256_set1_ps(2.0f * 0.7978845608028654f), _mm256_add_ps(v, cube));
  }
  const __m256 e = exp_avx2(_mm256_or_ps(t, _mm256_set1_ps(-0.0f)));  // -|t|
  const __m256 top = _mm256_blendv_ps(e, _mm256_set1_ps(1.0f), _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ));
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_div_ps(top, _mm256_add_ps(_mm256_set1_ps(1.0f), e))), up);
}

// Kernels::gated: eight values at a time, the last few through the same eight-value code
// (a copy), so that a value's result does not depend on where it sits; GELU with erf value
// by value.
LAMINA_AVX2 void gated(Gate gate, float* values, const float* up, size_t n) {
  if (gate != Gate::Silu && gate != Gate::GeluTanh) return gated_portable(gate, values, up, n);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(values + j, gated8(gate, _mm256_loadu_ps(values + j), _mm256_loadu_ps(up + j)));
  }
  if (j < n) {
    alignas(32) float v[8] = {}, u[8] = {};
    std::copy(values + j, values + n, v);
    std::copy(up + j, up + n, u);
    _mm256_store_ps(v, gated8(gate, _mm256_load_ps(v), _mm256_load_ps(u)));
    std::copy(v, v + (n - j), values + j);
  }
}

}  // namespace

void add_avx2_attention(Kernels& k) {
  k.attend16 = attend16;
  k.gated = gated;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
