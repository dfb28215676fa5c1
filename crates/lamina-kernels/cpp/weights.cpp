// A quantized operand's checks and products (weights.h), and the primitive that dequantizes
// a super-block weight (its gradients, `Linear::dense_weight`, embedding rows).

#include "weights.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "isa.h"

extern "C" int lamina_kernels_supports_quantized(int bits, int group);

namespace lamina_kernels {

bool operand_fits(const mc::array& w, const mc::array& scales, const mc::array& biases, int n, int k,
                  const Operand& o) {
  if (w.ndim() != 2 || (n >= 0 && w.shape(0) != n)) return false;
  const int rows = static_cast<int>(w.shape(0));
  if (o.format != Format::affine) {
    const int values = block_values(o.format);
    return w.dtype() == mc::uint8 && k % values == 0 && kernels().blocks(o.format) &&
           static_cast<int64_t>(w.shape(1)) == static_cast<int64_t>(k) / values * block_bytes(o.format);
  }
  const bool scales_read =
      (scales.dtype() == mc::float32 || scales.dtype() == mc::float16) && biases.dtype() == scales.dtype();
  return w.dtype() == mc::uint32 && scales_read && o.group > 0 && lamina_kernels_supports_quantized(o.bits, o.group) &&
         k % o.group == 0 && static_cast<int64_t>(w.shape(1)) * 32 == static_cast<int64_t>(k) * o.bits &&
         scales.shape() == mc::Shape{rows, k / o.group} && biases.shape() == scales.shape();
}

Problem problem_of(const Operand& o, const float* x, const mc::array& w, const mc::array& scales,
                   const mc::array& biases, float* out, int m, int k) {
  Problem p{x, w.data<uint8_t>(), scales.data<void>(), biases.data<void>(), out, m, static_cast<int>(w.shape(0)), k,
            o.group, o.bits, scales.dtype() == mc::float16, o.activations};
  p.format = o.format;
  if (p.blocks()) p.group = block_values(o.format), p.bits = 8;
  return p;
}

namespace {

class DequantizeBlocks : public mc::UnaryPrimitive {
 public:
  DequantizeBlocks(mc::Stream stream, Format format) : mc::UnaryPrimitive(stream), format_(format) {}

  void eval_cpu(const std::vector<mc::array>& inputs, mc::array& out) override {
    out.set_data(mc::allocator::malloc(out.nbytes()));
    auto& encoder = mc::cpu::get_command_encoder(stream());
    encoder.set_input_array(inputs[0]);
    encoder.set_output_array(out);
    encoder.dispatch([w = inputs[0], dst = out.data<float>(), n = static_cast<int>(out.shape(0)),
                      k = static_cast<int>(out.shape(1)), format = format_]() {
      Problem p{nullptr, w.data<uint8_t>(), nullptr, nullptr, nullptr, 1, n, k, block_values(format), 8, false};
      p.format = format;
      const RowDequantize dequantize = kernels().dequantize_for(p);
      Pool& pool = Pool::get();
      const int tasks = std::min(n, pool.size() * 4);
      pool.run(tasks, [&](int t) {
        const auto [begin, end] = share(n, t, tasks);
        for (int r = begin; r < end; ++r) dequantize(p, r, dst + static_cast<size_t>(r) * k);
      });
    });
  }

  void eval_gpu(const std::vector<mc::array>&, mc::array&) override {
    throw std::runtime_error("GGUF super-block weights are computed on the CPU");
  }

  const char* name() const override { return "LaminaDequantizeBlocks"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const DequantizeBlocks*>(&other);
    return o != nullptr && o->format_ == format_;
  }

  std::vector<mc::Shape> output_shapes(const std::vector<mc::array>& inputs) override {
    const int blocks = static_cast<int>(inputs[0].shape(1)) / block_bytes(format_);
    return {mc::Shape{inputs[0].shape(0), blocks * block_values(format_)}};
  }

 private:
  Format format_;
};

}  // namespace

mc::array dequantized_blocks(const mc::array& w, Format format, const mc::Stream& stream) {
  if (format == Format::affine || w.dtype() != mc::uint8 || w.ndim() != 2 || w.shape(1) % block_bytes(format) != 0) {
    throw std::invalid_argument("dequantize blocks: a u8 [N, blocks * block bytes] weight of a GGUF format, got " +
                                shape_text(w));
  }
  const int k = static_cast<int>(w.shape(1)) / block_bytes(format) * block_values(format);
  return mc::array(mc::Shape{w.shape(0), k}, mc::float32, std::make_shared<DequantizeBlocks>(stream, format), {w});
}

mc::array weight_product(const mc::array& x, const mc::array& w, const mc::array& scales, const mc::array& biases,
                         const Operand& o, bool transpose, const mc::Stream& stream) {
  if (o.format == Format::affine) {
    return mc::quantized_matmul(x, w, scales, biases, transpose, o.group, o.bits, "affine", stream);
  }
  const mc::array dense = dequantized_blocks(w, o.format, stream);
  return mc::matmul(x, transpose ? mc::transpose(dense, stream) : dense, stream);
}

}  // namespace lamina_kernels

extern "C" {

using lamina_kernels::Handle;

// `out` = the f32 values [N, K] of a GGUF super-block weight `w` u8 [N, K / 256 * block
// bytes] in `format` (1 Q2_K, 2 Q3_K, 3 Q4_K, 4 Q5_K, 5 Q6_K, 6 IQ4_XS). CPU only.
// Returns 0, or 1 with the reason in lamina_kernels_last_error().
__attribute__((visibility("default"))) int lamina_dequantize_blocks(Handle* out, Handle w, int format) {
  try {
    const mlx::core::Stream stream = mlx::core::default_stream(mlx::core::default_device());
    if (!lamina_kernels::on_cpu(stream)) {
      lamina_kernels::last_error() = "dequantize blocks: GGUF super-block weights are computed on the CPU";
      return 1;
    }
    lamina_kernels::to_handle(out, lamina_kernels::dequantized_blocks(lamina_kernels::from_handle(w),
                                                                      lamina_kernels::format_of(format), stream));
    return 0;
  } catch (const std::exception& e) {
    lamina_kernels::last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
