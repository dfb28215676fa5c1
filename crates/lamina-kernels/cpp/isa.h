// The instruction-set-specific kernels, one file per tier (portable.cpp, avx2.cpp,
// avx512.cpp, avx512_vbmi.cpp, neon.cpp, neon_dotprod.cpp), gathered once at start-up into
// one table of function pointers, as ggml and candle do: the machine's best tier (cpuid and
// the OS's saved register state on x86; NEON is part of every aarch64, its byte dot products
// are asked of the OS), capped by LAMINA_ISA (`portable`, `avx2`, `avx512`, `avx512_vbmi`,
// `neon`, `neon_dotprod`) for tests and for users who hit a bad path. Each tier above the
// first of its architecture starts from the one below and replaces what it does faster. A
// null entry means the tier has no kernel for it and the operation is left to MLX (the
// portable tier fills every entry; NEON fills what it has).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gate.h"
#include "quantized.h"

namespace lamina_kernels {

// One part of a KV group's attention (flash-decoding's split): the group's `rep` query heads
// q [rep, d] against keys [begin, end). Per head: the largest score, the sum of
// exp(score - largest) and the unnormalised weighted sum of values, combined across parts
// afterwards. `scores` holds rep * (end - begin) floats.
struct Part {
  const float* q;
  const float* keys;    // [capacity, d] of the group, rows `key_stride` apart
  const float* values;  // [capacity, dv] of the group, rows `value_stride` apart
  int rep, d, dv, begin, end;
  int64_t key_stride, value_stride;
  float scale, softcap;
  float* scores;
  float* max;  // [rep]
  float* sum;  // [rep]
  float* out;  // [rep, dv]
};

enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2, avx512_vbmi = 3, neon = 4, neon_dotprod = 5 };

// A packed row dotted with one row of x (`prepared` from it): groups are multiples of 32.
using RowDot = float (*)(const Problem& p, int row, const float* x, const PreparedRow& prepared);
// A packed row as K floats.
using RowDequantize = void (*)(const Problem& p, int row, float* dst);

// A super-block row dequantized into a per-thread buffer and dotted with x by the tier's
// `dots` (blocks.cpp): the exact product, any format.
float dot_dequantized(const Problem& p, int row, const float* x, const PreparedRow& prepared);

struct Kernels {
  Isa isa;
  const char* name;
  // One-row products (decoding), by width: 4 bits, 8 bits, and any of 2..8 bits.
  RowDot dot_q4, dot_q8, dot_bits;
  // The same reading x rounded to 8 bits (Activations::int8): integer products of the packed
  // values with PreparedRow::q8, for 4 bits, 8 bits, and 2, 3, 5 or 6 bits.
  RowDot dot_q4_int8, dot_q8_int8, dot_bits_int8;
  // Weight rows [begin, end) against rows [m0, m1) of x rounded to 8 bits (`xs[i]` prepared
  // from row i), into out[i * N + r], each pair exactly as its one-row product, for
  // Problem::gguf_layout; null (or another layout): the one-row kernels serve, pair by pair.
  void (*products_int8)(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1);
  // Rows dequantized (batches and prompts): 4 and 8 bits, and any of 2..8 bits.
  RowDequantize dequantize_q4_q8, dequantize_bits;
  // out[i * ldo] = dot(w, x_i) for the m rows of x [m, k]; the same for two and four
  // weight rows at once (out[i * ldo + a]); null: the one-row form serves.
  void (*dots)(const float* w, const float* x, int m, int k, float* out, int ldo);
  void (*dots2)(const float* w0, const float* w1, const float* x, int m, int k, float* out, int ldo);
  void (*dots4)(const float* const* w, const float* x, int m, int k, float* out, int ldo);
  // A chunk of x rounded to 8 bits (quantized.h's round_chunk: the same bytes on every tier).
  float (*round_chunk)(const float* values, int size, int8_t* out);
  // n f16 values widened to f32 (f16 scales).
  void (*widen_f16)(const uint16_t* src, int n, float* dst);
  // bf16/f16 weights: a row dotted with x, a row widened, f32 results rounded.
  float (*half_dot)(const uint16_t* w, const float* x, int k, bool bf16);
  void (*half_widen)(const uint16_t* src, float* dst, int k, bool bf16);
  void (*half_narrow)(const float* src, uint16_t* dst, size_t n, bool bf16);
  // Decode attention of one part: any head size and soft-capping.
  void (*attend)(const Part& p);
  // The same for head sizes that are multiples of 16 (up to 256), no soft-capping.
  void (*attend16)(const Part& p);
  // The gated unit: values[j] = activate(gate, values[j]) x up[j] for j < n (gate.h), each
  // value computed alike wherever it sits (a row's results do not depend on its batch).
  void (*gated)(Gate gate, float* values, const float* up, size_t n);
  // GGUF's block formats (blocks.h), by Format code: a row against x rounded per 256 values
  // (PreparedRow's Q8_K form; per 32 for the 32-value types), and a row dequantized. The portable tier fills every
  // format; the others replace what they do faster.
  RowDot dot_blocks_int8[kFormats];
  RowDequantize dequantize_blocks[kFormats];
  // Weight rows [begin, end) against rows [m0, m1) of x (as products_int8), each pair
  // exactly as dot_blocks_int8 computes it; null: the one-row kernel serves, pair by pair.
  void (*products_blocks_int8[kFormats])(const Problem& p, int begin, int end, const PreparedRow* xs, int m0, int m1);
  // The int8 kernels of grouped_format's 32-value formats read x's whole groups of eight
  // chunks in block_order (`prepare`'s `grouped`); false: chunk by chunk. Q8_0's too with
  // grouped_q8_0 (the AVX2 tier's signed groups, the VNNI tier's offset codes). The
  // super-block kernels read each 256 values of x in block_order with grouped_super_blocks
  // (the portable and x86 tiers'); false: in order (NEON's: a 16-value group's bytes side
  // by side).
  bool grouped_chunks = false;
  bool grouped_q8_0 = false;
  bool grouped_super_blocks = true;

  // Whether p's int8 kernels read x in groups (`prepare`'s argument).
  bool groups(const Problem& p) const {
    if (p.blocks() && !small_blocks(p.format)) return grouped_super_blocks;
    return (grouped_chunks && grouped_format(p)) || (grouped_q8_0 && p.blocks() && p.format == Format::q8_0);
  }

  RowDot dot_for(int bits) const { return bits == 4 && dot_q4 ? dot_q4 : bits == 8 && dot_q8 ? dot_q8 : dot_bits; }
  // p's one-row kernel, and whether it reads x rounded to 8 bits (`prepare`'s argument):
  // asked for, and the tier has the integer kernel for its width.
  struct RowKernel {
    RowDot dot;
    bool int8;
  };
  RowKernel row_kernel(const Problem& p) const {
    if (p.blocks()) {
      const RowDot int8 = dot_blocks_int8[static_cast<int>(p.format)];
      if (p.activations != Activations::exact && int8 != nullptr) return {int8, true};
      return {dot_dequantized, false};
    }
    if (p.activations != Activations::exact) {
      if (p.bits == 4 && dot_q4_int8 != nullptr) return {dot_q4_int8, true};
      if (p.bits == 8 && dot_q8_int8 != nullptr) return {dot_q8_int8, true};
      const bool other = p.bits == 2 || p.bits == 3 || p.bits == 5 || p.bits == 6;
      if (other && dot_bits_int8 != nullptr) return {dot_bits_int8, true};
    }
    return {dot_for(p.bits), false};
  }
  RowDequantize dequantize_for(int bits) const {
    return (bits == 4 || bits == 8) && dequantize_q4_q8 ? dequantize_q4_q8 : dequantize_bits;
  }
  // p's row kernel with x exact, and its dequantization.
  RowDot exact_dot(const Problem& p) const { return p.blocks() ? dot_dequantized : dot_for(p.bits); }
  RowDequantize dequantize_for(const Problem& p) const {
    return p.blocks() ? dequantize_blocks[static_cast<int>(p.format)] : dequantize_for(p.bits);
  }
  // Whether products of weights in format `f` run here.
  bool blocks(Format f) const {
    return dequantize_blocks[static_cast<int>(f)] != nullptr && dot_blocks_int8[static_cast<int>(f)] != nullptr && dots;
  }
  // Whether products of `bits`-wide weights run here (every path: one row, batches, tiles).
  bool quantized(int bits) const { return dot_for(bits) && dequantize_for(bits) && dots && widen_f16; }
  bool half() const { return half_dot && half_widen && half_narrow; }
};

// The tiers' tables. Each x86 tier takes the table of the tier below and replaces entries.
Kernels portable_kernels();
// quantized.h's round_chunk, value by value (the portable and NEON tiers': aarch64 rounds a
// float in one instruction).
float round_chunk_portable(const float* values, int size, int8_t* out);
// The portable super-block kernels (blocks.cpp), into a table.
void add_portable_blocks(Kernels& k);
#if defined(__x86_64__)
Kernels avx2_kernels(Kernels below);
// The AVX2 tier's products with x rounded to 8 bits (avx2_int8.cpp), into its table.
void add_avx2_int8(Kernels& k);
// The AVX2 tier's attention for head sizes that are multiples of 16, and its gated unit
// (avx2_attention.cpp: both built on its vector exp).
void add_avx2_attention(Kernels& k);
// The AVX2 tier's super-block products (avx2_blocks.cpp).
void add_avx2_blocks(Kernels& k);
// The AVX2 tier's 32-value block products (avx2_small_blocks.cpp).
void add_avx2_small_blocks(Kernels& k);
// The same three compiled again with VNNI's byte dot products (avx512_vnni_*.cpp; the
// super-block products with their scales in floats, and IQ4_XS): the avx512_vbmi tier's.
void add_vnni_int8(Kernels& k);
void add_vnni_blocks(Kernels& k);
void add_vnni_small_blocks(Kernels& k);
Kernels avx512_kernels(Kernels below);
Kernels avx512_vbmi_kernels(Kernels below);
#endif
#if defined(__aarch64__)
Kernels neon_kernels();
// The NEON tier's products with x rounded to 8 bits (neon_int8.cpp): affine 4- and 8-bit
// rows and every block format, one row and tiles; x's super-blocks in order
// (grouped_super_blocks false).
void add_neon_int8(Kernels& k);
// The NEON tier with those products on `sdot` (neon_dotprod.cpp): the same results.
Kernels neon_dotprod_kernels(Kernels below);
#endif

// The table in use: chosen on first use, fixed for the process.
const Kernels& kernels();

}  // namespace lamina_kernels
