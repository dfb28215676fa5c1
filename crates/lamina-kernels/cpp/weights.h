// A quantized weight as the primitives take it from the C ABI: its layout (MLX's affine
// one or a GGUF super-block format, blocks.h), the checks that it fits, the kernels' Problem
// for it, and its product in MLX's own ops (gradients, other devices).
#pragma once

#include <string>

#include "common.h"
#include "quantized.h"

namespace lamina_kernels {

// How one quantized operand is laid out and read. Its inputs are three arrays: packed
// values, scales, biases (affine); the blocks, then the same array twice (a format).
struct Operand {
  int group;
  int bits;
  Activations activations;
  Format format;

  bool operator==(const Operand& o) const {
    return group == o.group && bits == o.bits && activations == o.activations && format == o.format;
  }
  // The C ABI's codes (activations: 0 exact, 1 int8, 2 int8 with the top exact; format:
  // 0 affine, else a Format), refused when unknown.
  static Operand of(int group, int bits, int activations, int format) {
    return {group, bits, activations_of(activations), format_of(format)};
  }
};

// Whether `w` (with `scales` and `biases`) is a weight [n, k] the kernels take as `o`
// (n < 0: any number of rows): for the affine layout u32 [n, k * bits / 32] with f32 or f16
// scales and biases [n, k / group]; for a format u8 [n, k / 256 * block bytes].
bool operand_fits(const mc::array& w, const mc::array& scales, const mc::array& biases, int n, int k,
                  const Operand& o);

// The kernels' problem for x [m, k] against the weight, into out [m, n].
Problem problem_of(const Operand& o, const float* x, const mc::array& w, const mc::array& scales,
                   const mc::array& biases, float* out, int m, int k);

// x @ dequantize(w)^T (or x @ dequantize(w) with `transpose` false) in MLX's ops: its
// quantized_matmul for the affine layout, a matmul with the dequantized blocks for a format.
mc::array weight_product(const mc::array& x, const mc::array& w, const mc::array& scales, const mc::array& biases,
                         const Operand& o, bool transpose, const mc::Stream& stream);

// The f32 values [n, k] of a super-block weight u8 [n, k / 256 * block bytes] (one graph
// node; CPU only).
mc::array dequantized_blocks(const mc::array& w, Format format, const mc::Stream& stream);

}  // namespace lamina_kernels
