// lamina's CPU quantized matmul: `x @ dequantize(w)^T` for MLX's affine layout
// (`w` packed little-endian bit streams, one per row; per-group f32 or f16 `scales` and
// `biases`), as an MLX custom Primitive, the way MLX documents custom operations.
//
// - One-row products (decoding) read each packed weight once: per group, a dot product
//   of the quantized values with x, then `scale * dot + bias * sum(x in group)`, with the
//   tier's row kernels (isa.h: portable, AVX2, AVX-512, AVX-512 VBMI, NEON).
// - Many-row products (prefill) dequantize tiles of rows to f32 and hand them to BLAS
//   `sgemm` (OpenBLAS, through lamina's shim).
// - With x rounded to 8 bits (Activations::int8, GGUF's default) products of any number of
//   rows multiply the packed values with x's bytes as integers, each row of x exactly as it
//   would alone (the tier's tiles: several weight rows against several rows of x).
// - Rows are split over a small pool of threads that spin briefly, then sleep, between calls,
//   with the calling thread taking a share.
// - The gradient with respect to x is MLX's own quantized_matmul (transpose = false), so
//   QLoRA trains through the kernel.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"

#include "common.h"
#include "isa.h"
#include "quantized.h"
#include "weights.h"

namespace {

using namespace lamina_kernels;

// Packed weight bytes below which a one-row product stays on the calling thread. The pool's
// workers spin between the ~200 products of a decoded token, so splitting pays from small
// sizes on. Measured on SmolLM2-135M Q4_1 (2 cores, medians of 12 runs, alternating):
// decode 71.3 tok/s from 4 KiB, 74.7 from 64 KiB, 72.3 from 256 KiB, 69.6 from 1 MiB.
constexpr size_t kParallelBytes = size_t{1} << 16;

// Activations::int8_exact_top: the kExactTop largest of one row's outputs `out` (of x rounded
// to 8 bits) recomputed with x exact. One pass keeps the candidates and the weakest of them
// (a new value rarely beats it), then kExactTop exact one-row products.
void rescore_top(const Problem& p, const float* x, float* out) {
  int rows[kExactTop];
  float kept[kExactTop];
  const int count = std::min(p.n, kExactTop);
  for (int i = 0; i < count; ++i) rows[i] = i, kept[i] = out[i];
  int weakest = static_cast<int>(std::min_element(kept, kept + count) - kept);
  for (int r = count; r < p.n; ++r) {
    if (out[r] > kept[weakest]) {
      rows[weakest] = r;
      kept[weakest] = out[r];
      weakest = static_cast<int>(std::min_element(kept, kept + count) - kept);
    }
  }
  const PreparedRow exact = prepare(p, x, false, false);
  const RowDot dot = kernels().exact_dot(p);
  for (int i = 0; i < count; ++i) out[rows[i]] = dot(p, rows[i], x, exact);
}

// Tasks for products reading `work` packed bytes in all: one below kParallelBytes, else a few
// per thread.
int tasks_for(const Problem& p, size_t work) {
  return work < kParallelBytes ? 1 : std::min(p.n, Pool::get().size() * 4);
}

void gemv(const Problem& p) {
  Pool& pool = Pool::get();
  const int tasks = tasks_for(p, static_cast<size_t>(p.n) * p.row_bytes());
  const RowDot dot = kernels().exact_dot(p);
  for (int m = 0; m < p.m; ++m) {
    const float* x = p.x + static_cast<size_t>(m) * p.k;
    float* out = p.out + static_cast<size_t>(m) * p.n;
    const PreparedRow prepared = prepare(p, x, false, false);
    pool.run(tasks, [&](int t) {
      const auto [begin, end] = share(p.n, t, tasks);
      for (int r = begin; r < end; ++r) out[r] = dot(p, r, x, prepared);
    });
  }
}

// ---------------------------------------------------------------------------------------
// With 8-bit activations, products of any number of rows: every row of x rounded once, each
// pair computed exactly as its one-row product (Kernels::products_int8, or the one-row
// kernel pair by pair), so a row's outputs do not depend on the rows beside it: a prompt
// partly served from a cache, or a sequence decoded in a batch, computes as it would alone.
// Weight rows are split over the pool; a task's rows meet blocks of x's rows while those stay
// in cache. Several problems reading the same x (quantized_products_sharing_x) share its
// prepared rows where they round it alike, and their tasks one pool region.
void products_int8(const Problem* problems, int count) {
  Pool& pool = Pool::get();
  const Kernels& k = kernels();
  const int m = problems[0].m;
  // x's rows prepared once per distinct preparation (kind[i]: problem i's).
  std::vector<Preparation> preparations;
  std::vector<int> first_of, kind(count);
  for (int i = 0; i < count; ++i) {
    const Preparation how = preparation_of(problems[i], k.groups(problems[i]));
    const auto known = std::find(preparations.begin(), preparations.end(), how);
    kind[i] = static_cast<int>(known - preparations.begin());
    if (known == preparations.end()) {
      preparations.push_back(how);
      first_of.push_back(i);
    }
  }
  std::vector<std::vector<PreparedRow>> prepared(preparations.size(), std::vector<PreparedRow>(m));
  const int rows = static_cast<int>(preparations.size()) * m;
  const int preparers = std::min(rows, pool.size());
  pool.run(preparers, [&](int t) {
    const auto [begin, end] = share(rows, t, preparers);
    for (int item = begin; item < end; ++item) {
      const int of = item / m, row = item % m;
      const Problem& p = problems[first_of[of]];
      prepared[of][row] = prepare(p, p.x + static_cast<size_t>(row) * p.k, true, preparations[of].grouped);
    }
  });
  // Problem i's tasks are [starts[i], starts[i + 1]).
  std::vector<int> starts(count + 1, 0);
  for (int i = 0; i < count; ++i) {
    const Problem& p = problems[i];
    starts[i + 1] = starts[i] + tasks_for(p, static_cast<size_t>(p.n) * p.row_bytes() * p.m);
  }
  pool.run(starts[count], [&](int t) {
    const int i = static_cast<int>(std::upper_bound(starts.begin(), starts.end(), t) - starts.begin()) - 1;
    const Problem& p = problems[i];
    const auto [begin, end] = share(p.n, t - starts[i], starts[i + 1] - starts[i]);
    const std::vector<PreparedRow>& xs = prepared[kind[i]];
    const auto products = p.gguf_layout() ? k.products_int8
                          : p.blocks()    ? k.products_blocks_int8[static_cast<int>(p.format)]
                                          : nullptr;
    if (products != nullptr) {
      products(p, begin, end, xs.data(), 0, p.m);
      return;
    }
    const RowDot dot = k.row_kernel(p).dot;
    for (int r = begin; r < end; ++r) {
      for (int row = 0; row < p.m; ++row) {
        p.out[static_cast<size_t>(row) * p.n + r] = dot(p, r, p.x + static_cast<size_t>(row) * p.k, xs[row]);
      }
    }
  });
  for (int i = 0; i < count; ++i) {
    const Problem& p = problems[i];
    if (p.activations == Activations::int8_exact_top) {
      pool.run(p.m, [&](int row) { rescore_top(p, p.x + static_cast<size_t>(row) * p.k, p.out + static_cast<size_t>(row) * p.n); });
    }
  }
}

// ---------------------------------------------------------------------------------------
// A few rows (a decoding batch): each weight row is read from memory once, dequantized
// into a buffer that stays in L1, and dotted with every row of x.
void gemv_batch(const Problem& p) {
  Pool& pool = Pool::get();
  const Kernels& k = kernels();
  const RowDequantize dequantize = k.dequantize_for(p);
  const int tasks = tasks_for(p, static_cast<size_t>(p.n) * p.row_bytes() * p.m);
  pool.run(tasks, [&](int t) {
    const auto [begin, end] = share(p.n, t, tasks);
    std::vector<float> rows(4 * static_cast<size_t>(p.k));
    float* first = rows.data();
    float* second = first + p.k;
    int r = begin;
    if (k.dots4 != nullptr) {
      const float* four[4] = {first, second, first + 2 * p.k, first + 3 * p.k};
      for (; r + 4 <= end; r += 4) {
        for (int a = 0; a < 4; ++a) dequantize(p, r + a, rows.data() + static_cast<size_t>(a) * p.k);
        k.dots4(four, p.x, p.m, p.k, p.out + r, p.n);
      }
    }
    if (k.dots2 != nullptr) {
      for (; r + 2 <= end; r += 2) {
        dequantize(p, r, first);
        dequantize(p, r + 1, second);
        k.dots2(first, second, p.x, p.m, p.k, p.out + r, p.n);
      }
    }
    for (; r < end; ++r) {
      dequantize(p, r, first);
      k.dots(first, p.x, p.m, p.k, p.out + r, p.n);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Many-row products: tiles of dequantized rows through sgemm.

void gemm(const Problem& p) {
  Pool& pool = Pool::get();
  const int tile = 256;
  std::vector<float> buffer(static_cast<size_t>(tile) * p.k);
  for (int n0 = 0; n0 < p.n; n0 += tile) {
    const int rows = std::min(tile, p.n - n0);
    const RowDequantize dequantize = kernels().dequantize_for(p);
    pool.run(rows, [&](int r) { dequantize(p, n0 + r, buffer.data() + static_cast<size_t>(r) * p.k); });
    cblas_sgemm(kRowMajor, kNoTrans, kTrans, p.m, rows, p.k, 1.0f, p.x, p.k, buffer.data(), p.k, 0.0f,
                p.out + n0, p.n);
  }
}

// Rows of x up to which each weight row is dequantized once and dotted with every row of
// x; above, tiles go through sgemm.
constexpr int kBatchRows = 32;

}  // namespace

void lamina_kernels::quantized_products(const Problem& p) {
  if (kernels().row_kernel(p).int8) {
    products_int8(&p, 1);
  } else if (p.m == 1) {
    gemv(p);
  } else if (p.m <= kBatchRows) {
    gemv_batch(p);
  } else {
    gemm(p);
  }
}

void lamina_kernels::quantized_products_sharing_x(const Problem* problems, int count) {
  std::vector<Problem> int8;
  for (int i = 0; i < count; ++i) {
    const Problem& p = problems[i];
    if (p.x != problems[0].x || p.m != problems[0].m || p.k != problems[0].k) {
      throw std::invalid_argument("quantized_products_sharing_x: the problems read different x");
    }
    if (kernels().row_kernel(p).int8) {
      int8.push_back(p);
    } else {
      quantized_products(p);
    }
  }
  if (!int8.empty()) products_int8(int8.data(), static_cast<int>(int8.size()));
}

namespace {

// ---------------------------------------------------------------------------------------
// The primitive.

class QuantizedMatmulCpu : public mc::UnaryPrimitive {
 public:
  QuantizedMatmulCpu(mc::Stream stream, Operand operand) : mc::UnaryPrimitive(stream), operand_(operand) {}

  void eval_cpu(const std::vector<mc::array>& inputs, mc::array& out) override {
    // The kernels read x as a dense [M, K]; a strided view is copied once (in the task).
    const mc::array& x = inputs[0];
    const int k = static_cast<int>(x.shape().back());
    const int m = static_cast<int>(x.size() / std::max<size_t>(k, 1));
    const bool contiguous = x.flags().row_contiguous;
    out.set_data(mc::allocator::malloc(out.nbytes()));
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    mc::array w = inputs[1], scales = inputs[2], biases = inputs[3];
    encoder.dispatch([x, w, scales, biases, out_ptr = out.data<float>(), m, k, contiguous,
                      operand = operand_]() mutable {
      const float* xp = x.data<float>();
      std::vector<float> dense;
      if (!contiguous) {
        dense = dense_f32(x);
        xp = dense.data();
      }
      quantized_products(problem_of(operand, xp, w, scales, biases, out_ptr, m, k));
    });
  }

  void eval_gpu(const std::vector<mc::array>&, mc::array&) override {
    throw std::runtime_error("lamina's quantized matmul runs on the CPU; the GPU uses MLX's own");
  }

  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>&) override {
    std::vector<mc::array> grads;
    for (int arg : argnums) {
      if (arg != 0) {
        throw std::invalid_argument("lamina's quantized matmul has no gradient for its quantized weight");
      }
      grads.push_back(weight_product(cotangents[0], primals[1], primals[2], primals[3], operand_, false, stream()));
    }
    return grads;
  }

  const char* name() const override { return "LaminaQuantizedMatmul"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    const auto* o = dynamic_cast<const QuantizedMatmulCpu*>(&other);
    return o != nullptr && o->operand_ == operand_;
  }

  std::vector<mc::Shape> output_shapes(const std::vector<mc::array>& inputs) override {
    mc::Shape shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  Operand operand_;
};

}  // namespace

std::string& lamina_kernels::last_error() {
  thread_local std::string text;
  return text;
}

extern "C" int lamina_kernels_supports_quantized(int bits, int group);

extern "C" {

// The threads the kernels run a parallel region on (the caller's included).
int lamina_kernel_threads() { return lamina_kernels::Pool::get().size(); }


// `out = x @ dequantize(w, scales, biases)^T` on the CPU (MLX's own op elsewhere).
// x: f32 [..., K]; `format` 0: MLX's affine layout, w u32 [N, K * bits / 32], scales and
// biases f32 or f16 [N, K / group]; 1-6: a GGUF super-block format (Format), w u8
// [N, K / 256 * block bytes], scales and biases unused (pass w), CPU only.
// activations: 0 exact, 1 x rounded to 8 bits, 2 the same with each row's kExactTop largest
// outputs recomputed exactly (Activations).
// Returns 0, or 1 with the reason in lamina_kernels_last_error().
__attribute__((visibility("default"))) int lamina_quantized_matmul(Handle* out, Handle x, Handle w, Handle scales,
                                                                   Handle biases, int group, int bits,
                                                                   int activations, int format) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::array& wa = from_handle(w);
    const mc::array& sa = from_handle(scales);
    const mc::array& ba = from_handle(biases);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const Operand operand = Operand::of(group, bits, activations, format);
    const bool blocks = operand.format != Format::affine;
    if (!blocks && (bits < 2 || bits > 8 || bits == 7)) {
      last_error() = "quantized matmul: " + std::to_string(bits) +
                     " bits: MLX's affine layout has 2, 3, 4, 5, 6 or 8 bits";
      return 1;
    }
    if (!blocks && (group <= 0 || group % 32 != 0)) {
      last_error() = "quantized matmul: group " + std::to_string(group) +
                     ": lamina's kernels and MLX take groups that are multiples of 32";
      return 1;
    }
    const int k = xa.ndim() >= 1 ? static_cast<int>(xa.shape().back()) : 0;
    const bool scales_read = (sa.dtype() == mc::float32 || sa.dtype() == mc::float16) && ba.dtype() == sa.dtype();
    const bool ours = on_cpu(stream) && xa.dtype() == mc::float32 && xa.ndim() >= 1 &&
                      (blocks || (scales_read && wa.dtype() == mc::uint32 && wa.ndim() == 2 &&
                                  lamina_kernels_supports_quantized(bits, group)));
    if (!ours && !blocks) {
      to_handle(out, mc::quantized_matmul(xa, wa, sa, ba, true, group, bits, "affine", stream));
      return 0;
    }
    if (!ours || !operand_fits(wa, sa, ba, -1, k, operand)) {
      last_error() = "quantized matmul: f32 x " + shape_text(xa) + " on the CPU does not fit w " + shape_text(wa) +
                     (blocks ? " in GGUF format " + std::to_string(format)
                             : " at " + std::to_string(bits) + " bits, group " + std::to_string(group));
      return 1;
    }
    mc::Shape shape = xa.shape();
    shape.back() = static_cast<int>(wa.shape(0));
    auto primitive = std::make_shared<QuantizedMatmulCpu>(stream, operand);
    to_handle(out, mc::array(shape, mc::float32, primitive, {xa, wa, sa, ba}));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

__attribute__((visibility("default"))) const char* lamina_kernels_last_error() { return last_error().c_str(); }

}  // extern "C"
