// lamina's CPU quantized matmul: `x @ dequantize(w)^T` for MLX's affine layout
// (`w` packed little-endian bit streams, one per row; per-group f32 or f16 `scales` and
// `biases`), as an MLX custom Primitive, the way MLX documents custom operations.
//
// - One-row products (decoding) read each packed weight once: per group, a dot product
//   of the quantized values with x, then `scale * dot + bias * sum(x in group)`.
//   4- and 8-bit rows take AVX2 + FMA paths picked at run time; every width 2..8 has a
//   portable path.
// - Many-row products (prefill) dequantize tiles of rows to f32 and hand them to BLAS
//   `sgemm` (OpenBLAS, through lamina's shim).
// - Rows are split over a small pool of threads that spin briefly, then sleep, between calls,
//   with the calling thread taking a share.
// - The gradient with respect to x is MLX's own quantized_matmul (transpose = false), so
//   QLoRA trains through the kernel.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"

#include "common.h"
#include "quantized.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using namespace lamina_kernels;

// Value j of a packed row (a little-endian bit stream of `bits`-wide values).
inline uint32_t value_at(const uint8_t* row, int row_bytes, int j, int bits) {
  const int bit = j * bits;
  const int byte = bit >> 3;
  uint32_t two = row[byte];
  if (byte + 1 < row_bytes) two |= static_cast<uint32_t>(row[byte + 1]) << 8;
  return (two >> (bit & 7)) & ((1u << bits) - 1u);
}

// Dequantizes row r of w into `dst` (K floats).
void dequantize_row(const Problem& p, int r, float* dst) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  if (p.bits == 4) {
    for (int j = 0; j < p.k / 2; ++j) {
      const int g = (2 * j) / p.group;
      dst[2 * j] = s[g] * static_cast<float>(row[j] & 0x0F) + b[g];
      dst[2 * j + 1] = s[g] * static_cast<float>(row[j] >> 4) + b[g];
    }
  } else if (p.bits == 8) {
    for (int j = 0; j < p.k; ++j) {
      const int g = j / p.group;
      dst[j] = s[g] * static_cast<float>(row[j]) + b[g];
    }
  } else {
    const int bytes = p.row_bytes();
    for (int j = 0; j < p.k; ++j) {
      const int g = j / p.group;
      dst[j] = s[g] * static_cast<float>(value_at(row, bytes, j, p.bits)) + b[g];
    }
  }
}

// ---------------------------------------------------------------------------------------
// One-row products.

// x prepared once per row of x: per-group sums, and for 4-bit the even/odd split of each
// 32-value chunk (byte j of a chunk holds values 2j and 2j + 1).
struct PreparedRow {
  std::vector<float> group_sums;
  std::vector<float> split;  // [K]: per 32-chunk, 16 even values then 16 odd values
};

PreparedRow prepare(const Problem& p, const float* x) {
  PreparedRow out;
  out.group_sums.assign(p.groups(), 0.0f);
  for (int g = 0; g < p.groups(); ++g) {
    float sum = 0.0f;
    for (int j = 0; j < p.group; ++j) sum += x[g * p.group + j];
    out.group_sums[g] = sum;
  }
  if (p.bits == 4) {
    out.split.resize(p.k);
    for (int c = 0; c < p.k / 32; ++c) {
      for (int j = 0; j < 16; ++j) {
        out.split[32 * c + j] = x[32 * c + 2 * j];
        out.split[32 * c + 16 + j] = x[32 * c + 2 * j + 1];
      }
    }
  }
  return out;
}

float bias_dot(const Problem& p, int r, const PreparedRow& x) {
  const float* b = p.row_biases(r);
  float sum = 0.0f;
  for (int g = 0; g < p.groups(); ++g) sum += b[g] * x.group_sums[g];
  return sum;
}

float dot_portable(const Problem& p, int r, const float* x, const PreparedRow& prepared) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const int bytes = p.row_bytes();
  float total = 0.0f;
  for (int g = 0; g < p.groups(); ++g) {
    float acc = 0.0f;
    for (int j = g * p.group; j < (g + 1) * p.group; ++j) {
      acc += static_cast<float>(value_at(row, bytes, j, p.bits)) * x[j];
    }
    total += s[g] * acc;
  }
  return total + bias_dot(p, r, prepared);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dot_q4_avx2(const Problem& p, int r, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float* xs = x.split.data();
  const __m128i low_mask = _mm_set1_epi8(0x0F);
  __m256 total = _mm256_setzero_ps();
  const int chunks_per_group = p.group / 32;
  for (int g = 0; g < p.groups(); ++g) {
    // Four independent accumulators: one chain of FMAs would wait on each one's latency.
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (int c = 0; c < chunks_per_group; ++c) {
      const int chunk = g * chunks_per_group + c;
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * chunk));
      const __m128i lo = _mm_and_si128(bytes, low_mask);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_mask);
      const float* xe = xs + 32 * chunk;
      const float* xo = xe + 16;
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(xe), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                           _mm256_loadu_ps(xe + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(xo), a2);
      a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
                           _mm256_loadu_ps(xo + 8), a3);
    }
    const __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), acc, total);
  }
  return hsum(total) + bias_dot(p, r, x);
}

// Eight 8-bit values from `row + j` as floats.
__attribute__((target("avx2,fma"))) inline __m256 eight_q8(const uint8_t* row, int j) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j))));
}

__attribute__((target("avx2,fma"))) float dot_q8_avx2(const Problem& p, int r, const float* xv,
                                                       const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < p.groups(); ++g) {
    // Four independent accumulators (one chain of FMAs would wait on each one's latency);
    // the group is a multiple of 8.
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    const int end = (g + 1) * p.group;
    int j = g * p.group;
    for (; j + 32 <= end; j += 32) {
      a0 = _mm256_fmadd_ps(eight_q8(row, j), _mm256_loadu_ps(xv + j), a0);
      a1 = _mm256_fmadd_ps(eight_q8(row, j + 8), _mm256_loadu_ps(xv + j + 8), a1);
      a2 = _mm256_fmadd_ps(eight_q8(row, j + 16), _mm256_loadu_ps(xv + j + 16), a2);
      a3 = _mm256_fmadd_ps(eight_q8(row, j + 24), _mm256_loadu_ps(xv + j + 24), a3);
    }
    for (; j < end; j += 8) a0 = _mm256_fmadd_ps(eight_q8(row, j), _mm256_loadu_ps(xv + j), a0);
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    total = _mm256_fmadd_ps(_mm256_set1_ps(s[g]), sum, total);
  }
  return hsum(total) + bias_dot(p, r, x);
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

// One 4-bit row against one row of x, 512 bits wide: per 32 values one zero-extension of
// 16 bytes to 16 lanes, the low and high nibbles converted to floats, a multiply and an FMA
// against x (pre-split into even and odd values), and the chunk's scale applied by an FMA
// into the row's total. Measured faster than two or four rows at once (one stream each).
LAMINA_AVX512 float dot_q4_avx512(const Problem& p, int r, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
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
  for (; c + 2 <= chunks; c += 2) {  // two independent chains
    t0 = _mm512_fmadd_ps(_mm512_set1_ps(s[c / per_group]), chunk(c), t0);
    t1 = _mm512_fmadd_ps(_mm512_set1_ps(s[(c + 1) / per_group]), chunk(c + 1), t1);
  }
  if (c < chunks) t0 = _mm512_fmadd_ps(_mm512_set1_ps(s[c / per_group]), chunk(c), t0);
  return hsum512(bias_dots_avx512(p.row_biases(r), x.group_sums.data(), p.groups(), _mm512_add_ps(t0, t1)));
}

// One 8-bit row against one row of x: 16 values per zero-extension, conversion and FMA.
LAMINA_AVX512 float dot_q8_avx512(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
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
  return hsum512(bias_dots_avx512(p.row_biases(r), x.group_sums.data(), p.groups(), _mm512_add_ps(t0, t1)));
}

bool has_avx512vbmi() {
  static const bool yes = has_avx512() && __builtin_cpu_supports("avx512vbmi");
  return yes;
}

#define LAMINA_VBMI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))

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
LAMINA_VBMI float dot_bits_avx512(const Problem& p, int r, const float* xv, const PreparedRow& x) {
  const BitLanes bits(p.bits);
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
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
  return hsum512(bias_dots_avx512(p.row_biases(r), x.group_sums.data(), p.groups(), _mm512_add_ps(t0, t1)));
}

// Row r of any other width as K floats (a prompt's tiles: Gemma 3's Q5_0 tensors).
LAMINA_VBMI void dequantize_bits_avx512(const Problem& p, int r, float* dst) {
  const BitLanes bits(p.bits);
  const uint8_t* w = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  for (int half = 0; half < p.k / 16; ++half) {
    const int g = 16 * half / p.group;
    _mm512_storeu_ps(dst + 16 * half, _mm512_fmadd_ps(_mm512_set1_ps(s[g]), bits.sixteen(w, half), _mm512_set1_ps(b[g])));
  }
}
#endif

// out[m, rows) for one row of x.
void gemv_rows(const Problem& p, int m, const PreparedRow& prepared, int begin, int end) {
  const float* x = p.x + static_cast<size_t>(m) * p.k;
  float* out = p.out + static_cast<size_t>(m) * p.n;
#if defined(__x86_64__)
  if (has_avx512() && p.bits == 4 && p.group % 32 == 0) {
    for (int r = begin; r < end; ++r) out[r] = dot_q4_avx512(p, r, prepared);
    return;
  }
  if (has_avx512() && p.bits == 8 && p.group % 32 == 0) {
    for (int r = begin; r < end; ++r) out[r] = dot_q8_avx512(p, r, x, prepared);
    return;
  }
  if (has_avx512vbmi() && p.bits < 8 && p.group % 32 == 0) {
    for (int r = begin; r < end; ++r) out[r] = dot_bits_avx512(p, r, x, prepared);
    return;
  }
  if (has_avx2() && p.bits == 4 && p.group % 32 == 0) {
    for (int r = begin; r < end; ++r) out[r] = dot_q4_avx2(p, r, prepared);
    return;
  }
  if (has_avx2() && p.bits == 8 && p.group % 8 == 0) {
    for (int r = begin; r < end; ++r) out[r] = dot_q8_avx2(p, r, x, prepared);
    return;
  }
#endif
  for (int r = begin; r < end; ++r) out[r] = dot_portable(p, r, x, prepared);
}

// Packed weight bytes below which a one-row product stays on the calling thread. The pool's
// workers spin between the ~200 products of a decoded token, so splitting pays from small
// sizes on. Measured on SmolLM2-135M Q4_1 (2 cores, medians of 12 runs, alternating):
// decode 71.3 tok/s from 4 KiB, 74.7 from 64 KiB, 72.3 from 256 KiB, 69.6 from 1 MiB.
constexpr size_t kParallelBytes = size_t{1} << 16;

void gemv(const Problem& p) {
  Pool& pool = Pool::get();
  const size_t bytes = static_cast<size_t>(p.n) * p.row_bytes();
  const int tasks = bytes < kParallelBytes ? 1 : std::min(p.n, pool.size() * 4);
  for (int m = 0; m < p.m; ++m) {
    const PreparedRow prepared = prepare(p, p.x + static_cast<size_t>(m) * p.k);
    pool.run(tasks, [&](int t) {
      const int begin = static_cast<int>(static_cast<int64_t>(p.n) * t / tasks);
      const int end = static_cast<int>(static_cast<int64_t>(p.n) * (t + 1) / tasks);
      gemv_rows(p, m, prepared, begin, end);
    });
  }
}

// ---------------------------------------------------------------------------------------
// Dequantizing rows, with AVX2 for 4 and 8 bits.

#if defined(__x86_64__)
// dst[0..8) = scale * eight bytes + bias.
__attribute__((target("avx2,fma"))) inline void put8(__m128i eight, __m256 scale, __m256 bias, float* dst) {
  _mm256_storeu_ps(dst, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight)), scale, bias));
}

// 32 values (16 bytes of 4-bit pairs) of one group: dst[j] = s * q_j + b.
__attribute__((target("avx2,fma"))) inline void dequantize_q4_chunk(const uint8_t* src, float s, float b,
                                                                     float* dst) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  const __m128i first = _mm_unpacklo_epi8(lo, hi);  // values 0..15 in order
  const __m128i second = _mm_unpackhi_epi8(lo, hi);  // values 16..31
  const __m256 scale = _mm256_set1_ps(s), bias = _mm256_set1_ps(b);
  put8(first, scale, bias, dst);
  put8(_mm_srli_si128(first, 8), scale, bias, dst + 8);
  put8(second, scale, bias, dst + 16);
  put8(_mm_srli_si128(second, 8), scale, bias, dst + 24);
}

__attribute__((target("avx2,fma"))) void dequantize_row_avx2(const Problem& p, int r, float* dst) {
  const uint8_t* row = p.row(r);
  const float* s = p.row_scales(r);
  const float* b = p.row_biases(r);
  if (p.bits == 4) {
    for (int c = 0; c < p.k / 32; ++c) {
      const int g = (32 * c) / p.group;
      dequantize_q4_chunk(row + 16 * c, s[g], b[g], dst + 32 * c);
    }
    return;
  }
  for (int j = 0; j < p.k; j += 8) {  // 8 bits
    const int g = j / p.group;
    const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j));
    put8(eight, _mm256_set1_ps(s[g]), _mm256_set1_ps(b[g]), dst + j);
  }
}

// out[i * ldo] = dot(w, x + i * k) for the m rows of x; four rows share each load of w.
__attribute__((target("avx2,fma"))) void dots_avx2(const float* w, const float* x, int m, int k, float* out,
                                                    int ldo) {
  const int tail = k - k % 8;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* x0 = x + static_cast<size_t>(i) * k;
    const float *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) {
      const __m256 wv = _mm256_loadu_ps(w + j);
      a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + j), a0);
      a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + j), a1);
      a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + j), a2);
      a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + j), a3);
    }
    float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
    for (int j = tail; j < k; ++j) {
      s0 += w[j] * x0[j];
      s1 += w[j] * x1[j];
      s2 += w[j] * x2[j];
      s3 += w[j] * x3[j];
    }
    out[static_cast<size_t>(i) * ldo] = s0;
    out[static_cast<size_t>(i + 1) * ldo] = s1;
    out[static_cast<size_t>(i + 2) * ldo] = s2;
    out[static_cast<size_t>(i + 3) * ldo] = s3;
  }
  for (; i < m; ++i) {
    const float* xi = x + static_cast<size_t>(i) * k;
    __m256 a = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(xi + j), a);
    float sum = hsum(a);
    for (int j = tail; j < k; ++j) sum += w[j] * xi[j];
    out[static_cast<size_t>(i) * ldo] = sum;
  }
}

// The same for two weight rows at once (out[i * ldo] and out[i * ldo + 1]): a 2 x 4 block
// of accumulators, six loads per eight FMAs.
__attribute__((target("avx2,fma"))) void dots2_avx2(const float* w0, const float* w1, const float* x, int m,
                                                     int k, float* out, int ldo) {
  const int tail = k - k % 8;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* x0 = x + static_cast<size_t>(i) * k;
    const float *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (int j = 0; j < tail; j += 8) {
      const __m256 u = _mm256_loadu_ps(w0 + j), v = _mm256_loadu_ps(w1 + j);
      __m256 xv = _mm256_loadu_ps(x0 + j);
      a0 = _mm256_fmadd_ps(u, xv, a0);
      b0 = _mm256_fmadd_ps(v, xv, b0);
      xv = _mm256_loadu_ps(x1 + j);
      a1 = _mm256_fmadd_ps(u, xv, a1);
      b1 = _mm256_fmadd_ps(v, xv, b1);
      xv = _mm256_loadu_ps(x2 + j);
      a2 = _mm256_fmadd_ps(u, xv, a2);
      b2 = _mm256_fmadd_ps(v, xv, b2);
      xv = _mm256_loadu_ps(x3 + j);
      a3 = _mm256_fmadd_ps(u, xv, a3);
      b3 = _mm256_fmadd_ps(v, xv, b3);
    }
    const float* xs[4] = {x0, x1, x2, x3};
    float sa[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    float sb[4] = {hsum(b0), hsum(b1), hsum(b2), hsum(b3)};
    for (int r = 0; r < 4; ++r) {
      for (int j = tail; j < k; ++j) {
        sa[r] += w0[j] * xs[r][j];
        sb[r] += w1[j] * xs[r][j];
      }
      out[static_cast<size_t>(i + r) * ldo] = sa[r];
      out[static_cast<size_t>(i + r) * ldo + 1] = sb[r];
    }
  }
  if (i < m) {
    const float* rest = x + static_cast<size_t>(i) * k;
    dots_avx2(w0, rest, m - i, k, out + static_cast<size_t>(i) * ldo, ldo);
    dots_avx2(w1, rest, m - i, k, out + static_cast<size_t>(i) * ldo + 1, ldo);
  }
}

// Four weight rows against four rows of x: sixteen accumulators, which need the 32 vector
// registers AVX-512VL gives (the arithmetic stays 256 bits wide, which is as fast on cores
// that split 512-bit operations). Eight loads per sixteen FMAs.
LAMINA_AVX512 void dots4_avx512vl(const float* const* w, const float* x, int m, int k, float* out, int ldo) {
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
    dots_avx2(w[a], x + static_cast<size_t>(i) * k, m - i, k, out + static_cast<size_t>(i) * ldo + a, ldo);
  }
}

#endif

bool fast_dequantize(const Problem& p) {
#if defined(__x86_64__)
  return has_avx2() && (p.bits == 4 || p.bits == 8) && p.group % 32 == 0;
#else
  (void)p;
  return false;
#endif
}

// Row r of w as K floats, with the fastest path the machine and layout allow.
void dequantize(const Problem& p, int r, float* dst) {
#if defined(__x86_64__)
  if (fast_dequantize(p)) {
    dequantize_row_avx2(p, r, dst);
    return;
  }
  if (has_avx512vbmi() && p.bits < 8 && p.group % 32 == 0) {
    dequantize_bits_avx512(p, r, dst);
    return;
  }
#endif
  dequantize_row(p, r, dst);
}

void dots(const float* w, const float* x, int m, int k, float* out, int ldo) {
#if defined(__x86_64__)
  if (has_avx2()) {
    dots_avx2(w, x, m, k, out, ldo);
    return;
  }
#endif
  for (int i = 0; i < m; ++i) {
    const float* xi = x + static_cast<size_t>(i) * k;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += w[j] * xi[j];
    out[static_cast<size_t>(i) * ldo] = sum;
  }
}

// ---------------------------------------------------------------------------------------
// A few rows (a decoding batch): each weight row is read from memory once, dequantized
// into a buffer that stays in L1, and dotted with every row of x.

void gemv_batch(const Problem& p) {
  Pool& pool = Pool::get();
  const size_t work = static_cast<size_t>(p.n) * p.row_bytes() * p.m;
  const int tasks = work < kParallelBytes ? 1 : std::min(p.n, pool.size() * 4);
  pool.run(tasks, [&](int t) {
    const int begin = static_cast<int>(static_cast<int64_t>(p.n) * t / tasks);
    const int end = static_cast<int>(static_cast<int64_t>(p.n) * (t + 1) / tasks);
    std::vector<float> rows(4 * static_cast<size_t>(p.k));
    float* first = rows.data();
    float* second = first + p.k;
    int r = begin;
#if defined(__x86_64__)
    if (has_avx512()) {
      const float* four[4] = {first, second, first + 2 * p.k, first + 3 * p.k};
      for (; r + 4 <= end; r += 4) {
        for (int a = 0; a < 4; ++a) dequantize(p, r + a, rows.data() + static_cast<size_t>(a) * p.k);
        dots4_avx512vl(four, p.x, p.m, p.k, p.out + r, p.n);
      }
    }
    if (has_avx2()) {
      for (; r + 2 <= end; r += 2) {
        dequantize(p, r, first);
        dequantize(p, r + 1, second);
        dots2_avx2(first, second, p.x, p.m, p.k, p.out + r, p.n);
      }
    }
#endif
    for (; r < end; ++r) {
      dequantize(p, r, first);
      dots(first, p.x, p.m, p.k, p.out + r, p.n);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Many-row products: tiles of dequantized rows through sgemm.

void gemm(const Problem& p) {
  Pool& pool = Pool::get();
  const int tile = 256;
  std::vector<float> buffer(static_cast<size_t>(tile) * p.k);
  for (int n0 = 0; n0 < p.n; n0 += tile) {
    const int rows = std::min(tile, p.n - n0);
    pool.run(rows, [&](int r) { dequantize(p, n0 + r, buffer.data() + static_cast<size_t>(r) * p.k); });
    cblas_sgemm(kRowMajor, kNoTrans, kTrans, p.m, rows, p.k, 1.0f, p.x, p.k, buffer.data(), p.k, 0.0f,
                p.out + n0, p.n);
  }
}

// Rows of x up to which each weight row is dequantized once and dotted with every row of
// x; above, tiles go through sgemm.
constexpr int kBatchRows = 32;

}  // namespace

void lamina_kernels::quantized_products(const Problem& p) {
  if (p.m == 1) {
    gemv(p);
  } else if (p.m <= kBatchRows) {
    gemv_batch(p);
  } else {
    gemm(p);
  }
}

namespace {

// ---------------------------------------------------------------------------------------
// The primitive.

class QuantizedMatmulCpu : public mc::UnaryPrimitive {
 public:
  QuantizedMatmulCpu(mc::Stream stream, int group, int bits)
      : mc::UnaryPrimitive(stream), group_(group), bits_(bits) {}

  void eval_cpu(const std::vector<mc::array>& inputs, mc::array& out) override {
    // The kernels read x as a dense [M, K]; a strided view is copied once (in the task).
    const mc::array& x = inputs[0];
    const int k = static_cast<int>(x.shape().back());
    const int m = static_cast<int>(x.size() / std::max<size_t>(k, 1));
    const bool contiguous = x.flags().row_contiguous;
    out.set_data(mc::allocator::malloc(out.nbytes()));
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    mc::array w = inputs[1], scales = inputs[2], biases = inputs[3];
    const int n = static_cast<int>(w.shape(0));
    encoder.dispatch([x, w, scales, biases, out_ptr = out.data<float>(), m, n, k, contiguous,
                      group = group_, bits = bits_]() mutable {
      const float* xp = x.data<float>();
      std::vector<float> dense;
      if (!contiguous) {
        dense = dense_f32(x);
        xp = dense.data();
      }
      Problem p{xp,    w.data<uint8_t>(), scales.data<void>(), biases.data<void>(), out_ptr, m, n, k, group, bits,
                scales.dtype() == mc::float16};
      quantized_products(p);
    });
  }

  void eval_gpu(const std::vector<mc::array>&, mc::array&) override {
    throw std::runtime_error("lamina's quantized matmul runs on the CPU; the GPU uses MLX's own");
  }

  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>&) override {
    std::vector<mc::array> grads;
    for (int arg : argnums) {
      if (arg != 0) {
        throw std::invalid_argument("lamina's quantized matmul has no gradient for its quantized weight");
      }
      grads.push_back(mc::quantized_matmul(cotangents[0], primals[1], primals[2], primals[3], false, group_,
                                           bits_, "affine", stream()));
    }
    return grads;
  }

  const char* name() const override { return "LaminaQuantizedMatmul"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const QuantizedMatmulCpu*>(&other);
    return o != nullptr && o->group_ == group_ && o->bits_ == bits_;
  }

  std::vector<mc::Shape> output_shapes(const std::vector<mc::array>& inputs) override {
    mc::Shape shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  int group_;
  int bits_;
};

}  // namespace

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) static void widen_f16_f16c(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}
#endif

void lamina_kernels::widen_f16(const uint16_t* src, int n, float* dst) {
#if defined(__x86_64__)
  static const bool f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  if (f16c) {
    widen_f16_f16c(src, n, dst);
    return;
  }
#endif
  for (int i = 0; i < n; ++i) {
    mc::float16_t h;
    std::memcpy(&h, src + i, sizeof h);
    dst[i] = static_cast<float>(h);
  }
}

std::string& lamina_kernels::last_error() {
  thread_local std::string text;
  return text;
}

extern "C" {

// The threads the kernels run a parallel region on (the caller's included).
int lamina_kernel_threads() { return lamina_kernels::Pool::get().size(); }


// `out = x @ dequantize(w, scales, biases)^T` on the CPU (MLX's own op elsewhere).
// x: f32 [..., K]; w: u32 [N, K * bits / 32]; scales, biases: f32 [N, K / group].
// Returns 0, or 1 with the reason in lamina_kernels_last_error().
__attribute__((visibility("default"))) int lamina_quantized_matmul(Handle* out, Handle x, Handle w, Handle scales,
                                                                   Handle biases, int group, int bits) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::array& wa = from_handle(w);
    const mc::array& sa = from_handle(scales);
    const mc::array& ba = from_handle(biases);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const bool scales_read = (sa.dtype() == mc::float32 || sa.dtype() == mc::float16) && ba.dtype() == sa.dtype();
    const bool ours = on_cpu(stream) && xa.dtype() == mc::float32 &&
                      scales_read && wa.dtype() == mc::uint32 &&
                      bits >= 2 && bits <= 8 && group > 0 && xa.ndim() >= 1 && wa.ndim() == 2;
    if (!ours) {
      to_handle(out, mc::quantized_matmul(xa, wa, sa, ba, true, group, bits, "affine", stream));
      return 0;
    }
    const int k = static_cast<int>(xa.shape().back());
    const int n = static_cast<int>(wa.shape(0));
    if (k % group != 0 || static_cast<int64_t>(wa.shape(1)) * 32 != static_cast<int64_t>(k) * bits ||
        sa.shape() != mc::Shape{n, k / group} || ba.shape() != sa.shape()) {
      last_error() = "quantized matmul: x [..., " + std::to_string(k) + "] does not fit w " +
                   std::to_string(wa.shape(0)) + "x" + std::to_string(wa.shape(1)) + " at " +
                   std::to_string(bits) + " bits, group " + std::to_string(group);
      return 1;
    }
    mc::Shape shape = xa.shape();
    shape.back() = n;
    auto primitive = std::make_shared<QuantizedMatmulCpu>(stream, group, bits);
    to_handle(out, mc::array(shape, mc::float32, primitive, {xa, wa, sa, ba}));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

__attribute__((visibility("default"))) const char* lamina_kernels_last_error() { return last_error().c_str(); }

}  // extern "C"
