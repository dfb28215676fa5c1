// RMSNorm and RoPE as single graph nodes on the CPU. MLX's CPU backend has no kernel for
// either: `fast::rms_norm` and `fast::rope` expand into their fallback graphs there (~11
// and ~29 nodes, ~20 and ~50 us per call for a decoded token), which at one token per
// step cost more than the block's matrix products. These compute the same values in one
// node each (f32, bf16, f16): the fallbacks' formulas, in their order of operations, with
// their roundings. Gradients go
// through MLX's own ops (the vjp of the fallback), so training is unchanged.

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"
#include "mlx/transforms.h"

#include "common.h"
#include "rope.h"

namespace {

using namespace lamina_kernels;

// Calls `body.template operator()<T>()` with T the C++ type of `dtype` (f32, bf16, f16).
template <typename Body>
void with_type(mc::Dtype dtype, Body&& body) {
  if (dtype == mc::bfloat16) {
    body.template operator()<mc::bfloat16_t>();
  } else if (dtype == mc::float16) {
    body.template operator()<mc::float16_t>();
  } else {
    body.template operator()<float>();
  }
}

// Rows of x [..., K] normalised by their root mean square, times `weight` (plus one with
// `unit_offset`, Gemma's convention) when there is one.
struct NormSpec {
  float eps;
  bool has_weight;
  bool unit_offset;
};

// MLX's fallback: x * rsqrt(mean(x^2) + eps), then * weight.
mc::array mlx_rms_norm(const std::vector<mc::array>& in, NormSpec spec, mc::Stream s) {
  std::optional<mc::array> weight;
  if (spec.has_weight) {
    weight = spec.unit_offset ? mc::add(in[1], mc::array(1.0f, in[1].dtype()), s) : in[1];
  }
  return mc::fast::rms_norm(in[0], weight, spec.eps, s);
}

// x * rsqrt(mean(x^2) + eps) in f32, rounded to T, then times the weight (rounded again).
template <typename T>
void normalize(const std::vector<mc::array>& inputs, T* out, NormSpec spec) {
  Rows rows(inputs[0]);
  const int k = static_cast<int>(rows.width());
  std::vector<float> weights;
  if (spec.has_weight) {
    weights = dense_f32(inputs[1]);
    if (spec.unit_offset) {
      for (float& w : weights) w = rounded<T>(w + 1.0f);
    }
  }
  for (size_t r = 0; r < rows.count(); ++r) {
    const float* row = rows(r);
    T* o = out + r * k;
    const float scale = rms_scale(row, k, spec.eps);
    if (spec.has_weight) {
      for (int i = 0; i < k; ++i) o[i] = static_cast<T>(rounded<T>(row[i] * scale) * weights[i]);
    } else {
      for (int i = 0; i < k; ++i) o[i] = static_cast<T>(row[i] * scale);
    }
  }
}


mc::array mlx_rope(const std::vector<mc::array>& in, RopeSpec spec, mc::Stream s) {
  std::optional<float> base;
  std::optional<mc::array> freqs;
  if (spec.has_freqs) {
    freqs = in[1];
  } else {
    base = spec.base;
  }
  return mc::fast::rope(in[0], spec.dims, spec.traditional, base, spec.scale, spec.offset, freqs, s);
}

// The rotation of x's rows (see rope.h), its values read as f32.
template <typename T>
void rotate(const std::vector<mc::array>& inputs, T* out, RopeSpec spec) {
  const mc::array& x = inputs[0];
  std::vector<float> periods;
  const int nd = static_cast<int>(x.ndim());
  const int d = static_cast<int>(x.shape(nd - 1));
  const int l = static_cast<int>(x.shape(nd - 2));
  if (spec.has_freqs) periods = dense_f32(inputs[1]);
  Rows rows(x);
  rotate_rows<T>(rows, out, x.size() / (static_cast<size_t>(l) * d), l, d, spec, periods.data());
}


// One output shaped and typed as the first input, computed by `Op::compute<T>` on the
// CPU (T the output's element type), with the gradient of `Op::mlx` (the same values in
// MLX's ops).
template <typename Op>
class RowPrimitive : public mc::Primitive {
 public:
  using Spec = typename Op::Spec;

  RowPrimitive(mc::Stream stream, Spec spec) : mc::Primitive(stream), spec_(spec) {}

  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    mc::array& out = outputs[0];
    out.set_data(mc::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
    encoder.dispatch([inputs, data = out.data<void>(), dtype = out.dtype(), spec = spec_]() {
      with_type(dtype, [&]<typename T>() { Op::template compute<T>(inputs, static_cast<T*>(data), spec); });
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error(std::string(Op::kName) + " runs on the CPU");
  }

  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>&) override {
    const Spec spec = spec_;
    const mc::Stream s = stream();
    return vjp_of([spec, s](const std::vector<mc::array>& in) { return Op::mlx(in, spec, s); }, primals, cotangents,
                  argnums);
  }

  const char* name() const override { return Op::kName; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const RowPrimitive*>(&other);
    return o != nullptr && Op::same(o->spec_, spec_);
  }

 private:
  Spec spec_;
};

struct NormOp {
  using Spec = NormSpec;
  static constexpr const char* kName = "LaminaRmsNorm";
  template <typename T>
  static void compute(const std::vector<mc::array>& inputs, T* out, Spec spec) {
    normalize<T>(inputs, out, spec);
  }
  static mc::array mlx(const std::vector<mc::array>& in, Spec spec, mc::Stream s) { return mlx_rms_norm(in, spec, s); }
  static bool same(const Spec& a, const Spec& b) {
    return a.eps == b.eps && a.has_weight == b.has_weight && a.unit_offset == b.unit_offset;
  }
};

struct RopeOp {
  using Spec = RopeSpec;
  static constexpr const char* kName = "LaminaRope";
  template <typename T>
  static void compute(const std::vector<mc::array>& inputs, T* out, Spec spec) {
    rotate<T>(inputs, out, spec);
  }
  static mc::array mlx(const std::vector<mc::array>& in, Spec spec, mc::Stream s) { return mlx_rope(in, spec, s); }
  static bool same(const Spec& a, const Spec& b) {
    return a.dims == b.dims && a.traditional == b.traditional && a.has_freqs == b.has_freqs && a.base == b.base &&
           a.scale == b.scale && a.offset == b.offset;
  }
};

bool floating(mc::Dtype dtype) { return dtype == mc::float32 || dtype == mc::bfloat16 || dtype == mc::float16; }

}  // namespace

namespace lamina_kernels {

template <typename T>
void rotate_rows(const RowSource& rows, T* out, size_t planes, int l, int d, RopeSpec spec, const float* periods) {
  const int half = spec.dims / 2;
  // The fallback's inverse frequencies: exp(-i * log(base) / half), or 1 / periods.
  std::vector<float> inverse(half);
  if (spec.has_freqs) {
    for (int i = 0; i < half; ++i) inverse[i] = 1.0f / periods[i];
  } else {
    const float step = std::log(spec.base) / static_cast<float>(half);
    for (int i = 0; i < half; ++i) inverse[i] = std::exp(-static_cast<float>(i) * step);
  }
  std::vector<float> cosines(static_cast<size_t>(l) * half), sines(cosines.size());
  for (int t = 0; t < l; ++t) {
    const float position = (static_cast<float>(t) + static_cast<float>(spec.offset)) * spec.scale;
    for (int i = 0; i < half; ++i) {
      const float theta = position * inverse[i];
      cosines[static_cast<size_t>(t) * half + i] = rounded<T>(std::cos(theta));
      sines[static_cast<size_t>(t) * half + i] = rounded<T>(std::sin(theta));
    }
  }
  // Split halves pair feature i with i + half; traditional pairs 2i with 2i + 1.
  const int stride = spec.traditional ? 2 : 1;
  const int partner = spec.traditional ? 1 : half;
  for (size_t p = 0; p < planes; ++p) {
    for (int t = 0; t < l; ++t) {
      const size_t row = p * l + t;
      const float* in = rows(row);
      T* o = out + row * d;
      const float* c = cosines.data() + static_cast<size_t>(t) * half;
      const float* s = sines.data() + static_cast<size_t>(t) * half;
      for (int i = 0; i < half; ++i) {
        const float a = in[i * stride], b = in[i * stride + partner];
        const float ac = rounded<T>(a * c[i]), bs = rounded<T>(b * s[i]);
        const float as = rounded<T>(a * s[i]), bc = rounded<T>(b * c[i]);
        o[i * stride] = static_cast<T>(ac - bs);
        o[i * stride + partner] = static_cast<T>(as + bc);
      }
      if (static_cast<const void*>(in) != static_cast<const void*>(o)) {
        for (int i = spec.dims; i < d; ++i) o[i] = static_cast<T>(in[i]);
      }
    }
  }
}

template void rotate_rows<float>(const RowSource&, float*, size_t, int, int, RopeSpec, const float*);
template void rotate_rows<mc::bfloat16_t>(const RowSource&, mc::bfloat16_t*, size_t, int, int, RopeSpec,
                                          const float*);
template void rotate_rows<mc::float16_t>(const RowSource&, mc::float16_t*, size_t, int, int, RopeSpec, const float*);

}  // namespace lamina_kernels

extern "C" {

// RMSNorm of x's rows (`weight` may be an empty handle: no weight; `unit_offset`: times
// 1 + weight). lamina's kernel for f32 on the CPU, MLX's op otherwise. 0, or 1 with the
// reason in lamina_kernels_last_error().
__attribute__((visibility("default"))) int lamina_rms_norm(Handle* out, Handle x, Handle weight, float eps,
                                                           int unit_offset) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const bool has_weight = weight.ctx != nullptr;
    const NormSpec spec{eps, has_weight, has_weight && unit_offset != 0};
    std::vector<mc::array> inputs{xa};
    if (has_weight) inputs.push_back(from_handle(weight));
    if (xa.ndim() < 1 || (has_weight && (inputs[1].ndim() != 1 || inputs[1].shape(0) != xa.shape().back()))) {
      last_error() = "rms_norm: the weight must be [K] for x [..., K]";
      return 1;
    }
    const bool ours = on_cpu(stream) && floating(xa.dtype()) && xa.shape().back() > 0 &&
                      (!has_weight || inputs[1].dtype() == xa.dtype());
    if (!ours) {
      to_handle(out, mlx_rms_norm(inputs, spec, stream));
      return 0;
    }
    to_handle(out, mc::array(xa.shape(), xa.dtype(), std::make_shared<RowPrimitive<NormOp>>(stream, spec), inputs));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

// RoPE of x [..., L, D] at positions offset.. (as mlx::core::fast::rope: `freqs` may be an
// empty handle, then the frequencies are base^(-2i/dims)). lamina's kernel for f32 on the
// CPU, MLX's op otherwise.
__attribute__((visibility("default"))) int lamina_rope(Handle* out, Handle x, int dims, int traditional,
                                                       float base, float scale, int offset, Handle freqs) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const bool has_freqs = freqs.ctx != nullptr;
    const RopeSpec spec{dims, traditional != 0, has_freqs, base, scale, offset};
    std::vector<mc::array> inputs{xa};
    if (has_freqs) inputs.push_back(from_handle(freqs));
    if (xa.ndim() < 2 || dims <= 0 || dims % 2 != 0 || dims > xa.shape().back() ||
        (has_freqs && (inputs[1].ndim() != 1 || inputs[1].shape(0) != dims / 2))) {
      last_error() = "rope: dims must be even and at most x's last axis, and freqs [dims / 2]";
      return 1;
    }
    const bool ours = on_cpu(stream) && floating(xa.dtype()) && (!has_freqs || inputs[1].dtype() == mc::float32);
    if (!ours) {
      to_handle(out, mlx_rope(inputs, spec, stream));
      return 0;
    }
    to_handle(out, mc::array(xa.shape(), xa.dtype(), std::make_shared<RowPrimitive<RopeOp>>(stream, spec), inputs));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
