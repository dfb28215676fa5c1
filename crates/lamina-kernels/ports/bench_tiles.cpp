// The prompt tiles of GGUF's block formats on one core, through the tier table the machine
// picks (no MLX runtime): random blocks with small f16 factors, `rows` rows of x rounded to 8
// bits, the whole weight matrix against them; prints the best of `repeats` runs in ms and
// GMAC/s. scripts/bench_tiles.sh builds and runs it (the figures in docs/performance.md).
//
//   bench_tiles FORMAT [N K ROWS [REPEATS]]   (FORMAT: q2_k q3_k q4_k q5_k q6_k iq4_xs q5_0 q5_1 q8_0 iq4_nl,
//                                              or affine4 / affine8: MLX's affine layout with GGUF's
//                                              32-value groups and f16 factors, as Q4_0/Q4_1/Q8_0
//                                              files are held)

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../cpp/isa.h"
#include "../cpp/loops.h"
#include "block_factors.h"

using namespace lamina_kernels;

int main(int argc, char** argv) {
  static const char* const kNames[kFormats] = {"affine", "q2_k", "q3_k",  "q4_k", "q5_k",  "q6_k",
                                               "iq4_xs", "q5_0", "q5_1", "q8_0", "iq4_nl"};
  const std::string name = argc > 1 ? argv[1] : "";
  const int affine_bits = name == "affine4" ? 4 : name == "affine8" ? 8 : 0;
  int f = 0;
  for (int i = 1; i < kFormats; ++i) f = name == kNames[i] ? i : f;
  if (f == 0 && affine_bits == 0) {
    std::fprintf(stderr, "usage: bench_tiles FORMAT [N K ROWS [REPEATS]]; FORMAT one of q2_k .. iq4_nl, affine4, affine8\n");
    return 2;
  }
  const int n = argc > 2 ? std::atoi(argv[2]) : 2048, k = argc > 3 ? std::atoi(argv[3]) : 2048;
  const int m = argc > 4 ? std::atoi(argv[4]) : 256, repeats = argc > 5 ? std::atoi(argv[5]) : 20;
  const Format format = static_cast<Format>(f);
  const int bytes = f == 0 ? affine_bits * 4 : block_bytes(format), values = f == 0 ? 32 : block_values(format);
  if (n < 1 || m < 1 || repeats < 1 || k < values || k % values != 0) {
    std::fprintf(stderr, "N, ROWS and REPEATS must be positive and K a multiple of %d\n", values);
    return 2;
  }
  const Kernels& tier = kernels();
  if (f != 0 && tier.products_blocks_int8[f] == nullptr) {
    std::fprintf(stderr, "the %s tier has no prompt tile for %s\n", tier.name, kNames[f]);
    return 1;
  }
  std::mt19937 rng(1);
  std::vector<uint8_t> w(static_cast<size_t>(n) * (k / values) * bytes);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  // Small finite f16 factors (0x1c00..0x1cff: 2^-8 and a little more) where each format keeps them.
  const BlockFactors factors = f == 0 ? BlockFactors{0, 0} : block_factors(format);
  for (size_t blk = 0; blk < w.size() / bytes; ++blk) {
    for (int i = 0; i < factors.count; ++i) {
      const uint16_t h = static_cast<uint16_t>(0x1c00 + (rng() & 0xff));
      std::memcpy(&w[blk * bytes + factors.at + 2 * i], &h, 2);
    }
  }
  std::vector<uint16_t> scales(static_cast<size_t>(n) * (k / 32)), biases(scales.size());
  for (auto& h : scales) h = static_cast<uint16_t>(0x1c00 + (rng() & 0xff));
  for (auto& h : biases) h = static_cast<uint16_t>(0x9c00 + (rng() & 0xff));
  std::vector<float> x(static_cast<size_t>(m) * k), out(static_cast<size_t>(m) * n);
  for (auto& v : x) v = static_cast<float>(rng() % 2000) / 1000.0f - 1.0f;
  Problem p{x.data(), w.data(), nullptr, nullptr, out.data(), m, n, k, values, 8, false, Activations::int8};
  p.format = format;
  if (f == 0) p = Problem{x.data(), w.data(), scales.data(), biases.data(), out.data(), m, n, k, 32, affine_bits, true, Activations::int8};
  std::vector<PreparedRow> xs;
  for (int i = 0; i < m; ++i) xs.push_back(prepare(p, x.data() + static_cast<size_t>(i) * k, true, tier.groups(p)));
  double best = 1e30;
  for (int run = 0; run < repeats; ++run) {
    const auto start = std::chrono::steady_clock::now();
    (f == 0 ? tier.products_int8 : tier.products_blocks_int8[f])(p, 0, n, xs.data(), 0, m);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("%s %s n=%d k=%d rows=%d: %.2f ms, %.1f GMAC/s (one core, best of %d)\n", tier.name, name.c_str(), n, k, m,
              best * 1e3, static_cast<double>(n) * k * m / best / 1e9, repeats);
  return 0;
}
