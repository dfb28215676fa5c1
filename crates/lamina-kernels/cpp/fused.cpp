// Fused primitives for decoding on the CPU. At one token per step a transformer block is
// bound by graph nodes, not arithmetic (~0.25 ms of MLX dispatch per block): these do in
// one node what the plain graph does in several.
//
// - QuantizedProducts: several quantized products of one x (q/k/v), or a gated unit's
//   `act(x Wg^T) * (x Wu^T)` (SwiGLU, GeGLU), on the quantized matmul's kernels.
// - DecodeAttention: one query position against a KV cache: writes the new key and value
//   into the cache buffers (in place when the caller vouches that nothing else reads
//   them there; MLX's own donation check cannot tell while the previous step still runs)
//   and attends over the stored slots (GQA, sliding window, soft-capping), in f32 with
//   the softmax's maximum subtracted.

#include <cmath>
#include <cstring>
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

#include "common.h"
#include "decode.h"
#include "isa.h"
#include "quantized.h"
#include "rope.h"
#include "weights.h"

namespace lamina_kernels {

// One part on the tier's attention kernel (isa.h): the one for head sizes that are
// multiples of 16 when it applies, the general one otherwise.
void attend_any(const Part& p) {
  const Kernels& k = kernels();
  if (k.attend16 != nullptr && p.d % 16 == 0 && p.dv % 16 == 0 && p.d <= 256 && p.softcap == 0.0f) {
    k.attend16(p);
  } else {
    k.attend(p);
  }
}

// Multiply-adds of one step above which its parts go to the pool.
constexpr long kParallelAttention = 1L << 16;

namespace {

// Parts of kAttendPart keys in [begin, end).
int parts_of(int begin, int end) { return end > begin ? (end - begin + kAttendPart - 1) / kAttendPart : 0; }

// Part `c` of `whole` (its own statistics at `max`, `sum`, `out`).
Part part_of(const Part& whole, int c, float* scores, float* max, float* sum, float* out) {
  Part part = whole;
  part.begin = whole.begin + c * kAttendPart;
  part.end = std::min(whole.end, part.begin + kAttendPart);
  part.scores = scores;
  part.max = max;
  part.sum = sum;
  part.out = out;
  return part;
}

// This thread's room for one part's scores: rep rows of kAttendPart.
float* part_scores(int rep) {
  thread_local std::vector<float> scores;
  scores.resize(static_cast<size_t>(rep) * kAttendPart);
  return scores.data();
}

// The parts' statistics ([parts][rep] maxima and sums, [parts][rep][dv] weighted values)
// combined in order into `out` [rep, dv]; zeros when there are no parts.
void combine(int parts, int rep, int dv, const float* maxs, const float* sums, const float* outs, float* out) {
  for (int r = 0; r < rep; ++r) {
    float* o = out + static_cast<size_t>(r) * dv;
    std::fill(o, o + dv, 0.0f);
    if (parts == 0) continue;
    float largest = -INFINITY;
    for (int c = 0; c < parts; ++c) largest = std::max(largest, maxs[c * rep + r]);
    float total = 0.0f;
    for (int c = 0; c < parts; ++c) {
      const int h = c * rep + r;
      const float weight = sums[h] == 0.0f ? 0.0f : std::exp(maxs[h] - largest);
      total += weight * sums[h];
      const float* part = outs + static_cast<size_t>(h) * dv;
      for (int i = 0; i < dv; ++i) o[i] += weight * part[i];
    }
    for (int i = 0; i < dv; ++i) o[i] /= total;
  }
}

}  // namespace

void attend_query(const Part& whole, float* out) {
  const int parts = parts_of(whole.begin, whole.end), rep = whole.rep;
  thread_local std::vector<float> stats, outs;
  float* scores = part_scores(rep);
  stats.resize(static_cast<size_t>(2) * parts * rep);
  outs.resize(static_cast<size_t>(parts) * rep * whole.dv);
  float *maxs = stats.data(), *sums = maxs + static_cast<size_t>(parts) * rep;
  for (int c = 0; c < parts; ++c) {
    const size_t h = static_cast<size_t>(c) * rep;
    attend_any(part_of(whole, c, scores, maxs + h, sums + h, outs.data() + h * whole.dv));
  }
  combine(parts, rep, whole.dv, maxs, sums, outs.data(), out);
}

// Attention of every query head: each KV group's keys split as attend_query splits them,
// one task per part, each part's rows given by `rows`, the parts combined per group.
void attend_parts(const Attend& a, RowPlaces places, const float* q, float* out, const PartRows& rows) {
  const int rep = a.heads / a.kv_heads, groups = a.batch * a.kv_heads, end = a.length;
  // Group g's keys [begins[g], end) in parts firsts[g] .. firsts[g + 1] of all the tasks.
  std::vector<int> begins(groups), firsts(groups + 1, 0);
  long work = 0;
  for (int g = 0; g < groups; ++g) {
    const int first = places.first(g / a.kv_heads, a.slot);
    begins[g] = a.window > 0 ? std::max(first, end - a.window) : first;
    firsts[g + 1] = firsts[g] + parts_of(begins[g], end);
    work += static_cast<long>(rep) * (end - begins[g]) * (a.d + a.dv);
  }
  const int tasks = firsts[groups];
  std::vector<int> group_of(tasks);
  for (int g = 0; g < groups; ++g) std::fill(group_of.begin() + firsts[g], group_of.begin() + firsts[g + 1], g);
  const size_t heads = static_cast<size_t>(tasks) * rep;
  std::vector<float> maxs(heads), sums(heads), outs(heads * a.dv);
  auto task = [&](int t) {
    const int g = group_of[t];
    const size_t h = static_cast<size_t>(t) * rep;
    Part whole{q + static_cast<size_t>(g) * rep * a.d, nullptr, nullptr, rep, a.d, a.dv, begins[g], end, a.d, a.dv,
               a.scale, a.softcap, nullptr, nullptr, nullptr, nullptr};
    Part part = part_of(whole, t - firsts[g], part_scores(rep), maxs.data() + h, sums.data() + h,
                        outs.data() + h * a.dv);
    rows(g, part);
    attend_any(part);
  };
  if (work < kParallelAttention) {
    for (int t = 0; t < tasks; ++t) task(t);
  } else {
    Pool::get().run(tasks, task);
  }
  for (int g = 0; g < groups; ++g) {
    const size_t h = static_cast<size_t>(firsts[g]) * rep;
    combine(firsts[g + 1] - firsts[g], rep, a.dv, maxs.data() + h, sums.data() + h, outs.data() + h * a.dv,
            out + static_cast<size_t>(g) * rep * a.dv);
  }
}

void attend_decode(const Attend& a, RowPlaces places, const float* q, const float* keys, const float* values,
                   float* out) {
  attend_parts(a, places, q, out, [&](int g, Part& part) {
    const size_t cache = static_cast<size_t>(g) * a.capacity;
    part.keys = keys + cache * a.d;
    part.values = values + cache * a.dv;
  });
}

void write_slot(const Attend& a, const float* k, const float* v, float* keys, float* values) {
  for (int c = 0; c < a.batch * a.kv_heads; ++c) {
    const size_t slot = static_cast<size_t>(c) * a.capacity + a.slot;
    std::memcpy(keys + slot * a.d, k + static_cast<size_t>(c) * a.d, a.d * sizeof(float));
    std::memcpy(values + slot * a.dv, v + static_cast<size_t>(c) * a.dv, a.dv * sizeof(float));
  }
}

bool take_buffer(const mc::array& in, mc::array& out, bool in_place) {
  if (in_place && in.flags().row_contiguous && in.data_size() == in.size()) {
    out.copy_shared_buffer(in);
    return false;
  }
  out.set_data(mc::allocator::malloc(out.nbytes()));
  return true;
}

void copy_words(const mc::array& in, uint32_t* dst) {
  const uint32_t* src = in.data<uint32_t>();
  if (in.flags().row_contiguous) {
    std::memcpy(dst, src, in.size() * sizeof(uint32_t));
    return;
  }
  const auto& shape = in.shape();
  const auto& strides = in.strides();
  const int nd = static_cast<int>(shape.size());
  std::vector<int64_t> index(nd, 0);
  for (size_t i = 0; i < in.size(); ++i) {
    int64_t offset = 0;
    for (int d = 0; d < nd; ++d) offset += index[d] * strides[d];
    dst[i] = src[offset];
    for (int d = nd - 1; d >= 0; --d) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
}

const float* dense_input(const mc::array& in, std::vector<float>& storage) {
  if (in.flags().row_contiguous) return in.data<float>();
  storage = dense_f32(in);
  return storage.data();
}

RowPlaces row_places(const std::vector<mc::array>& inputs, size_t at, std::vector<int32_t>& storage) {
  if (at >= inputs.size()) return RowPlaces{};
  const mc::array& places = inputs[at];
  storage.resize(places.size());
  copy_words(places, reinterpret_cast<uint32_t*>(storage.data()));
  return RowPlaces{storage.data()};
}

bool row_places_fit(const mc::array& places, int batch) {
  return places.dtype() == mc::int32 && places.shape() == mc::Shape{batch, 2};
}

CacheOutputs CacheOutputs::take(const mc::array& keys, const mc::array& values, std::vector<mc::array>& outputs,
                                bool in_place) {
  return CacheOutputs{take_buffer(keys, outputs[1], in_place), take_buffer(values, outputs[2], in_place)};
}

void CacheOutputs::fill(const mc::array& keys, const mc::array& values, std::vector<mc::array>& outputs) const {
  if (copy_keys) copy_words(keys, outputs[1].data<uint32_t>());
  if (copy_values) copy_words(values, outputs[2].data<uint32_t>());
}

}  // namespace lamina_kernels

namespace {

using namespace lamina_kernels;

// What happens to the products' outputs: the first two rotated (RoPE of a decoded
// token's queries and keys, [B, H, 1, D] each), or the residual added to the only one.
struct Epilogue {
  bool rotate;
  RopeSpec rope;
  int head_dim;    // D of the rotated outputs
  bool residual;   // the last input is added to the output
};

class QuantizedProducts : public mc::Primitive {
 public:
  QuantizedProducts(mc::Stream stream, std::vector<Operand> operands, Gate gate, Epilogue epilogue)
      : mc::Primitive(stream), operands_(std::move(operands)), gate_(gate), epilogue_(epilogue) {}

  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    const mc::array& x = inputs[0];
    const int k = static_cast<int>(x.shape().back());
    const int m = static_cast<int>(x.size() / std::max<size_t>(k, 1));
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    for (auto& out : outputs) {
      out.set_data(mc::allocator::malloc(out.nbytes()));
      encoder.set_output_array(out);
    }
    std::vector<float*> outs;
    for (auto& out : outputs) outs.push_back(out.data<float>());
    encoder.dispatch([inputs, outs, m, k, operands = operands_, gate = gate_, epilogue = epilogue_]() {
      const mc::array& x = inputs[0];
      const float* xp = x.data<float>();
      std::vector<float> dense;
      if (!x.flags().row_contiguous) {
        dense = dense_f32(x);
        xp = dense.data();
      }
      // The gated unit writes the gate's product to its output, the up product beside it.
      std::vector<float> up;
      std::vector<Problem> problems;
      for (size_t i = 0; i < operands.size(); ++i) {
        const mc::array& w = inputs[1 + 3 * i];
        const int n = static_cast<int>(w.shape(0));
        float* out = outs[gate == Gate::None ? i : 0];
        if (gate != Gate::None && i == 1) {
          up.resize(static_cast<size_t>(m) * n);
          out = up.data();
        }
        problems.push_back(problem_of(operands[i], xp, w, inputs[2 + 3 * i], inputs[3 + 3 * i], out, m, k));
      }
      quantized_products_sharing_x(problems.data(), static_cast<int>(problems.size()));
      if (gate != Gate::None) {
        kernels().gated(gate, outs[0], up.data(), up.size());
      }
      if (epilogue.rotate) {
        const size_t first = 1 + 3 * operands.size();
        std::vector<float> periods;
        if (epilogue.rope.has_freqs) periods = dense_f32(inputs[first]);
        for (size_t i = 0; i < 2; ++i) {
          const size_t values = static_cast<size_t>(m) * inputs[1 + 3 * i].shape(0);
          const size_t d = epilogue.head_dim;
          float* data = outs[i];
          rotate_rows<float>([data, d](size_t r) { return data + r * d; }, data, values / d, 1, epilogue.head_dim,
                             epilogue.rope, periods.data());
        }
      }
      if (epilogue.residual) {
        Rows residual(inputs.back());
        const size_t n = residual.width();
        for (size_t r = 0; r < residual.count(); ++r) {
          const float* add = residual(r);
          float* out = outs[0] + r * n;
          for (size_t j = 0; j < n; ++j) out[j] = add[j] + out[j];
        }
      }
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error("lamina's fused quantized products run on the CPU");
  }

  // Gradients for x and the residual through the same computation in MLX's ops (the
  // weights are quantized, the periods fixed), so a gradient may be taken in eval mode.
  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>& outputs) override {
    const int residual_at = epilogue_.residual ? static_cast<int>(primals.size()) - 1 : -1;
    for (int arg : argnums) {
      if (arg != 0 && arg != residual_at) {
        throw std::invalid_argument("lamina's fused quantized products have gradients for x and the residual only");
      }
    }
    std::vector<mc::Shape> shapes;
    for (const auto& out : outputs) shapes.push_back(out.shape());
    auto fun = [this, primals, shapes, residual_at](const std::vector<mc::array>& in) mutable {
      return plain(in[0], primals, shapes, residual_at >= 0 ? &in[1] : nullptr);
    };
    std::vector<mc::array> differentiable{primals[0]};
    if (residual_at >= 0) differentiable.push_back(primals[residual_at]);
    auto grads = mc::vjp(fun, differentiable, cotangents).second;
    std::vector<mc::array> picked;
    for (int arg : argnums) picked.push_back(arg == 0 ? grads[0] : grads[1]);
    return picked;
  }

  const char* name() const override { return "LaminaQuantizedProducts"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const QuantizedProducts*>(&other);
    if (o == nullptr || o->gate_ != gate_ || o->operands_.size() != operands_.size() ||
        std::memcmp(&o->epilogue_, &epilogue_, sizeof epilogue_) != 0) {
      return false;
    }
    for (size_t i = 0; i < operands_.size(); ++i) {
      if (!(o->operands_[i] == operands_[i])) return false;
    }
    return true;
  }

 private:
  // The outputs computed with MLX's ops from x, the other inputs `in` (weights, scales,
  // biases, periods) and the residual.
  std::vector<mc::array> plain(const mc::array& x, const std::vector<mc::array>& in,
                               const std::vector<mc::Shape>& shapes, const mc::array* residual) {
    const mc::Stream s = stream();
    std::vector<mc::array> outs;
    for (size_t i = 0; i < operands_.size(); ++i) {
      outs.push_back(weight_product(x, in[1 + 3 * i], in[2 + 3 * i], in[3 + 3 * i], operands_[i], true, s));
    }
    if (gate_ != Gate::None) {
      const mc::array& g = outs[0];
      const mc::array half = mc::array(0.5f);
      mc::array act = g;
      switch (gate_) {
        case Gate::Silu: act = mc::multiply(g, mc::sigmoid(g, s), s); break;
        case Gate::GeluTanh: {
          const mc::array cube = mc::multiply(mc::multiply(g, g, s), g, s);
          const mc::array inner = mc::multiply(mc::array(0.7978845608028654f),
                                               mc::add(g, mc::multiply(mc::array(0.044715f), cube, s), s), s);
          act = mc::multiply(mc::multiply(half, g, s), mc::add(mc::array(1.0f), mc::tanh(inner, s), s), s);
          break;
        }
        case Gate::GeluErf:
          act = mc::multiply(mc::multiply(half, g, s),
                             mc::add(mc::array(1.0f), mc::erf(mc::multiply(g, mc::array(0.7071067811865476f), s), s), s),
                             s);
          break;
        case Gate::None: break;
      }
      outs = {mc::multiply(act, outs[1], s)};
    }
    for (size_t i = 0; i < outs.size(); ++i) outs[i] = mc::reshape(outs[i], shapes[i], s);
    if (epilogue_.rotate) {
      std::optional<float> base;
      std::optional<mc::array> freqs;
      if (epilogue_.rope.has_freqs) {
        freqs = in[1 + 3 * operands_.size()];
      } else {
        base = epilogue_.rope.base;
      }
      for (size_t i = 0; i < 2; ++i) {
        outs[i] = mc::fast::rope(outs[i], epilogue_.rope.dims, epilogue_.rope.traditional, base, epilogue_.rope.scale,
                                 epilogue_.rope.offset, freqs, s);
      }
    }
    if (residual != nullptr) outs[0] = mc::add(*residual, outs[0], s);
    return outs;
  }

  std::vector<Operand> operands_;
  Gate gate_;
  Epilogue epilogue_;
};

class DecodeAttention : public mc::Primitive {
 public:
  DecodeAttention(mc::Stream stream, Attend shape) : mc::Primitive(stream), a_(shape) {}

  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    outputs[0].set_data(mc::allocator::malloc(outputs[0].nbytes()));
    const CacheOutputs caches = CacheOutputs::take(inputs[3], inputs[4], outputs, a_.in_place != 0);
    for (auto& out : outputs) encoder.set_output_array(out);
    encoder.dispatch([inputs, outputs, caches, a = a_]() mutable {
      std::vector<float> qs, ks, vs;
      const float* q = dense_input(inputs[0], qs);
      const float* k = dense_input(inputs[1], ks);
      const float* v = dense_input(inputs[2], vs);
      caches.fill(inputs[3], inputs[4], outputs);
      float* keys = outputs[1].data<float>();
      float* values = outputs[2].data<float>();
      write_slot(a, k, v, keys, values);
      std::vector<int32_t> places;
      attend_decode(a, row_places(inputs, 5, places), q, keys, values, outputs[0].data<float>());
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error("lamina's decode attention runs on the CPU");
  }

  const char* name() const override { return "LaminaDecodeAttention"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const DecodeAttention*>(&other);
    return o != nullptr && std::memcmp(&o->a_, &a_, sizeof a_) == 0;
  }

 private:
  Attend a_;
};

// Attention of L query positions (a prompt) to S keys, causal by position: query t sits at
// position query_start + t, key j at key_start + j; a query sees the keys at or before its
// position (the last `window` of them when window > 0). q [B, H, L, D], keys [B, H_kv, S, D],
// values [B, H_kv, S, D_v], any strides with the last axis dense; out [B, L, H * D_v].
// Nothing [L, S]-sized is held: one task per (batch, KV group, position), its scores in a
// per-thread buffer.
struct Prompt {
  int batch, heads, kv_heads, l, s, d, dv, query_start, key_start, window;
  float scale, softcap;
};

void attend_prompt(const Prompt& a, const mc::array& q, const mc::array& keys, const mc::array& values, float* out) {
  const int rep = a.heads / a.kv_heads;
  const auto &qs = q.strides(), &ks = keys.strides(), &vs = values.strides();
  const float *qp = q.data<float>(), *kp = keys.data<float>(), *vp = values.data<float>();
  auto task = [&](int index) {
    const int t = index % a.l, g = (index / a.l) % a.kv_heads, b = index / (a.l * a.kv_heads);
    const int position = a.query_start + t;
    const int end = std::min(a.s, position - a.key_start + 1);
    const int begin = a.window > 0 ? std::max(0, position - a.window + 1 - a.key_start) : 0;
    float* o = out + (static_cast<size_t>(b) * a.l + t) * a.heads * a.dv + static_cast<size_t>(g) * rep * a.dv;
    thread_local std::vector<float> queries;
    queries.resize(static_cast<size_t>(rep) * a.d);
    for (int r = 0; r < rep; ++r) {
      const float* row = qp + b * qs[0] + (g * rep + r) * qs[1] + t * qs[2];
      std::copy(row, row + a.d, queries.begin() + static_cast<size_t>(r) * a.d);
    }
    const Part whole{queries.data(), kp + b * ks[0] + g * ks[1], vp + b * vs[0] + g * vs[1], rep, a.d, a.dv, begin,
                     end, ks[2], vs[2], a.scale, a.softcap, nullptr, nullptr, nullptr, nullptr};
    attend_query(whole, o);
  };
  Pool::get().run(a.batch * a.kv_heads * a.l, task);
}

// The same attention in MLX's ops (scores materialised, a position mask): the values the
// gradient is taken of.
mc::array mlx_prompt_attention(const std::vector<mc::array>& in, const Prompt& a, mc::Stream s) {
  const int rep = a.heads / a.kv_heads;
  // Each group's queries together: [B, H_kv, rep * L, D] (a group's heads are adjacent).
  const mc::array q = mc::reshape(in[0], {a.batch, a.kv_heads, rep * a.l, a.d}, s);
  mc::array scores = mc::multiply(mc::matmul(q, mc::swapaxes(in[1], -1, -2, s), s), mc::array(a.scale), s);
  if (a.softcap > 0.0f) {
    const mc::array cap(a.softcap);
    scores = mc::multiply(cap, mc::tanh(mc::divide(scores, cap, s), s), s);
  }
  const mc::array queries = mc::reshape(mc::arange(a.query_start, a.query_start + a.l, mc::int32, s), {a.l, 1}, s);
  const mc::array keys = mc::reshape(mc::arange(a.key_start, a.key_start + a.s, mc::int32, s), {1, a.s}, s);
  mc::array visible = mc::less_equal(keys, queries, s);
  if (a.window > 0) {
    visible = mc::logical_and(visible, mc::less(mc::subtract(queries, keys, s), mc::array(a.window), s), s);
  }
  scores = mc::reshape(scores, {a.batch, a.kv_heads, rep, a.l, a.s}, s);
  scores = mc::where(visible, scores, mc::array(-INFINITY), s);
  mc::array probs = mc::reshape(mc::softmax(scores, -1, true, s), {a.batch, a.kv_heads, rep * a.l, a.s}, s);
  mc::array out = mc::reshape(mc::matmul(probs, in[2], s), {a.batch, a.heads, a.l, a.dv}, s);
  return mc::reshape(mc::transpose(out, {0, 2, 1, 3}, s), {a.batch, a.l, a.heads * a.dv}, s);
}

class PromptAttention : public mc::UnaryPrimitive {
 public:
  PromptAttention(mc::Stream stream, Prompt shape) : mc::UnaryPrimitive(stream), a_(shape) {}

  void eval_cpu(const std::vector<mc::array>& inputs, mc::array& out) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    out.set_data(mc::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
    encoder.dispatch([inputs, data = out.data<float>(), a = a_]() {
      // Rows whose values are not adjacent (rare) are made dense once.
      auto dense = [](const mc::array& x) {
        return x.strides().back() == 1 ? x : mc::array(dense_f32(x).data(), x.shape(), mc::float32);
      };
      attend_prompt(a, dense(inputs[0]), dense(inputs[1]), dense(inputs[2]), data);
    });
  }

  void eval_gpu(const std::vector<mc::array>&, mc::array&) override {
    throw std::runtime_error("lamina's prompt attention runs on the CPU");
  }

  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>&) override {
    const Prompt a = a_;
    const mc::Stream s = stream();
    return vjp_of([a, s](const std::vector<mc::array>& in) { return mlx_prompt_attention(in, a, s); }, primals,
                  cotangents, argnums);
  }

  const char* name() const override { return "LaminaPromptAttention"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const PromptAttention*>(&other);
    return o != nullptr && std::memcmp(&o->a_, &a_, sizeof a_) == 0;
  }

 private:
  Prompt a_;
};

}  // namespace

extern "C" {

// RoPE applied to the first two products (mirrors the Rust side's `LaminaRope`):
// `dims` 0 for none; `periods` an empty handle for base^(2i / dims).
struct LaminaRope {
  int dims;
  int traditional;
  float base;
  float scale;
  int offset;
  Handle periods;
};

// Several quantized products of one x in one graph node: out_i = x @ dequantize(w_i)^T,
// shaped `shapes[i]` (a reshape of [..., N_i]; `ndims[i] == 0` keeps [..., N_i]). With
// `gate` 1-3 there are two operands and one output, act(x Wg^T) * (x Wu^T) (1 SiLU, 2 GELU
// with tanh, 3 GELU with erf). `rope` (may be null): the first two outputs, shaped
// [B, H, 1, D], rotated. `residual` (may be an empty handle): added to the only output.
// `activations[i]`: 0 exact, 1 x rounded to 8 bits, 2 the same with the top outputs exact
// (Activations); `formats[i]`: 0 MLX's affine layout, else a GGUF super-block format
// (Format: `ss[i]` and `bs[i]` are then the weight again).
// CPU and f32 only (returns 1 with the reason otherwise).
__attribute__((visibility("default"))) int lamina_quantized_products(Handle* outs, int count, Handle x,
                                                                     const Handle* ws, const Handle* ss,
                                                                     const Handle* bs, const int* groups,
                                                                     const int* bits, const int* activations,
                                                                     const int* formats, const int* shapes,
                                                                     const int* ndims, int gate,
                                                                     const LaminaRope* rope, Handle residual) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    if (!on_cpu(stream) || xa.dtype() != mc::float32 || xa.ndim() < 1 || count < 1 || gate < 0 || gate > 3 ||
        (gate != 0 && count != 2)) {
      last_error() = "fused quantized products: f32 x on the CPU, and two operands for a gated unit";
      return 1;
    }
    const int k = static_cast<int>(xa.shape().back());
    const size_t rows = xa.size() / std::max<size_t>(k, 1);
    std::vector<mc::array> inputs{xa};
    std::vector<Operand> operands;
    std::vector<mc::Shape> out_shapes;
    int next_dim = 0;
    for (int i = 0; i < count; ++i) {
      const mc::array &w = from_handle(ws[i]), &s = from_handle(ss[i]), &b = from_handle(bs[i]);
      const int n = static_cast<int>(w.ndim() == 2 ? w.shape(0) : 0);
      const Operand operand = Operand::of(groups[i], bits[i], activations[i], formats[i]);
      if (!operand_fits(w, s, b, n, k, operand)) {
        last_error() = "fused quantized products: x " + shape_text(xa) + " does not fit w " + shape_text(w) +
                       " at " + std::to_string(bits[i]) + " bits, group " + std::to_string(groups[i]);
        return 1;
      }
      if (gate != 0 && i == 1 && n != static_cast<int>(from_handle(ws[0]).shape(0))) {
        last_error() = "fused gated unit: gate and up projections differ in width";
        return 1;
      }
      inputs.insert(inputs.end(), {w, s, b});
      operands.push_back(operand);
      mc::Shape shape = xa.shape();
      shape.back() = n;
      if (ndims != nullptr && ndims[i] > 0) {
        mc::Shape wanted(shapes + next_dim, shapes + next_dim + ndims[i]);
        next_dim += ndims[i];
        int64_t size = 1;
        for (int dim : wanted) size *= dim;
        if (size != static_cast<int64_t>(rows) * n) {
          last_error() = "fused quantized products: output shape does not hold the product's values";
          return 1;
        }
        shape = wanted;
      }
      if (gate == 0 || i == 0) out_shapes.push_back(shape);
    }
    Epilogue epilogue{};
    if (rope != nullptr && rope->dims > 0) {
      const bool rotatable = count >= 2 && gate == 0 && out_shapes[0].size() == 4 && out_shapes[1].size() == 4 &&
                             out_shapes[0][2] == 1 && out_shapes[1][2] == 1 && out_shapes[0][3] == out_shapes[1][3] &&
                             rope->dims % 2 == 0 && rope->dims <= out_shapes[0][3];
      const bool has_freqs = rope->periods.ctx != nullptr;
      if (!rotatable || (has_freqs && (from_handle(rope->periods).dtype() != mc::float32 ||
                                       from_handle(rope->periods).shape() != mc::Shape(1, rope->dims / 2)))) {
        last_error() = "fused quantized products: RoPE needs two [B, H, 1, D] outputs, even dims <= D and "
                       "f32 periods [dims / 2]";
        return 1;
      }
      epilogue.rotate = true;
      epilogue.rope = RopeSpec{rope->dims, rope->traditional != 0, has_freqs, rope->base, rope->scale, rope->offset};
      epilogue.head_dim = out_shapes[0][3];
      if (has_freqs) inputs.push_back(from_handle(rope->periods));
    }
    if (residual.ctx != nullptr) {
      const mc::array& r = from_handle(residual);
      if (count != 1 || gate != 0 || epilogue.rotate || r.dtype() != mc::float32 || r.shape() != out_shapes[0]) {
        last_error() = "fused quantized products: the residual must be f32 shaped as the only output " +
                       shape_text(r);
        return 1;
      }
      epilogue.residual = true;
      inputs.push_back(r);
    }
    auto primitive = std::make_shared<QuantizedProducts>(stream, operands, static_cast<Gate>(gate), epilogue);
    std::vector<mc::Dtype> dtypes(out_shapes.size(), mc::float32);
    auto arrays = mc::array::make_arrays(out_shapes, dtypes, primitive, inputs);
    for (size_t i = 0; i < arrays.size(); ++i) to_handle(&outs[i], arrays[i]);
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

// One decoded position's attention over a KV cache (see Attend). Fills `out`
// [B, 1, H * D_v], `keys_out` and `values_out` (the caches with slot `slot` written).
// `window` 0: every slot below `length`; `softcap` 0: none; `places` an empty handle, or
// int32 [B, 2] (RowPlaces: each row's first slot). CPU and f32 only.
__attribute__((visibility("default"))) int lamina_decode_attention(Handle* out, Handle* keys_out,
                                                                   Handle* values_out, Handle q, Handle k,
                                                                   Handle v, Handle keys, Handle values,
                                                                   Handle places, int slot, int length,
                                                                   float scale, int window, float softcap,
                                                                   int in_place) {
  try {
    const mc::array &qa = from_handle(q), &ka = from_handle(k), &va = from_handle(v);
    const mc::array &keys_a = from_handle(keys), &values_a = from_handle(values);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const std::vector<const mc::array*> all{&qa, &ka, &va, &keys_a, &values_a};
    bool fits = on_cpu(stream) && window >= 0 && softcap >= 0.0f && slot >= 0 && slot < length;
    for (const mc::array* a : all) fits = fits && a->dtype() == mc::float32 && a->ndim() == 4;
    if (fits) {
      const int b = qa.shape(0), h = qa.shape(1), d = qa.shape(3), hkv = ka.shape(1), dv = va.shape(3);
      const int cap = keys_a.shape(2);
      fits = qa.shape(2) == 1 && hkv > 0 && h % hkv == 0 && ka.shape() == mc::Shape{b, hkv, 1, d} &&
             va.shape() == mc::Shape{b, hkv, 1, dv} && keys_a.shape() == mc::Shape{b, hkv, cap, d} &&
             values_a.shape() == mc::Shape{b, hkv, cap, dv} && length <= cap &&
             (places.ctx == nullptr || row_places_fit(from_handle(places), b));
      if (fits) {
        Attend a{b, h, hkv, d, dv, cap, slot, length, window, scale, softcap, in_place != 0 ? 1 : 0};
        auto primitive = std::make_shared<DecodeAttention>(stream, a);
        std::vector<mc::array> inputs{qa, ka, va, keys_a, values_a};
        if (places.ctx != nullptr) inputs.push_back(from_handle(places));
        auto arrays = mc::array::make_arrays({{b, 1, h * dv}, keys_a.shape(), values_a.shape()},
                                             {mc::float32, mc::float32, mc::float32}, primitive, inputs);
        to_handle(out, arrays[0]);
        to_handle(keys_out, arrays[1]);
        to_handle(values_out, arrays[2]);
        return 0;
      }
    }
    last_error() = "decode attention: f32 on the CPU, q [B, H, 1, D] " + shape_text(qa) + ", k/v [B, H_kv, 1, D] " +
                   shape_text(ka) + ", caches [B, H_kv, C, D] " + shape_text(keys_a) + ", row places int32 [B, 2], slot " +
                   std::to_string(slot) + " below length " + std::to_string(length) + " <= C";
    return 1;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

// A prompt's causal attention (see Prompt): `out` [B, L, H * D_v]. `window` 0: no window;
// `softcap` 0: none. CPU and f32 only.
__attribute__((visibility("default"))) int lamina_prompt_attention(Handle* out, Handle q, Handle keys,
                                                                   Handle values, int query_start,
                                                                   int key_start, float scale, int window,
                                                                   float softcap) {
  try {
    const mc::array &qa = from_handle(q), &ka = from_handle(keys), &va = from_handle(values);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    bool fits = on_cpu(stream) && window >= 0 && softcap >= 0.0f && query_start >= 0 && key_start >= 0;
    for (const mc::array* x : {&qa, &ka, &va}) fits = fits && x->dtype() == mc::float32 && x->ndim() == 4;
    if (fits) {
      const int b = qa.shape(0), h = qa.shape(1), l = qa.shape(2), d = qa.shape(3);
      const int hkv = ka.shape(1), s = ka.shape(2), dv = va.shape(3);
      fits = hkv > 0 && h % hkv == 0 && ka.shape() == mc::Shape{b, hkv, s, d} && va.shape() == mc::Shape{b, hkv, s, dv};
      if (fits) {
        const Prompt a{b, h, hkv, l, s, d, dv, query_start, key_start, window, scale, softcap};
        to_handle(out, mc::array({b, l, h * dv}, mc::float32, std::make_shared<PromptAttention>(stream, a),
                                 {qa, ka, va}));
        return 0;
      }
    }
    last_error() = "prompt attention: f32 on the CPU, q [B, H, L, D] " + shape_text(qa) + ", keys [B, H_kv, S, D] " +
                   shape_text(ka) + ", values [B, H_kv, S, D_v] " + shape_text(va);
    return 1;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
