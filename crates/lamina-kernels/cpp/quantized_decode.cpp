// One decoded position's attention over a KV cache held in MLX's affine quantization
// (lamina's QuantizedKvCache, mlx-lm's QuantizedKVCache), in one graph node: the new key
// and value are quantized as `mx.quantize` quantizes them and written at their slot (in
// place for the cache's sole owner, as DecodeAttention does), then the query attends over
// the stored positions, dequantized a part at a time into a per-thread buffer for the
// tier's attention kernel. The cache is read packed (an 8-bit cache of f32 keys at ~1/3.6
// of their bytes) and no full-precision copy of it is made.

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"

#include "common.h"
#include "decode.h"
#include "isa.h"
#include "quantized.h"

namespace lamina_kernels {

namespace {

// The attention's shapes, and how the cache is quantized.
struct QuantizedAttend {
  Attend a;
  int group, bits;

  int key_bytes() const { return a.d * bits / 8; }
  int value_bytes() const { return a.dv * bits / 8; }
};

// `n` values of `x` quantized in groups of `group` as MLX's affine quantization does:
// per group, the scale spans [min, max] in 2^bits - 1 steps and the bias is the edge of
// larger magnitude, moved so that it is a whole number of steps from zero (zero is then
// exact); values rounded to the nearest step. `packed` receives n * bits / 8 bytes, a
// little-endian bit stream (MLX's uint32 words, byte by byte).
void quantize_row(const float* x, int n, int group, int bits, uint8_t* packed, float* scales, float* biases) {
  const float steps = static_cast<float>((1 << bits) - 1);
  std::memset(packed, 0, static_cast<size_t>(n) * bits / 8);
  for (int g = 0; g < n / group; ++g) {
    const float* w = x + static_cast<size_t>(g) * group;
    float low = INFINITY, high = -INFINITY;
    for (int j = 0; j < group; ++j) {
      low = std::min(low, w[j]);
      high = std::max(high, w[j]);
    }
    const bool low_edge = std::abs(low) > std::abs(high);
    float scale = std::max((high - low) / steps, 1e-7f);
    scale = low_edge ? scale : -scale;
    const float edge = low_edge ? low : high;
    const float q0 = std::rint(edge / scale);
    float bias = 0.0f;
    if (q0 != 0.0f) {
      scale = edge / q0;
      bias = edge;
    }
    scales[g] = scale;
    biases[g] = bias;
    for (int j = 0; j < group; ++j) {
      const float q = std::min(std::max(std::rint((w[j] - bias) / scale), 0.0f), steps);
      const int bit = (g * group + j) * bits;
      const uint32_t shifted = static_cast<uint32_t>(q) << (bit & 7);
      packed[bit >> 3] |= static_cast<uint8_t>(shifted & 0xFF);
      if ((bit & 7) + bits > 8) packed[(bit >> 3) + 1] |= static_cast<uint8_t>(shifted >> 8);
    }
  }
}

// The packed rows of one part of a KV group, dequantized into `dst` [rows, width].
void dequantize_rows(const QuantizedAttend& s, const uint32_t* data, const float* scales, const float* biases,
                     int width, int g, int begin, int end, float* dst) {
  const size_t rows = static_cast<size_t>(g) * s.a.capacity;
  const int bytes = width * s.bits / 8, groups = width / s.group;
  const Problem p{nullptr,
                  reinterpret_cast<const uint8_t*>(data) + rows * bytes,
                  scales + rows * groups,
                  biases + rows * groups,
                  nullptr,
                  1,
                  s.a.capacity,
                  width,
                  s.group,
                  s.bits,
                  false};
  const RowDequantize dequantize = kernels().dequantize_for(s.bits);
  for (int r = begin; r < end; ++r) dequantize(p, r, dst + static_cast<size_t>(r - begin) * width);
}

class QuantizedDecodeAttention : public mc::Primitive {
 public:
  QuantizedDecodeAttention(mc::Stream stream, QuantizedAttend shape) : mc::Primitive(stream), s_(shape) {}

  // Inputs: q, k, v, then the cache's key data, scales, biases and value data, scales,
  // biases. Outputs: the attention, then the six cache buffers.
  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    outputs[0].set_data(mc::allocator::malloc(outputs[0].nbytes()));
    std::vector<bool> copies;
    for (int i = 0; i < 6; ++i) copies.push_back(take_buffer(inputs[3 + i], outputs[1 + i], s_.a.in_place != 0));
    for (auto& out : outputs) encoder.set_output_array(out);
    encoder.dispatch([inputs, outputs, copies, s = s_]() mutable {
      for (int i = 0; i < 6; ++i) {
        if (copies[i]) copy_words(inputs[3 + i], outputs[1 + i].data<uint32_t>());
      }
      std::vector<float> qs, ks, vs;
      const float* q = dense_input(inputs[0], qs);
      const float* k = dense_input(inputs[1], ks);
      const float* v = dense_input(inputs[2], vs);
      const Attend& a = s.a;
      uint32_t* key_data = outputs[1].data<uint32_t>();
      float *key_scales = outputs[2].data<float>(), *key_biases = outputs[3].data<float>();
      uint32_t* value_data = outputs[4].data<uint32_t>();
      float *value_scales = outputs[5].data<float>(), *value_biases = outputs[6].data<float>();
      for (int c = 0; c < a.batch * a.kv_heads; ++c) {
        const size_t row = static_cast<size_t>(c) * a.capacity + a.slot;
        quantize_row(k + static_cast<size_t>(c) * a.d, a.d, s.group, s.bits,
                     reinterpret_cast<uint8_t*>(key_data) + row * s.key_bytes(), key_scales + row * (a.d / s.group),
                     key_biases + row * (a.d / s.group));
        quantize_row(v + static_cast<size_t>(c) * a.dv, a.dv, s.group, s.bits,
                     reinterpret_cast<uint8_t*>(value_data) + row * s.value_bytes(),
                     value_scales + row * (a.dv / s.group), value_biases + row * (a.dv / s.group));
      }
      // Each part (kAttendPart positions) dequantized into buffers that stay in the core's L2.
      attend_parts(a, RowPlaces{}, q, outputs[0].data<float>(), [&](int g, Part& part) {
        thread_local std::vector<float> keys, values;
        const int n = part.end - part.begin;
        keys.resize(static_cast<size_t>(n) * a.d);
        values.resize(static_cast<size_t>(n) * a.dv);
        dequantize_rows(s, key_data, key_scales, key_biases, a.d, g, part.begin, part.end, keys.data());
        dequantize_rows(s, value_data, value_scales, value_biases, a.dv, g, part.begin, part.end, values.data());
        part.keys = keys.data();
        part.values = values.data();
        part.begin = 0;
        part.end = n;
      });
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error("lamina's quantized decode attention runs on the CPU");
  }

  const char* name() const override { return "LaminaQuantizedDecodeAttention"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const QuantizedDecodeAttention*>(&other);
    return o != nullptr && std::memcmp(&o->s_, &s_, sizeof s_) == 0;
  }

 private:
  QuantizedAttend s_;
};

// Whether `data`, `scales` and `biases` are a packed cache [B, H_kv, C, width * bits / 32]
// (u32) with f32 [B, H_kv, C, width / group] scales and biases.
bool packed_cache(const mc::array& data, const mc::array& scales, const mc::array& biases, int b, int hkv, int cap,
                  int width, int group, int bits) {
  return data.dtype() == mc::uint32 && scales.dtype() == mc::float32 && biases.dtype() == mc::float32 &&
         data.shape() == mc::Shape{b, hkv, cap, width * bits / 32} &&
         scales.shape() == mc::Shape{b, hkv, cap, width / group} && biases.shape() == scales.shape();
}

}  // namespace

}  // namespace lamina_kernels

extern "C" {

using lamina_kernels::Handle;
using namespace lamina_kernels;

int lamina_kernels_supports_quantized(int bits, int group);

// One decoded position's attention over a quantized KV cache (see QuantizedDecodeAttention).
// `cache`: six handles (key data, scales, biases; value data, scales, biases); `outs`: seven
// (the attention [B, 1, H * D_v], then the six buffers with slot `slot` written). `window`
// 0: every slot below `length`; `softcap` 0: none. f32 on the CPU, bits the tier
// dequantizes, head sizes that are multiples of the group (a multiple of 32).
__attribute__((visibility("default"))) int lamina_quantized_decode_attention(
    Handle* outs, Handle q, Handle k, Handle v, const Handle* cache, int group, int bits, int slot, int length,
    float scale, int window, float softcap, int in_place) {
  try {
    const mc::array &qa = from_handle(q), &ka = from_handle(k), &va = from_handle(v);
    std::vector<mc::array> inputs{qa, ka, va};
    for (int i = 0; i < 6; ++i) inputs.push_back(from_handle(cache[i]));
    const mc::Stream stream = mc::default_stream(mc::default_device());
    bool fits = on_cpu(stream) && window >= 0 && softcap >= 0.0f && slot >= 0 && slot < length &&
                lamina_kernels_supports_quantized(bits, group) != 0;
    for (int i = 0; i < 9; ++i) fits = fits && inputs[i].ndim() == 4;
    for (const mc::array* a : {&qa, &ka, &va}) fits = fits && a->dtype() == mc::float32;
    if (fits) {
      const int b = qa.shape(0), h = qa.shape(1), d = qa.shape(3), hkv = ka.shape(1), dv = va.shape(3);
      const int cap = inputs[3].shape(2);
      fits = qa.shape(2) == 1 && hkv > 0 && h % hkv == 0 && d % group == 0 && dv % group == 0 &&
             ka.shape() == mc::Shape{b, hkv, 1, d} && va.shape() == mc::Shape{b, hkv, 1, dv} && length <= cap &&
             packed_cache(inputs[3], inputs[4], inputs[5], b, hkv, cap, d, group, bits) &&
             packed_cache(inputs[6], inputs[7], inputs[8], b, hkv, cap, dv, group, bits);
      if (fits) {
        const Attend a{b, h, hkv, d, dv, cap, slot, length, window, scale, softcap, in_place != 0 ? 1 : 0};
        auto primitive = std::make_shared<QuantizedDecodeAttention>(stream, QuantizedAttend{a, group, bits});
        std::vector<mc::Shape> shapes{{b, 1, h * dv}};
        std::vector<mc::Dtype> dtypes{mc::float32};
        for (int i = 3; i < 9; ++i) {
          shapes.push_back(inputs[i].shape());
          dtypes.push_back(inputs[i].dtype());
        }
        auto arrays = mc::array::make_arrays(shapes, dtypes, primitive, inputs);
        for (size_t i = 0; i < arrays.size(); ++i) to_handle(&outs[i], arrays[i]);
        return 0;
      }
    }
    last_error() = "quantized decode attention: f32 on the CPU, q [B, H, 1, D] " + shape_text(qa) +
                   ", k/v [B, H_kv, 1, D] " + shape_text(ka) + ", a packed cache [B, H_kv, C, D * bits / 32] " +
                   shape_text(inputs[3]) + " (u32) with f32 scales and biases [B, H_kv, C, D / group] " +
                   shape_text(inputs[4]) + ", " + std::to_string(bits) + " bits in groups of " +
                   std::to_string(group) + ", slot " + std::to_string(slot) + " below length " +
                   std::to_string(length) + " <= C";
    return 1;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
