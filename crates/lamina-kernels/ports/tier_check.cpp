// Every instruction-set tier this binary can run against the portable tier, on the tiers'
// own functions (no MLX runtime: only its header-only half types), so that the NEON file is
// run, not only compiled, on a machine without an ARM CPU: scripts/test_tiers.sh builds this
// for aarch64 and runs it under qemu-aarch64 (whose CPU has the byte dot products:
// neon_dotprod too), and builds it for x86-64 and runs it here.
// Prints one line per tier and exits non-zero on the first disagreement.

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../cpp/isa.h"
#include "../cpp/loops.h"
#include "block_factors.h"

using namespace lamina_kernels;

namespace {

std::mt19937 rng(7);

float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

std::vector<float> floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = uniform(lo, hi);
  return v;
}

uint16_t to_f16(float v) {
  const mlx::core::float16_t h(v);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok && failures++ < 20) std::printf("  MISMATCH %s\n", what.c_str());
}

bool close(float a, float b, float tolerance) { return std::fabs(a - b) <= tolerance * std::max(1.0f, std::fabs(b)); }

// `int8`: how far products with x rounded to 8 bits may differ from ref's (relative).
void quantized(const Kernels& k, const Kernels& ref, float int8_tolerance) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    if (!k.quantized(bits)) continue;
    for (int group : {32, 64, 96, 128}) {
      for (bool half : {false, true}) {
        const int n = 5, kk = 384;  // a multiple of every group
        std::vector<uint8_t> w(static_cast<size_t>(n) * kk * bits / 8);
        for (auto& b : w) b = static_cast<uint8_t>(rng());
        const int groups = kk / group;
        std::vector<float> s = floats(static_cast<size_t>(n) * groups, 0.01f, 0.1f);
        std::vector<float> b = floats(static_cast<size_t>(n) * groups);
        std::vector<uint16_t> s16, b16;
        for (auto& v : s) s16.push_back(to_f16(v));
        for (auto& v : b) b16.push_back(to_f16(v));
        const std::vector<float> x = floats(kk);
        std::vector<float> out(n);
        Problem p{x.data(), w.data(), half ? static_cast<const void*>(s16.data()) : s.data(),
                  half ? static_cast<const void*>(b16.data()) : b.data(), out.data(), 1, n, kk, group, bits, half};
        const PreparedRow prepared = prepare(p, x.data(), false, false);
        // The same with x rounded to 8 bits, where both tiers have the integer kernel.
        Problem rounded_p = p;
        rounded_p.activations = Activations::int8;
        const Kernels::RowKernel mine_int8 = k.row_kernel(rounded_p), ref_int8 = ref.row_kernel(rounded_p);
        const bool int8 = mine_int8.int8 && ref_int8.int8;
        // Each tier's x in the order its kernels read.
        const PreparedRow rounded = prepare(rounded_p, x.data(), int8, k.groups(rounded_p));
        const PreparedRow rounded_ref = prepare(rounded_p, x.data(), int8, ref.groups(rounded_p));
        std::vector<float> mine(kk), theirs(kk);
        for (int r = 0; r < n; ++r) {
          const std::string at = k.name + std::string(" bits ") + std::to_string(bits) + " group " +
                                 std::to_string(group) + (half ? " f16" : " f32") + " row " + std::to_string(r);
          expect(close(k.dot_for(bits)(p, r, x.data(), prepared), ref.dot_for(bits)(p, r, x.data(), prepared), 1e-4f),
                 "dot " + at);
          if (int8) {
            expect(close(mine_int8.dot(rounded_p, r, x.data(), rounded),
                         ref_int8.dot(rounded_p, r, x.data(), rounded_ref), int8_tolerance),
                   "8-bit activations dot " + at);
          }
          k.dequantize_for(bits)(p, r, mine.data());
          ref.dequantize_for(bits)(p, r, theirs.data());
          for (int j = 0; j < kk; ++j) expect(close(mine[j], theirs[j], 1e-5f), "dequantize " + at);
        }
      }
    }
  }
}

// Affine rows in GGUF's layout (32-value groups, f16 or f32 factors) with x rounded to 8
// bits: the tier's tile of several rows of x equals its one-row kernel pair by pair, bit for
// bit (the tile's rows of x in the tiers' 12-, 3- and 2-row shapes and their edges).
void affine_tiles(const Kernels& k) {
  if (k.products_int8 == nullptr) return;
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (bool half : {false, true}) {
      const int n = 5, kk = 320, m = 13, groups = kk / 32;
      std::vector<uint8_t> w(static_cast<size_t>(n) * kk * bits / 8);
      for (auto& b : w) b = static_cast<uint8_t>(rng());
      std::vector<float> s = floats(static_cast<size_t>(n) * groups, 0.01f, 0.1f);
      std::vector<float> b = floats(static_cast<size_t>(n) * groups);
      std::vector<uint16_t> s16, b16;
      for (auto& v : s) s16.push_back(to_f16(v));
      for (auto& v : b) b16.push_back(to_f16(v));
      const std::vector<float> x = floats(static_cast<size_t>(m) * kk);
      std::vector<float> tile(static_cast<size_t>(m) * n);
      Problem p{x.data(), w.data(), half ? static_cast<const void*>(s16.data()) : s.data(),
                half ? static_cast<const void*>(b16.data()) : b.data(), tile.data(), m, n, kk, 32, bits, half,
                Activations::int8};
      const Kernels::RowKernel one = k.row_kernel(p);
      if (!one.int8) continue;
      std::vector<PreparedRow> xs;
      for (int i = 0; i < m; ++i) xs.push_back(prepare(p, x.data() + static_cast<size_t>(i) * kk, true, k.groups(p)));
      std::vector<float> alone(tile.size());
      for (int i = 0; i < m; ++i) {
        for (int r = 0; r < n; ++r) alone[static_cast<size_t>(i) * n + r] = one.dot(p, r, x.data() + static_cast<size_t>(i) * kk, xs[i]);
      }
      k.products_int8(p, 0, n, xs.data(), 0, m);
      expect(tile == alone, std::string(k.name) + " affine tile bits " + std::to_string(bits) + (half ? " f16" : " f32"));
    }
  }
}

void dots(const Kernels& k, const Kernels& ref) {
  for (int m : {1, 3, 5, 9}) {
    for (int kk : {7, 64, 100}) {
      const std::vector<float> w0 = floats(kk), w1 = floats(kk), w2 = floats(kk), w3 = floats(kk);
      const std::vector<float> x = floats(static_cast<size_t>(m) * kk);
      std::vector<float> mine(static_cast<size_t>(m) * 4), theirs(static_cast<size_t>(m) * 4);
      const std::string at = std::string(k.name) + " m " + std::to_string(m) + " k " + std::to_string(kk);
      k.dots(w0.data(), x.data(), m, kk, mine.data(), 4);
      ref.dots(w0.data(), x.data(), m, kk, theirs.data(), 4);
      for (int i = 0; i < m; ++i) expect(close(mine[i * 4], theirs[i * 4], 1e-4f), "dots " + at);
      const float* four[4] = {w0.data(), w1.data(), w2.data(), w3.data()};
      for (int a = 0; a < 4; ++a) ref.dots(four[a], x.data(), m, kk, theirs.data() + a, 4);
      if (k.dots2 != nullptr) {
        k.dots2(w0.data(), w1.data(), x.data(), m, kk, mine.data(), 4);
        for (int i = 0; i < m; ++i)
          for (int a = 0; a < 2; ++a) expect(close(mine[i * 4 + a], theirs[i * 4 + a], 1e-4f), "dots2 " + at);
      }
      if (k.dots4 != nullptr) {
        k.dots4(four, x.data(), m, kk, mine.data(), 4);
        for (size_t i = 0; i < mine.size(); ++i) expect(close(mine[i], theirs[i], 1e-4f), "dots4 " + at);
      }
    }
  }
}

void halves(const Kernels& k, const Kernels& ref) {
  std::vector<uint16_t> h;
  for (float v : floats(37, -4.0f, 4.0f)) h.push_back(to_f16(v));
  std::vector<float> mine(h.size()), theirs(h.size());
  k.widen_f16(h.data(), static_cast<int>(h.size()), mine.data());
  ref.widen_f16(h.data(), static_cast<int>(h.size()), theirs.data());
  expect(mine == theirs, std::string(k.name) + " widen_f16");
  if (!k.half()) return;
  for (bool bf16 : {false, true}) {
    const std::vector<float> x = floats(h.size());
    expect(close(k.half_dot(h.data(), x.data(), static_cast<int>(h.size()), bf16),
                 ref.half_dot(h.data(), x.data(), static_cast<int>(h.size()), bf16), 1e-4f),
           std::string(k.name) + " half_dot");
    k.half_widen(h.data(), mine.data(), static_cast<int>(h.size()), bf16);
    ref.half_widen(h.data(), theirs.data(), static_cast<int>(h.size()), bf16);
    expect(mine == theirs, std::string(k.name) + " half_widen");
    std::vector<uint16_t> a(x.size()), b(x.size());
    k.half_narrow(x.data(), a.data(), x.size(), bf16);
    ref.half_narrow(x.data(), b.data(), x.size(), bf16);
    expect(a == b, std::string(k.name) + " half_narrow");
  }
}

void attention(const Kernels& k, const Kernels& ref) {
  struct Shape { int rep, d, dv, n; };
  // (Gemma 3's four heads of 256 and larger groups in register blocks; three heads of 128 in
  // none of them.)
  for (Shape s : {Shape{1, 16, 16, 1}, Shape{4, 64, 64, 40}, Shape{8, 64, 64, 17}, Shape{2, 5, 3, 9}, Shape{3, 32, 16, 33},
                  Shape{4, 256, 256, 40}, Shape{1, 256, 256, 20}, Shape{3, 128, 128, 9}}) {
    for (float softcap : {0.0f, 0.5f}) {
      const std::vector<float> q = floats(static_cast<size_t>(s.rep) * s.d);
      const std::vector<float> keys = floats(static_cast<size_t>(s.n + 2) * s.d);
      const std::vector<float> values = floats(static_cast<size_t>(s.n + 2) * s.dv);
      auto run = [&](void (*attend)(const Part&), std::vector<float>& out, std::vector<float>& stats) {
        std::vector<float> scores(static_cast<size_t>(s.rep) * s.n);
        out.assign(static_cast<size_t>(s.rep) * s.dv, 0.0f);
        stats.assign(2 * static_cast<size_t>(s.rep), 0.0f);
        const Part p{q.data(), keys.data(), values.data(), s.rep, s.d, s.dv, 2, s.n + 2, s.d, s.dv,
                     0.3f, softcap, scores.data(), stats.data(), stats.data() + s.rep, out.data()};
        attend(p);
      };
      std::vector<float> out, stats, ref_out, ref_stats;
      run(ref.attend, ref_out, ref_stats);
      const std::string at = std::string(k.name) + " rep " + std::to_string(s.rep) + " d " + std::to_string(s.d) +
                             " dv " + std::to_string(s.dv) + " n " + std::to_string(s.n) +
                             (softcap > 0 ? " softcap" : "");
      auto compare = [&](const char* which) {
        for (size_t i = 0; i < out.size(); ++i) expect(close(out[i], ref_out[i], 1e-4f), std::string(which) + " out " + at);
        for (size_t i = 0; i < stats.size(); ++i) expect(close(stats[i], ref_stats[i], 1e-4f), std::string(which) + " stats " + at);
      };
      run(k.attend, out, stats);
      compare("attend");
      if (k.attend16 != nullptr && s.d % 16 == 0 && s.dv % 16 == 0 && softcap == 0.0f) {
        run(k.attend16, out, stats);
        compare("attend16");
      }
    }
  }
}

// One format's rows (two groups of eight chunks and `tail` more for 32-value blocks).
void one_format(const Kernels& k, const Kernels& ref, float tolerance, Format format, int tail) {
  const int f = static_cast<int>(format);
  const int bytes = block_bytes(format), values = block_values(format);
  const int n = 3, kk = values == 32 ? 32 * (16 + tail) : 512;
  const int per_row = kk / values * bytes;
  std::vector<uint8_t> w(static_cast<size_t>(n) * per_row);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  // The f16 factors: d (and dmin) where each format keeps them.
  const BlockFactors factors = block_factors(format);
  for (size_t blk = 0; blk < w.size() / bytes; ++blk) {
    for (int i = 0; i < factors.count; ++i) {
      const uint16_t h = to_f16(uniform(0.001f, 0.05f));
      std::memcpy(&w[blk * bytes + factors.at + 2 * i], &h, 2);
    }
  }
  const int m = 13;  // the AVX2 tiles' 8-, 4- and 3-row shapes and their edges
  const std::vector<float> x = floats(static_cast<size_t>(m) * kk);
  std::vector<float> tile(static_cast<size_t>(m) * n), theirs(static_cast<size_t>(m) * n);
  Problem p{x.data(), w.data(), nullptr, nullptr, tile.data(), m, n, kk, values, 8, false, Activations::int8};
  p.format = format;
  std::vector<PreparedRow> xs, xs_ref;
  for (int i = 0; i < m; ++i) {
    xs.push_back(prepare(p, x.data() + static_cast<size_t>(i) * kk, true, k.groups(p)));
    xs_ref.push_back(prepare(p, x.data() + static_cast<size_t>(i) * kk, true, ref.groups(p)));
  }
  const std::string at_text = std::string(k.name) + " format " + std::to_string(f) + " k " + std::to_string(kk);
  for (int r = 0; r < n; ++r) {
    std::vector<float> mine_row(kk), their_row(kk);
    k.dequantize_blocks[f](p, r, mine_row.data());
    ref.dequantize_blocks[f](p, r, their_row.data());
    expect(mine_row == their_row, "dequantize " + at_text);
    for (int i = 0; i < m; ++i) {
      const float mine = k.dot_blocks_int8[f](p, r, nullptr, xs[i]);
      theirs[static_cast<size_t>(i) * n + r] = ref.dot_blocks_int8[f](p, r, nullptr, xs_ref[i]);
      expect(close(mine, theirs[static_cast<size_t>(i) * n + r], tolerance), "dot " + at_text);
      tile[static_cast<size_t>(i) * n + r] = mine;
    }
  }
  // The tile computes each pair as the one-row kernel does, bit for bit.
  if (k.products_blocks_int8[f] != nullptr) {
    std::vector<float> one_by_one = tile;
    k.products_blocks_int8[f](p, 0, n, xs.data(), 0, m);
    expect(tile == one_by_one, "tile " + at_text);
  }
}

// GGUF block formats: random blocks with small finite f16 factors, each tier's one-row
// product (x rounded per 256, or per 32) and its tile of several rows of x against the portable tier's,
// and their dequantized rows bit for bit.
// `same_sums`: only the 32-value formats ref has kernels of its own for (not the portable
// loops), whose integer sums k's kernels add up in the same float operations.
void blocks(const Kernels& k, const Kernels& ref, float tolerance, bool same_sums = false) {
  // 32-value blocks: two groups of eight chunks and four, two or three more (the grouped
  // tiles' last chunks, one at a time).
  for (const int tail : {4, 2, 3}) {
    for (int f = 1; f < kFormats; ++f) {
      // (Q8_0 read in groups on one tier and chunk by chunk on the other adds its sums in
      // another order.)
      const bool regrouped = f == static_cast<int>(Format::q8_0) && k.grouped_q8_0 != ref.grouped_q8_0;
      if (same_sums && (ref.products_blocks_int8[f] == nullptr || !small_blocks(static_cast<Format>(f)) || regrouped)) {
        continue;
      }
      if (tail != 4 && !small_blocks(static_cast<Format>(f))) continue;
      one_format(k, ref, tolerance, static_cast<Format>(f), tail);
    }
  }
}

// x rounded to 8 bits: the same scale and bytes as the portable loop, ties included.
void rounding(const Kernels& k, const Kernels& ref) {
  for (int size : {32, 256}) {
    for (int round = 0; round < 3; ++round) {
      std::vector<float> values = floats(static_cast<size_t>(size), -3.0f, 3.0f);
      if (round == 1) {  // d = 1: every value halfway between two integers
        for (int j = 0; j < size; ++j) values[j] = static_cast<float>(j % 100) - 49.5f;
        values[0] = 127.0f;
      }
      if (round == 2) values.assign(values.size(), 0.0f);  // d = 0
      std::vector<int8_t> mine(size), theirs(size);
      const float d = k.round_chunk(values.data(), size, mine.data());
      const float d_ref = ref.round_chunk(values.data(), size, theirs.data());
      expect(d == d_ref && mine == theirs, std::string(k.name) + " round_chunk " + std::to_string(size));
    }
  }
}

// The gated unit's activations: within float rounding of the portable tier's for every
// gate, over values from far below zero to far above it (the exponential's clamps), and each
// value the same wherever it sits in a run (alone, or in a run's vector part or its tail).
void gating(const Kernels& k, const Kernels& ref) {
  if (k.gated == nullptr) {
    expect(false, std::string(k.name) + " has no gated kernel");
    return;
  }
  for (Gate gate : {Gate::Silu, Gate::GeluTanh, Gate::GeluErf, Gate::None}) {
    const std::string name = std::string(k.name) + " gated " + std::to_string(static_cast<int>(gate));
    for (size_t n : {1, 3, 8, 13, 40}) {
      std::vector<float> values = floats(n, -12.0f, 12.0f), up = floats(n, -2.0f, 2.0f);
      values[0] = n == 13 ? -100.0f : n == 40 ? 100.0f : values[0];
      std::vector<float> mine = values, theirs = values;
      k.gated(gate, mine.data(), up.data(), n);
      ref.gated(gate, theirs.data(), up.data(), n);
      for (size_t j = 0; j < n; ++j) {
        expect(close(mine[j], theirs[j], 1e-5f), name + " n " + std::to_string(n) + " at " + std::to_string(j));
        float alone = values[j];
        k.gated(gate, &alone, &up[j], 1);
        expect(alone == mine[j], name + " alone differs at " + std::to_string(j) + " of " + std::to_string(n));
      }
    }
  }
}

void check(const Kernels& k, const Kernels& ref) {
  const int before = failures;
  rounding(k, ref);
  quantized(k, ref, 1e-4f);
  affine_tiles(k);
  blocks(k, ref, 1e-4f);
  dots(k, ref);
  halves(k, ref);
  attention(k, ref);
  gating(k, ref);
  std::printf("tier %-12s %s\n", k.name, failures == before ? "agrees with portable" : "DISAGREES");
}

}  // namespace

int main() {
  const Kernels portable = portable_kernels();
  std::vector<Kernels> tiers;
#if defined(__aarch64__)
  tiers.push_back(neon_kernels());
  if (kernels().isa == Isa::neon_dotprod) tiers.push_back(neon_dotprod_kernels(tiers.back()));
#endif
#if defined(__x86_64__)
  // What this machine runs (the tier kernels() picks and every one below it).
  const Isa best = kernels().isa;
  Kernels k = portable;
  if (best >= Isa::avx2) tiers.push_back(k = avx2_kernels(k));
  if (best >= Isa::avx512) tiers.push_back(k = avx512_kernels(k));
  if (best >= Isa::avx512_vbmi) tiers.push_back(k = avx512_vbmi_kernels(k));
#endif
  std::printf("machine tier: %s\n", kernels().name);
  for (const auto& tier : tiers) check(tier, portable);
#if defined(__x86_64__)
  // VNNI's byte dot products give the integer sums AVX2's give: the same results, bit for bit,
  // where the floats that follow are the same (not the K-quants: avx512_vnni_blocks.cpp).
  if (best >= Isa::avx512_vbmi) {
    const int before = failures;
    quantized(tiers.back(), tiers.front(), 0.0f);
    blocks(tiers.back(), tiers.front(), 0.0f, true);
    std::printf("tier %-12s %s\n", tiers.back().name, failures == before ? "equals avx2 (integer products)" : "DIFFERS from avx2");
  }
#endif
#if defined(__aarch64__)
  // `sdot` gives the integer sums NEON's pairwise adds give: every block format's results,
  // bit for bit.
  if (tiers.back().isa == Isa::neon_dotprod) {
    const int before = failures;
    quantized(tiers.back(), tiers.front(), 0.0f);
    blocks(tiers.back(), tiers.front(), 0.0f);
    std::printf("tier %-12s %s\n", tiers.back().name, failures == before ? "equals neon (integer products)" : "DIFFERS from neon");
  }
#endif
  return failures == 0 ? 0 : 1;
}
