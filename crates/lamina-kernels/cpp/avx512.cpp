// The AVX-512 tier (F, BW, DQ and VL: Skylake-X, Ice Lake, Zen 4 and later): 4- and
// 8-bit one-row products at memory speed, a 4 x 4 block of batch dots in the 32 vector
// registers, and the decode attention for head sizes that are multiples of 16.

#if defined(__x86_64__)

#include <algorithm>
#include <cmath>

#include "isa.h"
#include "loops.h"
#include "x86.h"

namespace lamina_kernels {
namespace {

// The tier below's dots, for the rows a 4 x 4 block leaves over.
void (*below_dots)(const float* w, const float* x, int m, int k, float* out, int ldo) = nullptr;

// One 4-bit row against one row of x, 512 bits wide: per 32 values one zero-extension of
// 16 bytes to 16 lanes, the low and high nibbles converted to floats, a multiply and an FMA
// against x (pre-split into even and odd values), and the chunk's scale applied by an FMA
// into the row's total. Measured faster than two or four rows at once (one stream each).
LAMINA_AVX512 float dot_q4(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const RowParams params = row_params_avx512(p, r);
  const float* s = params.scales;
  const float* xs = x.split.data();
  const __m512i low = _mm512_set1_epi32(0x0F);
  __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
  const int chunks = p.k / 32, per_group = p.group / 32;
  int c = 0;
  auto chunk = [&](int c) LAMINA_AVX512 {
    _mm_prefetch(reinterpret_cast<const char*>(w + 16 * c + kPrefetch), _MM_HINT_T0);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * c)));
    const __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, low)), _mm512_loadu_ps(xs + 32 * c));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), _mm512_loadu_ps(xs + 32 * c + 16), a);
  };
  if (per_group == 1) {  // Q4_0/Q4_1: a scale per chunk
    for (; c + 2 <= chunks; c += 2) {  // two independent chains
      t0 = _mm512_fmadd_ps(_mm512_set1_ps(s[c]), chunk(c), t0);
      t1 = _mm512_fmadd_ps(_mm512_set1_ps(s[c + 1]), chunk(c + 1), t1);
    }
    if (c < chunks) t0 = _mm512_fmadd_ps(_mm512_set1_ps(s[c]), chunk(c), t0);
  } else {
    for (int g = 0; g < p.groups(); ++g) {
      __m512 a0 = chunk(g * per_group), a1 = chunk(g * per_group + 1);
      const int end = (g + 1) * per_group;
      for (c = g * per_group + 2; c + 2 <= end; c += 2) {
        a0 = _mm512_add_ps(a0, chunk(c));
        a1 = _mm512_add_ps(a1, chunk(c + 1));
      }
      if (c < end) a0 = _mm512_add_ps(a0, chunk(c));
      t0 = _mm512_fmadd_ps(_mm512_set1_ps(s[g]), _mm512_add_ps(a0, a1), t0);
    }
  }
  return hsum512(bias_dots_avx512(params.biases, x.group_sums.data(), p.groups(), _mm512_add_ps(t0, t1)));
}

// One 8-bit row against one row of x: 16 values per zero-extension, conversion and FMA.
LAMINA_AVX512 float dot_q8(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const RowParams params = row_params_avx512(p, r);
  const float* s = params.scales;
  __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
  auto sixteen = [&](int j) LAMINA_AVX512 {
    _mm_prefetch(reinterpret_cast<const char*>(w + j + kPrefetch), _MM_HINT_T0);
    const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j))));
    return _mm512_mul_ps(q, _mm512_loadu_ps(xv + j));
  };
  for (int g = 0; g < p.groups(); ++g) {
    const int end = (g + 1) * p.group;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int j = g * p.group; j < end; j += 32) {
      a0 = _mm512_add_ps(a0, sixteen(j));
      a1 = _mm512_add_ps(a1, sixteen(j + 16));
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

// Four weight rows against four rows of x: sixteen accumulators, which need the 32 vector
// registers AVX-512VL gives (the arithmetic stays 256 bits wide, which is as fast on cores
// that split 512-bit operations). Eight loads per sixteen FMAs.
LAMINA_AVX512 void dots4(const float* const* w, const float* x, int m, int k, float* out, int ldo) {
  const int tail = k - k % 8;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* xr[4];
    for (int r = 0; r < 4; ++r) xr[r] = x + static_cast<size_t>(i + r) * k;
    __m256 acc[4][4];
    for (int a = 0; a < 4; ++a)
      for (int r = 0; r < 4; ++r) acc[a][r] = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) {
      const __m256 w0 = _mm256_loadu_ps(w[0] + j), w1 = _mm256_loadu_ps(w[1] + j),
                   w2 = _mm256_loadu_ps(w[2] + j), w3 = _mm256_loadu_ps(w[3] + j);
      for (int r = 0; r < 4; ++r) {
        const __m256 xv = _mm256_loadu_ps(xr[r] + j);
        acc[0][r] = _mm256_fmadd_ps(w0, xv, acc[0][r]);
        acc[1][r] = _mm256_fmadd_ps(w1, xv, acc[1][r]);
        acc[2][r] = _mm256_fmadd_ps(w2, xv, acc[2][r]);
        acc[3][r] = _mm256_fmadd_ps(w3, xv, acc[3][r]);
      }
    }
    for (int a = 0; a < 4; ++a) {
      for (int r = 0; r < 4; ++r) {
        float sum = hsum(acc[a][r]);
        for (int j = tail; j < k; ++j) sum += w[a][j] * xr[r][j];
        out[static_cast<size_t>(i + r) * ldo + a] = sum;
      }
    }
  }
  for (int a = 0; a < 4 && i < m; ++a) {
    below_dots(w[a], x + static_cast<size_t>(i) * k, m - i, k, out + static_cast<size_t>(i) * ldo + a, ldo);
  }
}

// exp(x) for x <= 0 to about 1 ulp: 2^n exp(f), n = round(x / ln 2), |f| <= ln 2 / 2
// (Cody-Waite), exp(f) by Cephes' expf polynomial.
LAMINA_AVX512 inline __m512 exp_avx512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), f);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(_mm512_mul_ps(y, f), f, _mm512_add_ps(f, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

// attend16's weighted values for kHeads heads x kCols 16-value columns at a time, over all
// the keys, in registers (heads [r0, r0 + kHeads), columns [c0, c0 + kCols)): each output's
// FMAs in the keys' order, as the one-block loop runs them.
template <int kHeads, int kCols>
LAMINA_AVX512 void weighted_block(const Part& p, int r0, int c0) {
  const int n = p.end - p.begin;
  __m512 acc[kHeads][kCols];
  for (int r = 0; r < kHeads; ++r) {
    for (int c = 0; c < kCols; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride + 16 * c0;
    for (int r = 0; r < kHeads; ++r) {
      const __m512 w = _mm512_set1_ps(p.scores[(r0 + r) * n + j]);
      for (int c = 0; c < kCols; ++c) acc[r][c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vj + 16 * c), acc[r][c]);
    }
  }
  for (int r = 0; r < kHeads; ++r) {
    for (int c = 0; c < kCols; ++c) _mm512_storeu_ps(p.out + static_cast<size_t>(r0 + r) * p.dv + 16 * (c0 + c), acc[r][c]);
  }
}

template <int kHeads, int kCols>
LAMINA_AVX512 bool weighted_blocks(const Part& p, int dvk) {
  if (p.rep % kHeads != 0 || dvk % kCols != 0) return false;
  for (int r0 = 0; r0 < p.rep; r0 += kHeads) {
    for (int c0 = 0; c0 < dvk; c0 += kCols) weighted_block<kHeads, kCols>(p, r0, c0);
  }
  return true;
}

// The weighted values of a group whose accumulators do not fit the registers at once (Gemma
// 3: four heads of 256 values), in blocks of 16 registers; false: no block shape divides it.
LAMINA_AVX512 bool weighted_in_blocks(const Part& p, int dvk) {
  return weighted_blocks<4, 4>(p, dvk) || weighted_blocks<2, 8>(p, dvk) || weighted_blocks<1, 16>(p, dvk) ||
         weighted_blocks<8, 2>(p, dvk) || weighted_blocks<16, 1>(p, dvk);
}

// The same for head sizes that are multiples of 16 (up to 256) without soft-capping: each
// key and value row is loaded once for the group's heads, exponentials sixteen at a time.
LAMINA_AVX512 void attend16(const Part& p) {
  const int n = p.end - p.begin, dk = p.d / 16, dvk = p.dv / 16;
  for (int r = 0; r < p.rep; ++r) {
    const float* qr = p.q + static_cast<size_t>(r) * p.d;
    __m512 top = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j < n; ++j) {
      const float* kj = p.keys + (p.begin + j) * p.key_stride;
      __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qr), _mm512_loadu_ps(kj));
      for (int c = 1; c < dk; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qr + 16 * c), _mm512_loadu_ps(kj + 16 * c), acc);
      p.scores[r * n + j] = hsum512(acc) * p.scale;
    }
    for (j = 0; j + 16 <= n; j += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(p.scores + r * n + j));
    float largest = _mm512_reduce_max_ps(top);
    for (; j < n; ++j) largest = std::max(largest, p.scores[r * n + j]);
    p.max[r] = largest;
    const __m512 m = _mm512_set1_ps(largest);
    __m512 total = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
      const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p.scores + r * n + j), m));
      _mm512_storeu_ps(p.scores + r * n + j, e);
      total = _mm512_add_ps(total, e);
    }
    if (j < n) {
      const __mmask16 tail = static_cast<__mmask16>((1u << (n - j)) - 1u);
      const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.scores + r * n + j), m));
      _mm512_mask_storeu_ps(p.scores + r * n + j, tail, e);
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(tail, e));
    }
    p.sum[r] = hsum512(total);
  }
  if (p.rep * dvk > 16 && weighted_in_blocks(p, dvk)) return;
  __m512 acc[16];  // rep * dv / 16 <= 16 accumulators in registers when they fit
  const bool in_registers = p.rep * dvk <= 16;
  if (!in_registers) std::fill(p.out, p.out + static_cast<size_t>(p.rep) * p.dv, 0.0f);
  for (int i = 0; i < p.rep * dvk && in_registers; ++i) acc[i] = _mm512_setzero_ps();
  for (int j = 0; j < n; ++j) {
    const float* vj = p.values + (p.begin + j) * p.value_stride;
    for (int r = 0; r < p.rep; ++r) {
      const __m512 w = _mm512_set1_ps(p.scores[r * n + j]);
      float* o = p.out + static_cast<size_t>(r) * p.dv;
      for (int c = 0; c < dvk; ++c) {
        if (in_registers) {
          acc[r * dvk + c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vj + 16 * c), acc[r * dvk + c]);
        } else {
          _mm512_storeu_ps(o + 16 * c, _mm512_fmadd_ps(w, _mm512_loadu_ps(vj + 16 * c), _mm512_loadu_ps(o + 16 * c)));
        }
      }
    }
  }
  for (int i = 0; i < p.rep * dvk && in_registers; ++i) _mm512_storeu_ps(p.out + 16 * i, acc[i]);
}
LAMINA_AVX512 void attend(const Part& p) { attend_loops(p); }

}  // namespace

Kernels avx512_kernels(Kernels k) {
  below_dots = k.dots;
  k.isa = Isa::avx512;
  k.name = "avx512";
  k.dot_q4 = dot_q4;
  k.dot_q8 = dot_q8;
  k.dots4 = dots4;
  k.attend = attend;
  k.attend16 = attend16;
  return k;
}

}  // namespace lamina_kernels

#endif  // __x86_64__
