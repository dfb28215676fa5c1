// GGUF's block types held as the file stores them (ggml-common.h's layouts): the
// super-blocks of 256 values (Q2_K-Q6_K, IQ4_XS) and the blocks of 32 (Q5_0, Q5_1, Q8_0,
// IQ4_NL), their scales inside the block. One description serves every kernel: a block
// unpacks into its small integers `q`, one integer scale (and minimum) per 16 values and the
// block's float factors, `y[j] = (d * scale[j / 16]) * q[j] - dmin * min[j / 16]` — the
// order gguf-py and ggml compute it in, so dequantized rows equal theirs bit for bit (a
// 32-value block: scale 1, and its offset `m` as dmin with minimum -1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lamina_kernels {

// How a quantized weight is laid out: MLX's affine layout (packed values, separate scales
// and biases), or one of GGUF's block types (codes as the Rust side's BlockFormat).
enum class Format : int {
  affine = 0,
  q2_k = 1,
  q3_k = 2,
  q4_k = 3,
  q5_k = 4,
  q6_k = 5,
  iq4_xs = 6,
  q5_0 = 7,
  q5_1 = 8,
  q8_0 = 9,
  iq4_nl = 10,
};
constexpr int kFormats = 11;
// Values of a super-block (the most a block holds).
constexpr int kBlockValues = 256;

// Whether `f` is one of the 32-value block types (ggml's Q8_0 family: one f16 scale, and
// an offset for Q5_1, per 32 values).
inline bool small_blocks(Format f) { return f >= Format::q5_0; }

// Values of one block of `f`.
inline int block_values(Format f) { return small_blocks(f) ? 32 : kBlockValues; }

// Bytes of one block of `f` (0 for the affine layout).
inline int block_bytes(Format f) {
  switch (f) {
    case Format::q2_k: return 84;
    case Format::q3_k: return 110;
    case Format::q4_k: return 144;
    case Format::q5_k: return 176;
    case Format::q6_k: return 210;
    case Format::iq4_xs: return 136;
    case Format::q5_0: return 22;
    case Format::q5_1: return 24;
    case Format::q8_0: return 34;
    case Format::iq4_nl: return 18;
    case Format::affine: break;
  }
  return 0;
}

// The C ABI's code for a Format; anything else is refused.
inline Format format_of(int code) {
  if (code < 0 || code >= kFormats) throw std::invalid_argument("unknown weight format " + std::to_string(code));
  return static_cast<Format>(code);
}

// IQ4's table: the values its 4-bit codes stand for (ggml's kvalues_iq4nl).
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// The little-endian 16-bit word at `b` (a block's f16 factors).
inline uint16_t u16_at(const uint8_t* b) { return static_cast<uint16_t>(b[0] | (b[1] << 8)); }

// One block unpacked (see the top of this file).
struct Unpacked {
  float d = 0.0f, dmin = 0.0f;
  int8_t q[kBlockValues];
  int8_t scale[16];
  int8_t min[16];
};

// Unpacks block `block` of format `f` (not affine).
void unpack(Format f, const uint8_t* block, Unpacked& out);

// The 32-value types' products with x rounded per 32 (as MLX's affine 8-bit path): per
// block the codes, made unsigned where maddubs needs it (Q5_0's values + 16; Q5_1's are
// codes already; Q8_0's and IQ4_NL's signed bytes multiply as they are), times x's bytes,
// by d x d_x; plus the block's bias (`m - offset x d`) times x's exact sum over the block.
inline int code_offset(Format f) { return f == Format::q5_0 ? 16 : 0; }

// A block's part of a product with x rounded per 256 values (d_x its scale) from the integer
// sums: isum = sum of scale x (q . x's bytes) over 16-value groups, msum = sum of min x (x's
// byte sums). Every tier computes it so (ggml's vec_dot_*_q8_K, as scalar float terms).
inline float block_sum(float d, float dmin, float dx, int32_t isum, int32_t msum) {
  return (d * dx) * static_cast<float>(isum) - (dmin * dx) * static_cast<float>(msum);
}

// Q4_K's and Q5_K's 6-bit scale and minimum of 32-value sub-block j (ggml's
// get_scale_min_k4), from the block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace lamina_kernels
