// What lamina's CPU kernels share: a pool of threads that sleep between parallel regions,
// BLAS's sgemm, mlx-c's array handles and the last error's text.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "mlx/array.h"

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);

namespace lamina_kernels {

namespace mc = mlx::core;

constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

// A pool of threads that sleep on a condition variable between parallel regions.

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
    task_.store(&f);
    total_.store(n);
    pending_.store(n);
    next_.store(0);
    {
      std::lock_guard<std::mutex> g(m_);
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> g(m_);
    done_.wait(g, [&] { return pending_.load() == 0; });
    task_.store(nullptr);
  }

 private:
  Pool() {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    workers_ = cores - 1;
    for (unsigned i = 0; i < workers_; ++i) {
      std::thread([this] { loop(); }).detach();
    }
  }

  void work() {
    while (true) {
      int i = next_.fetch_add(1);
      if (i >= total_.load()) break;
      const std::function<void(int)>* task = task_.load();
      if (task != nullptr) (*task)(i);
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> g(m_);
        done_.notify_all();
      }
    }
  }

  void loop() {
    uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return generation_ != seen; });
        seen = generation_;
      }
      work();
    }
  }

  unsigned workers_ = 0;
  std::mutex region_;
  std::mutex m_;
  std::condition_variable cv_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> next_{0};
  std::atomic<int> total_{0};
  std::atomic<int> pending_{0};
};

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

#if defined(__x86_64__)
inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

}  // namespace lamina_kernels
