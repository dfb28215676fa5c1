// GGUF's super-block types held as the file stores them (ggml-common.h's layouts): 256
// values a block, their scales inside the block. One description serves every kernel: a
// block unpacks into 256 small integers `q`, one integer scale (and minimum) per 16 values
// and the block's float factors, `y[j] = (d * scale[j / 16]) * q[j] - dmin * min[j / 16]`
// — the order gguf-py and ggml compute it in, so dequantized rows equal theirs bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lamina_kernels {

// How a quantized weight is laid out: MLX's affine layout (packed values, separate scales
// and biases), or one of GGUF's super-block types (codes as the Rust side's BlockFormat).
enum class Format : int { affine = 0, q2_k = 1, q3_k = 2, q4_k = 3, q5_k = 4, q6_k = 5, iq4_xs = 6 };
constexpr int kFormats = 7;
// Values of a super-block.
constexpr int kBlockValues = 256;

// Bytes of one block of `f` (0 for the affine layout).
inline int block_bytes(Format f) {
  switch (f) {
    case Format::q2_k: return 84;
    case Format::q3_k: return 110;
    case Format::q4_k: return 144;
    case Format::q5_k: return 176;
    case Format::q6_k: return 210;
    case Format::iq4_xs: return 136;
    case Format::affine: break;
  }
  return 0;
}

// The C ABI's code for a Format; anything else is refused.
inline Format format_of(int code) {
  if (code < 0 || code >= kFormats) throw std::invalid_argument("unknown weight format " + std::to_string(code));
  return static_cast<Format>(code);
}

// One block unpacked (see the top of this file).
struct Unpacked {
  float d = 0.0f, dmin = 0.0f;
  int8_t q[kBlockValues];
  int8_t scale[16];
  int8_t min[16];
};

// Unpacks block `block` of format `f` (not affine).
void unpack(Format f, const uint8_t* block, Unpacked& out);

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
