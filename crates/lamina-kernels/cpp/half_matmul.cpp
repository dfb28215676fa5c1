// lamina's CPU matmul for half-precision weights: `x @ w^T` with `w` a bf16 or f16 [N, K]
// row-major matrix read as stored (never widened in memory), f32 accumulation, as an MLX
// custom Primitive. MLX's own CPU matmul runs bf16/f16 outside BLAS, several times slower
// than f32; this keeps a half-precision checkpoint at half the memory and f32's speed.
//
// - One-row products (decoding): each weight row is read once, widened in registers
//   (bf16: a 16-bit shift; f16: F16C) and dotted with x in f32 with the tier's kernels
//   (isa.h; a tier without them, NEON, leaves the op to MLX), rows split over the sleeping
//   pool above 1 MiB.
// - Many-row products (prefill): tiles of 256 weight rows widened to f32 (in parallel),
//   then BLAS sgemm.
// - The result is rounded once to the output dtype (MLX's promotion of x and w).
// - Gradients go through MLX's own ops, so training works through the kernel.

#include <cstring>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/device.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"
#include "mlx/types/half_types.h"

#include "common.h"
#include "isa.h"

namespace {

using namespace lamina_kernels;

// The problem, in plain pointers: x [M, K] f32, w [N, K] 16-bit, out [M, N] f32.
struct HalfProblem {
  const float* x;
  const uint16_t* w;
  float* out;
  int m, n, k;
  bool bf16;
  const uint16_t* row(int r) const { return w + static_cast<size_t>(r) * k; }
};

// The tier's half-precision row kernels (isa.h).
void narrow(const float* src, uint16_t* dst, size_t n, bool bf16) { kernels().half_narrow(src, dst, n, bf16); }
float dot(const uint16_t* w, const float* x, int k, bool bf16) { return kernels().half_dot(w, x, k, bf16); }
void widen_row(const uint16_t* src, float* dst, int k, bool bf16) { kernels().half_widen(src, dst, k, bf16); }

// Weight bytes below which a one-row product stays on the calling thread (as in the
// quantized kernel: waking a worker costs about as much as reading this much).
constexpr size_t kParallelBytes = size_t{1} << 20;

void gemv(const HalfProblem& p) {
  Pool& pool = Pool::get();
  const size_t bytes = static_cast<size_t>(p.n) * p.k * 2;
  const int tasks = bytes < kParallelBytes ? 1 : std::min(p.n, pool.size() * 4);
  pool.run(tasks, [&](int t) {
    const auto [begin, end] = share(p.n, t, tasks);
    for (int r = begin; r < end; ++r) p.out[r] = dot(p.row(r), p.x, p.k, p.bf16);
  });
}

void gemm(const HalfProblem& p) {
  Pool& pool = Pool::get();
  const int tile = 256;
  std::vector<float> buffer(static_cast<size_t>(std::min(tile, p.n)) * p.k);
  for (int n0 = 0; n0 < p.n; n0 += tile) {
    const int rows = std::min(tile, p.n - n0);
    pool.run(rows, [&](int r) { widen_row(p.row(n0 + r), buffer.data() + static_cast<size_t>(r) * p.k, p.k, p.bf16); });
    cblas_sgemm(kRowMajor, kNoTrans, kTrans, p.m, rows, p.k, 1.0f, p.x, p.k, buffer.data(), p.k, 0.0f,
                p.out + n0, p.n);
  }
}

// w's 16-bit elements, row-major (copied only when w is a strided view).
std::vector<uint16_t> dense_bits(const mc::array& w) {
  std::vector<uint16_t> dense(w.size());
  const auto& shape = w.shape();
  const auto& strides = w.strides();
  const uint16_t* src = w.data<uint16_t>();
  for (int64_t r = 0; r < shape[0]; ++r) {
    for (int64_t c = 0; c < shape[1]; ++c) dense[r * shape[1] + c] = src[r * strides[0] + c * strides[1]];
  }
  return dense;
}

class HalfMatmulCpu : public mc::UnaryPrimitive {
 public:
  explicit HalfMatmulCpu(mc::Stream stream) : mc::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mc::array>& inputs, mc::array& out) override {
    const mc::array& x = inputs[0];
    const mc::array& w = inputs[1];
    const int k = static_cast<int>(x.shape().back());
    const int m = static_cast<int>(x.size() / std::max<size_t>(k, 1));
    const int n = static_cast<int>(w.shape(0));
    out.set_data(mc::allocator::malloc(out.nbytes()));
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    encoder.dispatch([x, w, out, m, n, k]() mutable {
      std::vector<float> xs;
      const float* xp = nullptr;
      const bool half_x = x.dtype() == mc::bfloat16 || x.dtype() == mc::float16;
      if (x.dtype() == mc::float32 && x.flags().row_contiguous) {
        xp = x.data<float>();
      } else if (half_x && x.flags().row_contiguous) {
        xs.resize(x.size());
        for (int r = 0; r < m; ++r) {
          const size_t at = static_cast<size_t>(r) * k;
          widen_row(x.data<uint16_t>() + at, xs.data() + at, k, x.dtype() == mc::bfloat16);
        }
        xp = xs.data();
      } else {
        xs = dense_f32(x);
        xp = xs.data();
      }
      std::vector<uint16_t> ws;
      const uint16_t* wp = w.data<uint16_t>();
      if (!w.flags().row_contiguous) {
        ws = dense_bits(w);
        wp = ws.data();
      }
      std::vector<float> result;
      float* op = nullptr;
      if (out.dtype() == mc::float32) {
        op = out.data<float>();
      } else {
        result.resize(static_cast<size_t>(m) * n);
        op = result.data();
      }
      HalfProblem p{xp, wp, op, m, n, k, w.dtype() == mc::bfloat16};
      if (m == 0 || n == 0) {
        return;
      } else if (m == 1) {
        gemv(p);
      } else {
        gemm(p);
      }
      if (out.dtype() != mc::float32) {
        narrow(result.data(), out.data<uint16_t>(), result.size(), out.dtype() == mc::bfloat16);
      }
    });
  }

  void eval_gpu(const std::vector<mc::array>&, mc::array&) override {
    throw std::runtime_error("lamina's half-precision matmul runs on the CPU; the GPU uses MLX's own");
  }

  std::vector<mc::array> vjp(const std::vector<mc::array>& primals, const std::vector<mc::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mc::array>&) override {
    const mc::array& x = primals[0];
    const mc::array& w = primals[1];
    const mc::array& cot = cotangents[0];
    std::vector<mc::array> grads;
    for (int arg : argnums) {
      if (arg == 0) {
        grads.push_back(mc::astype(mc::matmul(cot, mc::astype(w, cot.dtype(), stream()), stream()), x.dtype(),
                                   stream()));
      } else {
        const int k = static_cast<int>(x.shape().back());
        const int n = static_cast<int>(w.shape(0));
        mc::array rows = mc::reshape(cot, {-1, n}, stream());
        mc::array xs = mc::astype(mc::reshape(x, {-1, k}, stream()), rows.dtype(), stream());
        grads.push_back(mc::astype(mc::matmul(mc::transpose(rows, stream()), xs, stream()), w.dtype(), stream()));
      }
    }
    return grads;
  }

  const char* name() const override { return "LaminaHalfMatmul"; }

  bool is_equivalent(const mc::Primitive& other) const override {
    return dynamic_cast<const HalfMatmulCpu*>(&other) != nullptr;
  }

  std::vector<mc::Shape> output_shapes(const std::vector<mc::array>& inputs) override {
    mc::Shape shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }
};

bool is_float(mc::Dtype t) { return t == mc::float32 || t == mc::bfloat16 || t == mc::float16; }

}  // namespace

extern "C" {

// `out = x @ w^T` for a bf16/f16 `w` [N, K] on the CPU (MLX's own matmul elsewhere, or for
// other dtypes). x: f32, bf16 or f16 [..., K]. Returns 0, or 1 with the reason in
// lamina_kernels_last_error().
__attribute__((visibility("default"))) int lamina_half_matmul(Handle* out, Handle x, Handle w) {
  try {
    const mc::array& xa = from_handle(x);
    const mc::array& wa = from_handle(w);
    const mc::Stream stream = mc::default_stream(mc::default_device());
    const bool ours = on_cpu(stream) && kernels().half() &&
                      (wa.dtype() == mc::bfloat16 || wa.dtype() == mc::float16) && is_float(xa.dtype()) &&
                      wa.ndim() == 2 && xa.ndim() >= 1;
    // The same error on every device and tier, whichever computes the product.
    if (wa.ndim() == 2 && xa.ndim() >= 1 && xa.shape().back() != wa.shape(1)) {
      last_error() = "half matmul: x [..., " + std::to_string(xa.shape().back()) + "] does not fit w " +
                     std::to_string(wa.shape(0)) + "x" + std::to_string(wa.shape(1));
      return 1;
    }
    if (!ours) {
      to_handle(out, mc::matmul(xa, mc::transpose(wa, stream), stream));
      return 0;
    }
    mc::Shape shape = xa.shape();
    shape.back() = wa.shape(0);
    const mc::Dtype dtype = mc::promote_types(xa.dtype(), wa.dtype());
    auto primitive = std::make_shared<HalfMatmulCpu>(stream);
    to_handle(out, mc::array(shape, dtype, primitive, {xa, wa}));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}

}  // extern "C"
