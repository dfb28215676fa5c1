// What the decoding primitives share (fused.cpp: one layer's work per node;
// decode_block.cpp: a whole block per node): the gated unit's activations and the decode
// attention over a KV cache's buffers, and the cache outputs they write in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "mlx/array.h"

#include "isa.h"

namespace lamina_kernels {

namespace mc = mlx::core;

// Attention of one query position: q [B, H, 1, D]; the new k [B, H_kv, 1, D] and
// v [B, H_kv, 1, D_v]; the caches keys [B, H_kv, C, D] and values [B, H_kv, C, D_v].
// The new key and value go to slot `slot`; the query attends to slots [0, length) (the
// last `window` of them when window > 0; a batch row's from its RowPlaces::first). Outputs:
// [B, 1, H * D_v], and the caches.
struct Attend {
  int batch, heads, kv_heads, d, dv, capacity, slot, length, window;
  float scale, softcap;
  int in_place;  // write into the input caches, which the outputs then share
};

// Where each row of a decoding batch sits in the caches it shares with the others (rows
// left-padded to a common slot): `places` holds int32 pairs per batch row, the first slot
// the row attends (the slots before it are padding) and its token's position (RoPE); null
// when every row starts at slot 0 at the same position.
struct RowPlaces {
  const int32_t* places = nullptr;

  // Row b's first slot, within [0, slot].
  int first(int b, int slot) const { return places == nullptr ? 0 : std::clamp<int>(places[2 * b], 0, slot); }
  // Row b's position, `shared` when the rows share one.
  int position(int b, int shared) const { return places == nullptr ? shared : std::max<int>(places[2 * b + 1], 0); }
};

// Keys a query attends are split into parts of kAttendPart counted from the first key it
// sees, and the parts' softmax statistics combined in order (attend_query): the same split
// for a prompt's query as for a decoded token's, whatever the batch, the window or the pool,
// so that a query's numbers depend on its keys alone.
constexpr int kAttendPart = 256;

// One query group's attention (`whole`: its rep heads' q and the keys [begin, end), any
// length) normalised into `out` [rep, D_v], split as kAttendPart says.
void attend_query(const Part& whole, float* out);

// The attention of Attend's query heads `q` [B, H, D] over the caches' slots, into
// `out` [B, H * D_v] (the new key and value already written at the slot).
void attend_decode(const Attend& a, RowPlaces rows, const float* q, const float* keys, const float* values,
                   float* out);

// Points a part of KV group `g` (batch row * H_kv + KV head) at its keys and values: rows
// [part.begin, part.end) of `part.keys`/`part.values` (which may be a buffer holding just
// those rows, with begin and end moved to match).
using PartRows = std::function<void(int g, Part& part)>;

// attend_decode over rows that `rows` provides, one task per part.
void attend_parts(const Attend& a, RowPlaces places, const float* q, float* out, const PartRows& rows);

// The new key and value ([B * H_kv] rows of D and D_v) written at the slot of each KV
// group's cache rows.
void write_slot(const Attend& a, const float* k, const float* v, float* keys, float* values);

// The cache buffer `out` receives: the input's own when the caller allows writing in
// place (and the input is a plain dense buffer), else a new one. Returns whether the
// input has to be copied into it (copy_words, in the node's task).
bool take_buffer(const mc::array& in, mc::array& out, bool in_place);

// A 4-byte-element array (f32 or u32) copied to `dst` in row-major order.
void copy_words(const mc::array& in, uint32_t* dst);

// An f32 input's elements in row-major order: its own memory when row-contiguous, else a
// dense copy held in `storage`.
const float* dense_input(const mc::array& in, std::vector<float>& storage);

// The RowPlaces in `inputs[at]` (an int32 [B, 2] array, copied into `storage`), or none
// when there is no such input.
RowPlaces row_places(const std::vector<mc::array>& inputs, size_t at, std::vector<int32_t>& storage);

// Whether `places` can be a batch of `batch` rows' RowPlaces: int32 [batch, 2].
bool row_places_fit(const mc::array& places, int batch);

// Which cache inputs have to be copied into their outputs (see CacheOutputs::take).
struct CacheOutputs {
  bool copy_keys, copy_values;

  // Buffers for the cache outputs `outputs[1]` and `outputs[2]`: the inputs' own when the
  // caller allows writing in place (and they are plain dense buffers), else new ones.
  static CacheOutputs take(const mc::array& keys, const mc::array& values, std::vector<mc::array>& outputs,
                           bool in_place);

  // The inputs copied into the outputs where `take` gave new buffers (in the node's task).
  void fill(const mc::array& keys, const mc::array& values, std::vector<mc::array>& outputs) const;
};

}  // namespace lamina_kernels
