// What lamina's CPU kernels share: a pool of threads that sleep between parallel regions,
// BLAS's sgemm, mlx-c's array handles, the last error's text, a dense copy of a strided
// input and a horizontal sum.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <vector>

#include "mlx/array.h"
#include "mlx/device.h"
#include "mlx/stream.h"
#include "mlx/transforms.h"
#include "mlx/types/half_types.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);

namespace lamina_kernels {

namespace mc = mlx::core;

constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

// Part t of n items split into `tasks` parts of nearly equal size: [begin, end).
struct Share {
  int begin, end;
};
inline Share share(int n, int t, int tasks) {
  return {static_cast<int>(static_cast<int64_t>(n) * t / tasks),
          static_cast<int>(static_cast<int64_t>(n) * (t + 1) / tasks)};
}

// A pool of threads for parallel regions. Between regions a worker spins for a few tens of
// microseconds (decoding calls the kernels every ~50 us, and waking a sleeping thread
// costs about as much as a small product), then sleeps on a condition variable; a caller
// waits for the workers the same way.

class Pool {
 public:
  static Pool& get() {
    // Leaked on purpose: worker threads must outlive static destructors at exit.
    static Pool* pool = new Pool();
    return *pool;
  }

  int size() const { return static_cast<int>(workers_) + 1; }

  // Runs f(i) for every i in [0, n) on the workers and the calling thread.
  void run(int n, const std::function<void(int)>& f) {
    if (n <= 1 || workers_ == 0) {
      for (int i = 0; i < n; ++i) f(i);
      return;
    }
    std::lock_guard<std::mutex> region(region_);
    // Closed while the region's bounds change: a late worker of the last region holds a
    // cursor value that no longer matches, so it cannot take an index with these bounds.
    cursor_.store(kClosed << 32);
    task_.store(&f);
    total_.store(n);
    pending_.store(n);
    const uint64_t generation = ++generation_ % kClosed;
    cursor_.store(generation << 32);  // publishes the region
    if (sleeping_.load() > 0) {
      std::lock_guard<std::mutex> g(m_);
      cv_.notify_all();
    }
    work(generation);
    if (!spin_until([&] { return pending_.load() == 0; })) {
      std::unique_lock<std::mutex> g(m_);
      done_.wait(g, [&] { return pending_.load() == 0; });
    }
    task_.store(nullptr);
  }

 private:
  // The cores this process may run on: its CPU affinity on Linux (`taskset`, cgroups'
  // cpusets), else every core of the machine.
  static unsigned usable_cores() {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
      return static_cast<unsigned>(CPU_COUNT(&set));
    }
#endif
    return std::max(1u, std::thread::hardware_concurrency());
  }

  // One thread per usable core (the caller's included), or LAMINA_THREADS when set (1-256).
  Pool() {
    unsigned threads = usable_cores();
    if (const char* wanted = std::getenv("LAMINA_THREADS")) {
      const long n = std::strtol(wanted, nullptr, 10);
      if (n >= 1 && n <= 256) threads = static_cast<unsigned>(n);
    }
    workers_ = threads - 1;
    for (unsigned i = 0; i < workers_; ++i) {
      std::thread([this] { loop(); }).detach();
    }
  }

  // Polls `ready` for up to kSpin; returns whether it became true. No `sched_yield` in the
  // loop: beside other busy processes a yield hands the core to them for a whole time
  // slice (SmolLM2 Q4_1 decode beside two `nice 19` busy loops: 73 tok/s yielding after
  // 5 us, 104 without; 112-115 idle either way).
  template <class Ready>
  static bool spin_until(Ready ready) {
    constexpr auto kSpin = std::chrono::microseconds(50);
    const auto begin = std::chrono::steady_clock::now();
    for (int i = 0;; ++i) {
      if (ready()) return true;
      if ((i & 15) != 15) {
#if defined(__x86_64__)
        _mm_pause();
#endif
        continue;
      }
      if (std::chrono::steady_clock::now() - begin > kSpin) return ready();
    }
  }

  // Takes indices of region `generation` until none is left. The cursor holds the region's
  // generation beside the next index, and the bounds change only while it is closed, so a
  // worker that arrives late can never take an index of one region with another's bounds.
  void work(uint64_t generation) {
    while (generation != kClosed) {
      uint64_t cursor = cursor_.load();
      if ((cursor >> 32) != generation) return;
      const int i = static_cast<int>(cursor & 0xFFFFFFFFu);
      if (i >= total_.load()) return;
      if (!cursor_.compare_exchange_weak(cursor, cursor + 1)) continue;
      (*task_.load())(i);
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> g(m_);
        done_.notify_all();
      }
    }
  }

  void loop() {
    uint64_t seen = cursor_.load() >> 32;
    while (true) {
      auto fresh = [&] {
        const uint64_t generation = cursor_.load() >> 32;
        return generation != seen && generation != kClosed;
      };
      if (!spin_until(fresh)) {
        sleeping_.fetch_add(1);
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, fresh);
        sleeping_.fetch_sub(1);
      }
      const uint64_t generation = cursor_.load() >> 32;
      if (generation == kClosed) continue;  // the next region is being set up
      seen = generation;
      work(seen);
    }
  }

  unsigned workers_ = 0;
  std::mutex region_;
  std::mutex m_;
  std::condition_variable cv_;
  std::condition_variable done_;
  static constexpr uint64_t kClosed = 0xFFFFFFFFu;  // the cursor's generation between regions
  uint64_t generation_ = 0;             // regions started (under region_)
  std::atomic<uint64_t> cursor_{0};     // generation << 32 | next index
  std::atomic<int> sleeping_{0};
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> total_{0};
  std::atomic<int> pending_{0};
};

// The gradients of `fun` at `primals` for the `argnums` asked, by MLX's own vjp: the vjp of
// a primitive whose values `fun` computes with MLX's ops.
inline std::vector<mc::array> vjp_of(const std::function<mc::array(const std::vector<mc::array>&)>& fun,
                                     const std::vector<mc::array>& primals,
                                     const std::vector<mc::array>& cotangents, const std::vector<int>& argnums) {
  auto wrapped = [&fun](const std::vector<mc::array>& in) { return std::vector<mc::array>{fun(in)}; };
  auto grads = mc::vjp(wrapped, primals, cotangents).second;
  std::vector<mc::array> picked;
  for (int arg : argnums) picked.push_back(grads[arg]);
  return picked;
}

// Whether `stream` runs on the CPU (where lamina's kernels serve; MLX's own ops elsewhere).
inline bool on_cpu(const mc::Stream& stream) { return stream.device.type == mc::Device::DeviceType::cpu; }

// mlx-c's handle: a heap-allocated mlx::core::array behind `ctx` (mlx-c 0.7.0).
struct Handle {
  void* ctx;
};

inline mc::array& from_handle(Handle h) { return *static_cast<mc::array*>(h.ctx); }

inline void to_handle(Handle* out, const mc::array& a) {
  if (out->ctx != nullptr) {
    *static_cast<mc::array*>(out->ctx) = a;
  } else {
    out->ctx = new mc::array(a);
  }
}

// The reason of the last failed call on this thread (lamina_kernels_last_error).
std::string& last_error();

// An array's shape as "[2, 3]", for error messages.
inline std::string shape_text(const mc::array& a) {
  std::string text = "[";
  for (size_t i = 0; i < a.shape().size(); ++i) text += (i ? ", " : "") + std::to_string(a.shape(i));
  return text + "]";
}

// An RMSNorm's scale of one row of `k` values: 1 / sqrt(mean(row^2) + eps), in f32 (the
// RMSNorm primitive and the decode block compute it alike).
inline float rms_scale(const float* row, int k, float eps) {
  float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
  for (int i = 0; i < k; ++i) squares += row[i] * row[i];
  return 1.0f / std::sqrt(squares * (1.0f / static_cast<float>(k)) + eps);
}

// An f32, bf16 or f16 array's elements in row-major order as f32 (a strided view, or a
// half-precision x, read once into a dense buffer).
inline std::vector<float> dense_f32(const mc::array& a) {
  if (a.dtype() == mc::float32 && a.flags().row_contiguous) {
    const float* data = a.data<float>();
    return std::vector<float>(data, data + a.size());
  }
  std::vector<float> dense(a.size());
  const auto& shape = a.shape();
  const auto& strides = a.strides();
  const int nd = static_cast<int>(shape.size());
  std::vector<int64_t> index(nd, 0);
  auto element = [&](int64_t offset) -> float {
    switch (a.dtype()) {
      case mc::float32: return a.data<float>()[offset];
      case mc::bfloat16: return static_cast<float>(a.data<mc::bfloat16_t>()[offset]);
      case mc::float16: return static_cast<float>(a.data<mc::float16_t>()[offset]);
      default: return 0.0f;
    }
  };
  for (size_t i = 0; i < dense.size(); ++i) {
    int64_t offset = 0;
    for (int d = 0; d < nd; ++d) offset += index[d] * strides[d];
    dense[i] = element(offset);
    for (int d = nd - 1; d >= 0; --d) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return dense;
}

// The rows of x [..., K] as f32, one at a time, without copying x: row r is x's own memory
// for f32 rows whose values are adjacent, else a copy of that one row (strided views,
// half precision). Big temporary copies would stay resident in the allocating thread's
// malloc arena (a prompt's transposed queries: ~0.6 MB per layer).
class Rows {
 public:
  explicit Rows(const mc::array& x) : x_(x), k_(x.ndim() == 0 ? 1 : static_cast<size_t>(x.shape().back())) {}

  size_t width() const { return k_; }

  size_t count() const { return k_ == 0 ? 0 : x_.size() / k_; }

  const float* operator()(size_t r) {
    const auto& shape = x_.shape();
    const auto& strides = x_.strides();
    const int nd = static_cast<int>(shape.size());
    if (x_.dtype() == mc::float32 && x_.flags().row_contiguous) return x_.data<float>() + r * k_;
    int64_t offset = 0;
    size_t rest = r;
    for (int d = nd - 2; d >= 0; --d) {
      offset += static_cast<int64_t>(rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    const int64_t step = nd == 0 ? 1 : strides[nd - 1];
    if (x_.dtype() == mc::float32 && step == 1) return x_.data<float>() + offset;
    buffer_.resize(k_);  // only rows that need a copy allocate
    for (size_t i = 0; i < k_; ++i) {
      const int64_t at = offset + static_cast<int64_t>(i) * step;
      switch (x_.dtype()) {
        case mc::bfloat16: buffer_[i] = static_cast<float>(x_.data<mc::bfloat16_t>()[at]); break;
        case mc::float16: buffer_[i] = static_cast<float>(x_.data<mc::float16_t>()[at]); break;
        default: buffer_[i] = x_.data<float>()[at]; break;
      }
    }
    return buffer_.data();
  }

 private:
  const mc::array& x_;
  size_t k_;
  std::vector<float> buffer_;
};

}  // namespace lamina_kernels
