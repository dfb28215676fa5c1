// GGUF's block formats in plain C++ (blocks.h): each block unpacked into its integer
// values and scales, then dequantized or multiplied with x rounded per 256 values (per 32
// for the 32-value types) as integers. The portable tier's kernels for every format, the reference the faster tiers are
// tested against, and the exact product (a row dequantized, then the tier's dot).

#include <cstring>
#include <vector>

#include "isa.h"
#include "loops.h"

namespace lamina_kernels {
namespace {

float half_at(const uint8_t* b) { return widen_half(u16_at(b), false); }


// Q2_K and Q3_K: 2-bit values, 32 bytes per 128 values holding four shifts of 32 values.
template <class Value>
void two_bit_values(const uint8_t* qs, int8_t* q, Value value) {
  for (int j = 0; j < kBlockValues; ++j) {
    const int n = j / 128, shift = 2 * ((j % 128) / 32), at = 32 * n + j % 32;
    q[j] = value(j, static_cast<int8_t>((qs[at] >> shift) & 3));
  }
}

void unpack_q2_k(const uint8_t* b, Unpacked& u) {
  const uint8_t* scales = b;
  for (int s = 0; s < 16; ++s) {
    u.scale[s] = static_cast<int8_t>(scales[s] & 0xF);
    u.min[s] = static_cast<int8_t>(scales[s] >> 4);
  }
  two_bit_values(b + 16, u.q, [](int, int8_t v) { return v; });
  u.d = half_at(b + 80);
  u.dmin = half_at(b + 82);
}

void unpack_q3_k(const uint8_t* b, Unpacked& u) {
  const uint8_t *hmask = b, *packed = b + 96;
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? packed[i] & 0xF : packed[i - 8] >> 4;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    u.scale[i] = static_cast<int8_t>((low | (high << 4)) - 32);
    u.min[i] = 0;
  }
  // The third bit of value j: bit (j / 32) of hmask[j % 32], set meaning "no -4".
  two_bit_values(b + 32, u.q, [hmask](int j, int8_t v) {
    return static_cast<int8_t>(v - ((hmask[j % 32] >> (j / 32)) & 1 ? 0 : 4));
  });
  u.d = half_at(b + 108);
  u.dmin = 0.0f;
}

// Q4_K and Q5_K: per 64 values, 32 bytes whose low nibbles are the first 32 values and high
// nibbles the next; Q5_K's fifth bits in qh (bit 2c of qh[l] for value 64c + l, bit 2c + 1
// for 64c + 32 + l).
void unpack_q4_q5_k(const uint8_t* b, Unpacked& u, bool five) {
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = five ? b + 48 : b + 16;
  for (int sub = 0; sub < 8; ++sub) {
    uint8_t sc, m;
    scale_min_k4(sub, scales, sc, m);
    u.scale[2 * sub] = u.scale[2 * sub + 1] = static_cast<int8_t>(sc);
    u.min[2 * sub] = u.min[2 * sub + 1] = static_cast<int8_t>(m);
    const uint8_t* bytes = qs + 32 * (sub / 2);
    for (int l = 0; l < 32; ++l) {
      int v = sub % 2 == 0 ? bytes[l] & 0xF : bytes[l] >> 4;
      if (five && (qh[l] >> sub) & 1) v += 16;
      u.q[32 * sub + l] = static_cast<int8_t>(v);
    }
  }
  u.d = half_at(b);
  u.dmin = half_at(b + 2);
}

void unpack_q6_k(const uint8_t* b, Unpacked& u) {
  for (int n = 0; n < 2; ++n) {
    const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
    int8_t* q = u.q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<int8_t>(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
      q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
  std::memcpy(u.scale, b + 192, 16);
  std::memset(u.min, 0, sizeof u.min);
  u.d = half_at(b + 208);
  u.dmin = 0.0f;
}

void unpack_iq4_xs(const uint8_t* b, Unpacked& u) {
  const uint16_t high = u16_at(b + 2);
  const uint8_t *low = b + 4, *qs = b + 8;
  for (int sub = 0; sub < 8; ++sub) {
    const int ls = ((low[sub / 2] >> (4 * (sub % 2))) & 0xF) | (((high >> (2 * sub)) & 3) << 4);
    u.scale[2 * sub] = u.scale[2 * sub + 1] = static_cast<int8_t>(ls - 32);
    const uint8_t* bytes = qs + 16 * sub;
    for (int j = 0; j < 16; ++j) {
      u.q[32 * sub + j] = kIq4Values[bytes[j] & 0xF];
      u.q[32 * sub + 16 + j] = kIq4Values[bytes[j] >> 4];
    }
  }
  std::memset(u.min, 0, sizeof u.min);
  u.d = half_at(b);
  u.dmin = 0.0f;
}

// The 32-value types: 32 values, scale 1, no minimum (Q5_1 sets its offset m as dmin with
// minimum -1: `- m x -1` adds m exactly, gguf-py's `d * q + m`).
void one_scale(Unpacked& u, float d) {
  u.d = d;
  u.dmin = 0.0f;
  u.scale[0] = u.scale[1] = 1;
  u.min[0] = u.min[1] = 0;
}

// Q5_0 and Q5_1: value j < 16 the low nibble of qs[j], j + 16 its high nibble; bit j of
// the 32-bit qh the fifth bit of value j.
void five_bit_values(const uint8_t* qh_bytes, const uint8_t* qs, int offset, int8_t* q) {
  uint32_t qh = 0;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset);
    q[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
  }
}

void unpack_q5_0(const uint8_t* b, Unpacked& u) {
  five_bit_values(b + 2, b + 6, 16, u.q);
  one_scale(u, half_at(b));
}

void unpack_q5_1(const uint8_t* b, Unpacked& u) {
  five_bit_values(b + 4, b + 8, 0, u.q);
  one_scale(u, half_at(b));
  u.dmin = half_at(b + 2);
  u.min[0] = u.min[1] = -1;
}

void unpack_q8_0(const uint8_t* b, Unpacked& u) {
  std::memcpy(u.q, b + 2, 32);
  one_scale(u, half_at(b));
}

void unpack_iq4_nl(const uint8_t* b, Unpacked& u) {
  for (int j = 0; j < 16; ++j) {
    u.q[j] = kIq4Values[b[2 + j] & 0xF];
    u.q[j + 16] = kIq4Values[b[2 + j] >> 4];
  }
  one_scale(u, half_at(b));
}

void dequantize(const Problem& p, int r, float* dst) {
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format), values = block_values(p.format);
  Unpacked u;
  for (int blk = 0; blk < p.k / values; ++blk) {
    unpack(p.format, row + static_cast<size_t>(blk) * bytes, u);
    float* y = dst + static_cast<size_t>(blk) * values;
    for (int j = 0; j < values; ++j) {
      y[j] = (u.d * static_cast<float>(u.scale[j / 16])) * static_cast<float>(u.q[j]) -
             u.dmin * static_cast<float>(u.min[j / 16]);
    }
  }
}

// Per block: d_x (d isum - dmin msum), isum = sum over 16-value groups of scale x (integer
// dot of q with x's bytes), msum = sum of min x (x's byte sum) — ggml's vec_dot_*_q8_K.
float dot_int8(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format);
  Unpacked u;
  float total = 0.0f;
  for (int blk = 0; blk < p.k / kBlockValues; ++blk) {
    unpack(p.format, row + static_cast<size_t>(blk) * bytes, u);
    const int8_t* xq = x.q8.data() + static_cast<size_t>(blk) * kBlockValues;
    const int16_t* sums = x.bsums.data() + static_cast<size_t>(blk) * 16;
    int32_t isum = 0, msum = 0;
    for (int s = 0; s < 16; ++s) {
      int32_t dot = 0;
      for (int j = 16 * s; j < 16 * s + 16; ++j) dot += u.q[j] * xq[block_order(j)];
      isum += u.scale[s] * dot;
      msum += u.min[s] * sums[s];
    }
    total += block_sum(u.d, u.dmin, x.q8_scales[blk], isum, msum);
  }
  return total;
}

// The 32-value types (blocks.h's code_offset): per block (d x d_x) x the integer dot of its
// codes with x's bytes, plus its bias (m - offset x d) x x's exact sum over the block.
float dot_int8_small(const Problem& p, int r, const float*, const PreparedRow& x) {
  const uint8_t* row = p.row(r);
  const int bytes = block_bytes(p.format), offset = code_offset(p.format);
  Unpacked u;
  float total = 0.0f, bias = 0.0f;
  for (int c = 0; c < p.k / 32; ++c) {
    unpack(p.format, row + static_cast<size_t>(c) * bytes, u);
    const int8_t* xq = x.q8.data() + static_cast<size_t>(c) * 32;
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += (u.q[j] + offset) * xq[j];
    total += (u.d * x.q8_scales[c]) * static_cast<float>(isum);
    bias += (-(u.dmin * u.min[0]) - static_cast<float>(offset) * u.d) * x.group_sums[c];
  }
  return total + bias;
}

}  // namespace

void unpack(Format f, const uint8_t* block, Unpacked& out) {
  switch (f) {
    case Format::q2_k: return unpack_q2_k(block, out);
    case Format::q3_k: return unpack_q3_k(block, out);
    case Format::q4_k: return unpack_q4_q5_k(block, out, false);
    case Format::q5_k: return unpack_q4_q5_k(block, out, true);
    case Format::q6_k: return unpack_q6_k(block, out);
    case Format::iq4_xs: return unpack_iq4_xs(block, out);
    case Format::q5_0: return unpack_q5_0(block, out);
    case Format::q5_1: return unpack_q5_1(block, out);
    case Format::q8_0: return unpack_q8_0(block, out);
    case Format::iq4_nl: return unpack_iq4_nl(block, out);
    case Format::affine: break;
  }
  throw std::invalid_argument("unpack: the affine layout has no blocks");
}

float dot_dequantized(const Problem& p, int r, const float* x, const PreparedRow&) {
  thread_local std::vector<float> row;
  row.resize(p.k);
  kernels().dequantize_for(p)(p, r, row.data());
  float out = 0.0f;
  kernels().dots(row.data(), x, 1, p.k, &out, 1);
  return out;
}

void add_portable_blocks(Kernels& k) {
  for (int f = 1; f < kFormats; ++f) {
    k.dot_blocks_int8[f] = small_blocks(static_cast<Format>(f)) ? dot_int8_small : dot_int8;
    k.dequantize_blocks[f] = dequantize;
  }
}

}  // namespace lamina_kernels
