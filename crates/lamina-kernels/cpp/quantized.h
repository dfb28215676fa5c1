// The quantized products' plain-pointer problem, shared by the quantized matmul primitive
// and the fused primitives built on it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "blocks.h"

namespace lamina_kernels {

// `n` f16 values as f32 (the tier's widening: F16C, NEON, or a loop).
void widen_f16(const uint16_t* src, int n, float* dst);

// How the products read x: as given (the result is MLX's dequantize-then-matmul to float
// rounding), or rounded to 8 bits per block of 32 values (llama.cpp's Q8_0 activations:
// weights of every width multiply as integers, about twice as many weights a cycle; the
// per-group bias term still uses x's exact sums), in products of any number of rows, each row
// computed as it would be alone.
// `int8_exact_top`: rounded, then the kExactTop largest outputs of each row of x recomputed
// with x exact (an output head: the top of its ranking as exact as `exact`).
enum class Activations : int { exact = 0, int8 = 1, int8_exact_top = 2 };
constexpr int kExactTop = 32;

// The C ABI's code for Activations (0 exact, 1 int8, 2 int8_exact_top); anything else is
// refused.
inline Activations activations_of(int code) {
  if (code < 0 || code > 2) throw std::invalid_argument("activations must be 0 (exact), 1 (int8) or 2 (int8, top exact)");
  return static_cast<Activations>(code);
}

// out[M, N] = x[M, K] @ dequantize(w)^T for MLX's affine layout (`w` packed little-endian
// bit streams, one per row; per-group scales and biases, f32 or f16: as GGUF stores them, a
// quarter fewer bytes per 4-bit weight to read), or for a GGUF block format (`w` the file's
// blocks, K / block_values a row; `scales` and `biases` unused, `group` the block's values,
// `bits` 8).
struct Problem {
  const float* x;       // [M, K], row-major
  const uint8_t* w;     // [N, K * bits / 8] bytes
  const void* scales;   // [N, K / group], f32 or f16
  const void* biases;   // [N, K / group], the same dtype
  float* out;           // [M, N]
  int m, n, k, group, bits;
  bool half_scales;     // scales and biases are f16
  Activations activations = Activations::exact;
  Format format = Format::affine;
  bool blocks() const { return format != Format::affine; }
  int row_bytes() const { return blocks() ? k / block_values(format) * block_bytes(format) : k * bits / 8; }
  // Groups of one 32-value chunk, as every GGUF file's (f16 scales and biases where the
  // file's hold them exactly, f32 for the K-quants' products of two scales): the tiers'
  // fastest 8-bit loops.
  bool gguf_layout() const { return !blocks() && group == 32; }
  int groups() const { return k / group; }
  // Row r's packed values.
  const uint8_t* row(int r) const { return w + static_cast<size_t>(r) * row_bytes(); }
  // Row r's scales and biases as f32 (f16 ones widened into a per-thread buffer, valid
  // until the next call for the same kind on this thread).
  const float* row_scales(int r) const { return row_of(scales, r, scale_buffer()); }
  const float* row_biases(int r) const { return row_of(biases, r, bias_buffer()); }

 private:
  const float* row_of(const void* data, int r, std::vector<float>& buffer) const {
    const size_t first = static_cast<size_t>(r) * groups();
    if (!half_scales) return static_cast<const float*>(data) + first;
    buffer.resize(groups());
    widen_f16(static_cast<const uint16_t*>(data) + first, groups(), buffer.data());
    return buffer.data();
  }
  static std::vector<float>& scale_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
  }
  static std::vector<float>& bias_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
  }
};

// Value j of a packed row (a little-endian bit stream of `bits`-wide values).
inline uint32_t value_at(const uint8_t* row, int row_bytes, int j, int bits) {
  const int bit = j * bits;
  const int byte = bit >> 3;
  uint32_t two = row[byte];
  if (byte + 1 < row_bytes) two |= static_cast<uint32_t>(row[byte + 1]) << 8;
  return (two >> (bit & 7)) & ((1u << bits) - 1u);
}

// x prepared once per row of x: per-group sums; for 4-bit the even/odd split of each
// 32-value chunk (byte j of a chunk holds values 2j and 2j + 1); with 8-bit activations,
// x rounded to 8 bits per chunk (in the same order as the weights it meets: split for
// 4-bit, as given for 8-bit).
// group_sums and q8_scales hold zeros past their last group or chunk up to a multiple of 8
// (whole vectors for the tiers' kernels).
struct PreparedRow {
  std::vector<float> group_sums;
  std::vector<float> split;    // [K]: per 32-chunk, 16 even values then 16 odd values
  std::vector<int8_t> q8;      // [K]: round(x / q8_scales[chunk]), in [-127, 127] (block_order: see prepare)
  std::vector<float> q8_scales;  // [K / 32]: the chunk's largest |x| / 127 (K / 256 for blocks)
  // Super-block formats: [K / 16] sums of q8 (ggml's Q8_K). Q8_0 read in groups: [K / 32,
  // padded to 8] each chunk's sum (the VNNI tier's codes offset by 128 take 128 x them back:
  // avx2_small_blocks.cpp's Q8Offset). (Not a field of its own: a larger PreparedRow made
  // the K-quant tiles ~5% slower.)
  std::vector<int16_t> bsums;
  // Super-block formats: per 256 values, 24 floats of q8_scales x bsums: those of the even
  // 16-value groups (0, 2, .., 14), of the odd ones, and of the eight 32-value sub-blocks
  // (the minimum terms of the VNNI kernels: avx512_vnni_blocks.cpp).
  std::vector<float> scaled_sums;
};

// Floats per super-block in PreparedRow::scaled_sums.
constexpr int kScaledSums = 24;

// n rounded up to a multiple of 8.
inline int padded8(int n) { return (n + 7) / 8 * 8; }

// One chunk of x rounded to 8 bits (llama.cpp's Q8_0 for 32 values, Q8_K for 256): returns
// d = max |values| / 127, with out[j] = round(values[j] / d) to nearest, ties to even (0
// where d is 0). The tier's kernel (Kernels::round_chunk; dispatch.cpp): every tier gives
// the same bytes.
float round_chunk(const float* values, int size, int8_t* out);

// The identity order of a chunk's values.
struct Natural {
  int operator()(int j) const { return j; }
};

// x's chunks of `size` values rounded (round_chunk); `order` maps a chunk's position to the
// index of x it holds.
template <class Order>
void round_chunks(const float* x, int k, Order order, PreparedRow& out, int size = 32) {
  out.q8.resize(k);
  out.q8_scales.assign(padded8(k / size), 0.0f);
  float ordered[kBlockValues];
  for (int c = 0; c < k / size; ++c) {
    const float* chunk = x + static_cast<size_t>(size) * c;
    if constexpr (!std::is_same_v<Order, Natural>) {
      for (int j = 0; j < size; ++j) ordered[j] = chunk[order(j)];
      chunk = ordered;
    }
    out.q8_scales[c] = round_chunk(chunk, size, out.q8.data() + static_cast<size_t>(size) * c);
  }
}

// The order x's bytes take within 256 values (a super-block, or eight 32-value chunks):
// position 32r + 4u + t holds position 4r + t of chunk u (its own inverse). 32 bytes of x at
// 32r then hold four values of each of eight chunks, one chunk per 32-bit lane, so a kernel
// sums a chunk's products across the eight registers as 16-bit lanes and applies its scale
// once (avx2_blocks.cpp, avx2_tiles.h; llama.cpp's repacked gemms get the same from
// interleaved weight rows).
constexpr int block_order(int j) { return 32 * (j / 4 % 8) + 4 * (j / 32) + j % 4; }

// Each whole 256 values of q8 put in block_order.
inline void group_order(std::vector<int8_t>& q8) {
  // 32-bit units: unit 8r + u of the grouped order is unit 8u + r of the natural one (four
  // consecutive values of a chunk stay together).
  uint32_t natural[kBlockValues / 4], grouped[kBlockValues / 4];
  for (size_t first = 0; first + kBlockValues <= q8.size(); first += kBlockValues) {
    std::memcpy(natural, q8.data() + first, kBlockValues);
    for (int r = 0; r < 8; ++r) {
      for (int u = 0; u < 8; ++u) grouped[8 * r + u] = natural[8 * u + r];
    }
    std::memcpy(q8.data() + first, grouped, kBlockValues);
  }
}

// Super-block formats: x rounded per 256 values, in block_order where `grouped`, with the
// sums of each 16 values (ggml's Q8_K). (The 32-value formats take `prepare`'s form: x
// rounded per 32, its exact sums per 32.)
inline PreparedRow prepare_blocks(const Problem& p, const float* x, bool int8, bool grouped) {
  PreparedRow out;
  if (!int8) return out;
  round_chunks(x, p.k, Natural{}, out, kBlockValues);
  out.bsums.assign(p.k / 16, 0);
  for (int s = 0; s < p.k / 16; ++s) {
    for (int j = 16 * s; j < 16 * s + 16; ++j) out.bsums[s] += out.q8[j];  // at most 16 x 127
  }
  out.scaled_sums.resize(static_cast<size_t>(p.k / kBlockValues) * kScaledSums);
  for (int b = 0; b < p.k / kBlockValues; ++b) {
    const float d = out.q8_scales[b];
    float* sums = out.scaled_sums.data() + static_cast<size_t>(b) * kScaledSums;
    for (int u = 0; u < 8; ++u) {
      const int even = out.bsums[16 * b + 2 * u], odd = out.bsums[16 * b + 2 * u + 1];
      sums[u] = d * static_cast<float>(even);
      sums[8 + u] = d * static_cast<float>(odd);
      sums[16 + u] = d * static_cast<float>(even + odd);
    }
  }
  if (grouped) group_order(out.q8);
  return out;
}

// What `prepare` makes of x for p: super-block rounding (ggml's Q8_K) or per 32 values with
// sums per `group`, in 4-bit affine rows' split order or not, in block_order (`grouped`) or
// not, with Q8_0's integer chunk sums or not. Problems with equal ones share x's prepared rows.
struct Preparation {
  bool super_blocks, split_order, grouped, chunk_sums;
  int group;
  bool operator==(const Preparation&) const = default;
};

inline Preparation preparation_of(const Problem& p, bool grouped) {
  if (p.blocks() && !small_blocks(p.format)) return {true, false, grouped, false, 0};
  return {false, !p.blocks() && p.bits == 4, grouped, grouped && p.blocks() && p.format == Format::q8_0, p.group};
}

// Whether a tier that reads x's 32-value chunks in groups (Kernels::grouped_chunks) does so
// for p: 4-bit affine rows in GGUF's layout, Q5_0 and Q5_1 (codes whose products of eight or
// four chunks fit 16-bit lanes).
inline bool grouped_format(const Problem& p) {
  return (p.gguf_layout() && p.bits == 4) || p.format == Format::q5_0 || p.format == Format::q5_1;
}

// `int8`: the product's kernel reads x rounded to 8 bits (Kernels::row_kernel); `grouped`:
// the tier's kernels read x in block_order (Kernels::groups): a 32-value format's whole
// groups of eight chunks, or a super-block format's 256 values.
inline PreparedRow prepare(const Problem& p, const float* x, bool int8, bool grouped) {
  const Preparation how = preparation_of(p, grouped);
  if (how.super_blocks) return prepare_blocks(p, x, int8, grouped);
  PreparedRow out;
  // Each group's sum in its values' order, all groups' chains advancing together (one
  // group's 32 dependent additions at a time waited on each other).
  out.group_sums.assign(padded8(p.groups()), 0.0f);
  float* sums = out.group_sums.data();
  for (int j = 0; j < p.group; ++j) {
    for (int g = 0; g < p.groups(); ++g) sums[g] += x[static_cast<size_t>(g) * p.group + j];
  }
  // Position j of a 4-bit chunk's split order holds value 2j (j < 16) or 2(j - 16) + 1.
  auto split = [](int j) { return j < 16 ? 2 * j : 2 * (j - 16) + 1; };
  const bool split_order = how.split_order;
  if (int8) {
    if (split_order) {
      round_chunks(x, p.k, split, out);
    } else {
      round_chunks(x, p.k, Natural{}, out);
    }
    if (how.chunk_sums) {
      out.bsums.assign(padded8(p.k / 32), 0);
      for (int c = 0; c < p.k / 32; ++c) {
        int sum = 0;
        for (int j = 0; j < 32; ++j) sum += out.q8[32 * c + j];
        out.bsums[c] = static_cast<int16_t>(sum);  // at most 32 x 127
      }
    }
    if (grouped) group_order(out.q8);
  } else if (split_order) {
    out.split.resize(p.k);
    for (int c = 0; c < p.k / 32; ++c) {
      for (int j = 0; j < 32; ++j) out.split[32 * c + j] = x[32 * c + split(j)];
    }
  }
  return out;
}

// sum over groups of biases[g] * (the group's sum of x).
inline float bias_dot(const Problem& p, int r, const PreparedRow& x) {
  const float* b = p.row_biases(r);
  float sum = 0.0f;
  for (int g = 0; g < p.groups(); ++g) sum += b[g] * x.group_sums[g];
  return sum;
}

// Computes a problem with the fastest path for its shape: one row (decoding) reads each
// packed weight once; up to 32 rows dequantize each weight row once into L1; more go
// through sgemm on dequantized tiles. Rows are split over the pool when large enough.
void quantized_products(const Problem& p);

// `count` problems that read the same x (the same `x`, `m` and `k`: a block's q, k and v
// products, or its gate and up): the ones with 8-bit activations round x once per
// Preparation and split all their weight rows over the pool in one region (products too
// small to split run beside the others, not after them); each output as quantized_products
// gives it.
void quantized_products_sharing_x(const Problem* problems, int count);

}  // namespace lamina_kernels
