// A whole transformer block for one decoded token in one graph node: the CPU decode
// plan's kernel. At one token per step a small model is bound by graph nodes, not
// arithmetic (~0.25 ms of MLX dispatch per block); this does in one node what the
// per-layer fused primitives (fused.cpp) do in seven:
//
//   xn = norm(x);  q, k, v = xn Wq^T (+ bq), ...;  per-head QK-norm;  RoPE on q, k
//   the new k, v written at the caches' slot; a = attention(q, caches)
//   h = x + [norm](a Wo^T);  hn = norm(h)
//   out = h + [norm]((act(hn Wg^T) * (hn Wu^T)) Wd^T)
//
// with RMSNorms (scaling by w or 1 + w): pre-norm blocks (Llama, Qwen, Phi-3) and Gemma's
// sandwich norms (the bracketed ones). On the quantized products' kernels (quantized.h)
// and the decode attention (decode.h), in f32, as the per-layer primitives compute each
// step. The caches are written in place when the caller vouches that nothing else reads
// them (as DecodeAttention).

#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"

#include "common.h"
#include "decode.h"
#include "quantized.h"
#include "rope.h"
#include "weights.h"

namespace {

using namespace lamina_kernels;

// The products of a block: q, k, v, o, gate, up, down.
enum Product { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kProducts };
// The block's norms: before and after attention, before and after the feed-forward
// network (pre-norm blocks have the two befores; Gemma's sandwich all four).
enum Norm { kAttentionIn = 0, kAttentionOut, kMlpIn, kMlpOut, kNorms };

// An RMSNorm: its weight's input (-1: absent), epsilon, and whether it scales by 1 + w.
struct NormAt {
  int at;
  float eps;
  int unit_offset;
};

// Where each input sits (-1: absent) and what the block does.
struct BlockSpec {
  int hidden, intermediate;
  NormAt norms[kNorms];
  NormAt qk_norms[2];  // per-head RMSNorm of q and k before RoPE
  int weight_at[kProducts];  // the packed weight; its scales and biases follow
  Operand operands[kProducts];
  int bias_at[3];  // q, k, v biases
  int keys_at, values_at, periods_at;
  int places_at;  // RowPlaces (-1: none)
  Gate gate;
  int rotate;  // RoPE on q and k
  RopeSpec rope;
  Attend attend;
};

// x * rsqrt(mean(x^2) + eps) * w (or * (1 + w)) per row of `k` values, as the RMSNorm
// primitive computes it in f32; `out` may be `x`.
void rms_norm_rows(const float* x, const mc::array& weight, const NormAt& norm, int rows, int k, float* out) {
  const float* w = weight.data<float>();
  std::vector<float> offset;  // 1 + w, only for the norms that scale by it
  if (norm.unit_offset) {
    offset.assign(w, w + k);
    for (float& v : offset) v += 1.0f;
    w = offset.data();
  }
  for (int r = 0; r < rows; ++r) {
    const float* row = x + static_cast<size_t>(r) * k;
    float* o = out + static_cast<size_t>(r) * k;
    const float scale = rms_scale(row, k, norm.eps);
    for (int i = 0; i < k; ++i) o[i] = (row[i] * scale) * w[i];
  }
}

// For each (product, out) of `targets`: `out` [rows, N] = x [rows, K] @ dequantize(the
// product's weight)^T (+ its bias), the products computed together
// (quantized_products_sharing_x: x rounded once).
void products(const std::vector<mc::array>& in, const BlockSpec& b, std::initializer_list<std::pair<int, float*>> targets,
              const float* x, int rows, int k) {
  std::vector<Problem> problems;
  for (const auto& [which, out] : targets) {
    const int at = b.weight_at[which];
    problems.push_back(problem_of(b.operands[which], x, in[at], in[at + 1], in[at + 2], out, rows, k));
  }
  quantized_products_sharing_x(problems.data(), static_cast<int>(problems.size()));
  for (const auto& [which, out] : targets) {
    if (which > kV || b.bias_at[which] < 0) continue;
    const mc::array& bias = in[b.bias_at[which]];
    const float* add = bias.data<float>();
    const size_t n = bias.size();
    for (int r = 0; r < rows; ++r) {
      for (size_t c = 0; c < n; ++c) out[r * n + c] += add[c];
    }
  }
}

// `residual += norm(update)` (or `residual += update` without the norm).
void add_normed(const std::vector<mc::array>& in, const NormAt& norm, float* update, int rows, int k,
                float* residual) {
  if (norm.at >= 0) rms_norm_rows(update, in[norm.at], norm, rows, k, update);
  for (size_t i = 0; i < static_cast<size_t>(rows) * k; ++i) residual[i] += update[i];
}

void run_block(const std::vector<mc::array>& in, const BlockSpec& b, float* out, float* keys, float* values) {
  const Attend& a = b.attend;
  const int rows = a.batch, hidden = b.hidden;
  const size_t q_width = static_cast<size_t>(a.heads) * a.d, kv_width = static_cast<size_t>(a.kv_heads) * a.d,
               v_width = static_cast<size_t>(a.kv_heads) * a.dv;
  std::vector<float> dense;  // x read in place unless strided
  const float* x = dense_input(in[0], dense);
  const size_t elements = static_cast<size_t>(rows) * hidden;
  std::vector<float> normed(elements), q(rows * q_width), k(rows * kv_width), v(rows * v_width);
  rms_norm_rows(x, in[b.norms[kAttentionIn].at], b.norms[kAttentionIn], rows, hidden, normed.data());
  products(in, b, {{kQ, q.data()}, {kK, k.data()}, {kV, v.data()}}, normed.data(), rows, hidden);
  if (b.qk_norms[0].at >= 0) {
    rms_norm_rows(q.data(), in[b.qk_norms[0].at], b.qk_norms[0], rows * a.heads, a.d, q.data());
    rms_norm_rows(k.data(), in[b.qk_norms[1].at], b.qk_norms[1], rows * a.kv_heads, a.d, k.data());
  }
  std::vector<int32_t> stored_places;
  const RowPlaces places = b.places_at >= 0 ? row_places(in, b.places_at, stored_places) : RowPlaces{};
  if (b.rotate) {
    std::vector<float> periods;
    if (b.rope.has_freqs) periods = dense_f32(in[b.periods_at]);
    // Each batch row's heads at the row's own position.
    for (int row = 0; row < rows; ++row) {
      RopeSpec rope = b.rope;
      rope.offset = places.position(row, rope.offset);
      for (auto [t, heads] : {std::pair{&q, a.heads}, std::pair{&k, a.kv_heads}}) {
        const size_t d = a.d;
        float* data = t->data() + static_cast<size_t>(row) * heads * d;
        rotate_rows<float>([data, d](size_t r) { return data + r * d; }, data, heads, 1, a.d, rope, periods.data());
      }
    }
  }
  write_slot(a, k.data(), v.data(), keys, values);
  std::vector<float> attended(static_cast<size_t>(rows) * a.heads * a.dv), update(elements);
  attend_decode(a, places, q.data(), keys, values, attended.data());
  std::memcpy(out, x, elements * sizeof(float));
  products(in, b, {{kO, update.data()}}, attended.data(), rows, a.heads * a.dv);
  add_normed(in, b.norms[kAttentionOut], update.data(), rows, hidden, out);  // h
  rms_norm_rows(out, in[b.norms[kMlpIn].at], b.norms[kMlpIn], rows, hidden, normed.data());
  std::vector<float> gate(static_cast<size_t>(rows) * b.intermediate), up(gate.size());
  products(in, b, {{kGate, gate.data()}, {kUp, up.data()}}, normed.data(), rows, hidden);
  kernels().gated(b.gate, gate.data(), up.data(), gate.size());
  products(in, b, {{kDown, update.data()}}, gate.data(), rows, b.intermediate);
  add_normed(in, b.norms[kMlpOut], update.data(), rows, hidden, out);
}

class DecodeBlock : public mc::Primitive {
 public:
  DecodeBlock(mc::Stream stream, BlockSpec spec) : mc::Primitive(stream), b_(spec) {}

  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    outputs[0].set_data(mc::allocator::malloc(outputs[0].nbytes()));
    const CacheOutputs caches =
        CacheOutputs::take(inputs[b_.keys_at], inputs[b_.values_at], outputs, b_.attend.in_place != 0);
    for (auto& out : outputs) encoder.set_output_array(out);
    encoder.dispatch([inputs, outputs, caches, b = b_]() mutable {
      caches.fill(inputs[b.keys_at], inputs[b.values_at], outputs);
      run_block(inputs, b, outputs[0].data<float>(), outputs[1].data<float>(), outputs[2].data<float>());
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error("lamina's decode block runs on the CPU");
  }

  const char* name() const override { return "LaminaDecodeBlock"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const DecodeBlock*>(&other);
    return o != nullptr && std::memcmp(&o->b_, &b_, sizeof b_) == 0;
  }

 private:
  BlockSpec b_;
};

}  // namespace

extern "C" {

// The block's shapes and settings (mirrors the Rust side's `LaminaBlock`).
struct LaminaBlock {
  int heads, kv_heads, head_dim;
  float norm_eps[4];  // before/after attention, before/after the feed-forward network
  int norm_unit_offset[4];
  float qk_norm_eps[2];
  int qk_norm_unit_offset[2];
  int gate;  // 1 SiLU, 2 GELU with tanh, 3 GELU with erf
  int rope_dims;  // 0: no RoPE
  int rope_traditional;
  float rope_base, rope_scale;
  int rope_offset;  // the token's position
  int slot, length, window;
  float scale, softcap;
  int in_place;
};

// One decoded token through a block (see the top of this file). `x` [B, 1, hidden] f32;
// `norms` the four RMSNorm weights [hidden] (empty handles for absent ones: the first and
// third are required); `qk_norms` the per-head q and k norms [D] (empty: none); `ws`/`ss`/
// `bs` the seven products' packed weights, scales and biases (q, k, v, o, gate, up, down)
// with `groups`/`bits`/`activations` (Activations: 0 exact, 1 x rounded to 8 bits, 2 the same, top exact) and
// `formats` (0 affine, else a GGUF super-block Format: its scales and biases the weight again); `qkv_biases` f32 biases of q, k, v (empty: none); `keys`/`values`
// the caches [B, H_kv, C, D]; `periods` an empty handle or RoPE's [dims / 2]; `places` an
// empty handle or int32 [B, 2] (RowPlaces: each row's first slot and position). Fills `out`
// [B, 1, hidden] and the caches with the token's slot written. CPU and f32 only (returns 1
// with the reason otherwise).
__attribute__((visibility("default"))) int lamina_decode_block(Handle* out, Handle* keys_out, Handle* values_out,
                                                               Handle x, const Handle* norms, const Handle* qk_norms,
                                                               const Handle* ws, const Handle* ss, const Handle* bs,
                                                               const int* groups, const int* bits,
                                                               const int* activations, const int* formats,
                                                               const Handle* qkv_biases, Handle keys, Handle values,
                                                               Handle periods, Handle places,
                                                               const LaminaBlock* block) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::array &ka = from_handle(keys), &va = from_handle(values);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const LaminaBlock& s = *block;
    std::string why;
    bool fits = on_cpu(stream) && xa.dtype() == mc::float32 && xa.ndim() == 3 && xa.shape(1) == 1 &&
                s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0 && s.gate >= 1 && s.gate <= 3 &&
                norms[kAttentionIn].ctx != nullptr && norms[kMlpIn].ctx != nullptr && ws[kGate].ctx != nullptr;
    const int batch = fits ? xa.shape(0) : 0, hidden = fits ? xa.shape(2) : 0, d = s.head_dim;
    const int intermediate = fits ? static_cast<int>(from_handle(ws[kGate]).shape(0)) : 0;
    const int widths[kProducts][2] = {{s.heads * d, hidden}, {s.kv_heads * d, hidden}, {s.kv_heads * d, hidden},
                                      {hidden, s.heads * d}, {intermediate, hidden},   {intermediate, hidden},
                                      {hidden, intermediate}};
    std::vector<mc::array> inputs{xa};
    // Appends an optional f32 [n] vector; returns its input index (-1 when absent).
    auto vector_at = [&](Handle h, int n) {
      if (h.ctx == nullptr) return -1;
      const mc::array& a = from_handle(h);
      if (a.dtype() != mc::float32 || a.ndim() != 1 || a.shape(0) != n) {
        fits = false;
        why = "a norm or bias is not f32 [" + std::to_string(n) + "]";
      }
      inputs.push_back(a);
      return static_cast<int>(inputs.size()) - 1;
    };
    BlockSpec spec{};
    for (int i = 0; i < kNorms && fits; ++i) {
      spec.norms[i] = NormAt{vector_at(norms[i], hidden), s.norm_eps[i], s.norm_unit_offset[i]};
    }
    for (int i = 0; i < 2 && fits; ++i) {
      spec.qk_norms[i] = NormAt{vector_at(qk_norms[i], d), s.qk_norm_eps[i], s.qk_norm_unit_offset[i]};
    }
    fits = fits && (spec.qk_norms[0].at >= 0) == (spec.qk_norms[1].at >= 0);
    for (int i = 0; i < kProducts && fits; ++i) {
      const mc::array &w = from_handle(ws[i]), &sc = from_handle(ss[i]), &bi = from_handle(bs[i]);
      const int n = widths[i][0], k = widths[i][1];
      spec.operands[i] = Operand::of(groups[i], bits[i], activations[i], formats[i]);
      fits = operand_fits(w, sc, bi, n, k, spec.operands[i]);
      if (!fits) why = "product " + std::to_string(i) + " does not fit";
      spec.weight_at[i] = static_cast<int>(inputs.size());
      inputs.insert(inputs.end(), {w, sc, bi});
    }
    for (int i = 0; i < 3 && fits; ++i) spec.bias_at[i] = vector_at(qkv_biases[i], widths[i][0]);
    const int cap = ka.ndim() == 4 ? ka.shape(2) : 0;
    fits = fits && ka.dtype() == mc::float32 && va.dtype() == mc::float32 &&
           ka.shape() == mc::Shape{batch, s.kv_heads, cap, d} && va.shape() == mc::Shape{batch, s.kv_heads, cap, d} &&
           s.slot >= 0 && s.slot < s.length && s.length <= cap && s.window >= 0 && s.softcap >= 0.0f &&
           (places.ctx == nullptr || row_places_fit(from_handle(places), batch));
    const bool has_periods = periods.ctx != nullptr;
    if (fits && s.rope_dims > 0) {
      fits = s.rope_dims % 2 == 0 && s.rope_dims <= d;
      if (has_periods) spec.periods_at = vector_at(periods, s.rope_dims / 2);
    }
    if (!fits) {
      last_error() = "decode block: f32 x [B, 1, hidden] on the CPU, quantized products the kernels take, f32 "
                     "norms and biases, caches [B, H_kv, C, D] with slot < length <= C, row places int32 [B, 2]: " +
                     why;
      return 1;
    }
    spec.hidden = hidden;
    spec.intermediate = intermediate;
    spec.gate = static_cast<Gate>(s.gate);
    spec.rotate = s.rope_dims > 0 ? 1 : 0;
    spec.rope = RopeSpec{s.rope_dims, s.rope_traditional != 0, has_periods, s.rope_base, s.rope_scale, s.rope_offset};
    spec.attend = Attend{batch, s.heads, s.kv_heads, d, d, cap, s.slot, s.length, s.window,
                         s.scale, s.softcap, s.in_place != 0 ? 1 : 0};
    spec.places_at = -1;
    if (places.ctx != nullptr) {
      spec.places_at = static_cast<int>(inputs.size());
      inputs.push_back(from_handle(places));
    }
    spec.keys_at = static_cast<int>(inputs.size());
    spec.values_at = spec.keys_at + 1;
    inputs.insert(inputs.end(), {ka, va});
    auto primitive = std::make_shared<DecodeBlock>(stream, spec);
    auto arrays = mc::array::make_arrays({xa.shape(), ka.shape(), va.shape()}, {mc::float32, mc::float32, mc::float32},
                                         primitive, inputs);
    to_handle(out, arrays[0]);
    to_handle(keys_out, arrays[1]);
    to_handle(values_out, arrays[2]);
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
