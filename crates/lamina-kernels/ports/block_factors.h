// Where a GGUF block keeps its f16 factors, for the harnesses that fill blocks with random
// bytes and then set these to small finite values (tier_check.cpp, bench_tiles.cpp).
#pragma once

#include "../cpp/blocks.h"

namespace lamina_kernels {

// d's byte offset in a block of `f`, and how many f16 factors start there (d, or d and dmin
// for Q2_K, Q4_K and Q5_K, d and m for Q5_1).
struct BlockFactors {
  int at, count;
};

inline BlockFactors block_factors(Format f) {
  const int at = f == Format::q2_k ? 80 : f == Format::q3_k ? 108 : f == Format::q6_k ? 208 : 0;
  const bool two = f == Format::q2_k || f == Format::q4_k || f == Format::q5_k || f == Format::q5_1;
  return {at, two ? 2 : 1};
}

}  // namespace lamina_kernels
