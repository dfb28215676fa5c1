// A KV cache's rows moved in one graph node with plain memory copies: a decoding batch's
// rows joining it (each padded to the batch's slots), leaving it (the others closed up)
// and its slots growing. MLX's concatenations and slices do the same as several nodes of
// strided element copies into new buffers (a 16-row SmolLM2 batch spent ~0.1 s a leaving
// row in them).
//
// Arrays are [B, H, C, W] of any dtype. Output row i takes `count` positions of row `row`
// of input `source` from position `from`, at position `to`; the positions before `to` are
// zero (a batch's left padding, masked) and those after the copy are left as the buffer
// holds them (a cache's room, which it writes before it reads; a new buffer's pages are
// not even touched). In place (one input, which the caller owns alone), the output shares
// the input's buffer and rows only move towards its start.

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/ops.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

#include "common.h"

namespace mc = mlx::core;

namespace lamina_kernels {
namespace {

struct Span {
  int source, row, from, to, count;
};

// What the node does: each output row's span, the output's positions, in place or not.
struct Moves {
  std::vector<Span> spans;
  int heads, positions;
  size_t position_bytes;
  bool in_place;
};

// Byte offsets of (output row i, head h)'s copy in the output and in its source.
struct Place {
  size_t row_begin, copy_begin, copy_bytes, row_end, source_begin;
};

Place place_of(const Moves& m, const std::vector<mc::array>& inputs, int i, int h) {
  const Span& s = m.spans[i];
  const size_t p = m.position_bytes;
  const size_t row_begin = (static_cast<size_t>(i) * m.heads + h) * m.positions * p;
  const size_t capacity = inputs[s.source].shape(2);
  const size_t source_begin = ((static_cast<size_t>(s.row) * m.heads + h) * capacity + s.from) * p;
  return Place{row_begin, row_begin + s.to * p, s.count * p, row_begin + m.positions * p, source_begin};
}

// Whether moving every (row, head) in order within one buffer never writes over bytes a
// later move still reads: each copy lands at or before its source, and each output row
// ends at or before the next source begins.
bool movable_in_place(const Moves& m, const std::vector<mc::array>& inputs) {
  const int rows = static_cast<int>(m.spans.size());
  for (int i = 0; i < rows; ++i) {
    for (int h = 0; h < m.heads; ++h) {
      const Place at = place_of(m, inputs, i, h);
      if (at.copy_begin > at.source_begin) return false;
      const bool last = i == rows - 1 && h == m.heads - 1;
      if (!last) {
        const Place next = h + 1 < m.heads ? place_of(m, inputs, i, h + 1) : place_of(m, inputs, i + 1, 0);
        if (next.source_begin < at.source_begin || at.row_end > next.source_begin) return false;
      }
    }
  }
  return true;
}

// A [B, H, C, W] array of any strides as dense bytes in `storage`.
const char* dense_bytes(const mc::array& in, std::vector<char>& storage) {
  const size_t item = in.itemsize();
  storage.resize(in.nbytes());
  const char* src = static_cast<const char*>(in.data<void>());
  const auto& st = in.strides();
  char* dst = storage.data();
  for (int b = 0; b < in.shape(0); ++b) {
    for (int h = 0; h < in.shape(1); ++h) {
      for (int c = 0; c < in.shape(2); ++c) {
        const char* row = src + (b * st[0] + h * st[1] + c * st[2]) * static_cast<int64_t>(item);
        if (st[3] == 1) {
          std::memcpy(dst, row, in.shape(3) * item);
          dst += in.shape(3) * item;
        } else {
          for (int w = 0; w < in.shape(3); ++w, dst += item) std::memcpy(dst, row + w * st[3] * static_cast<int64_t>(item), item);
        }
      }
    }
  }
  return storage.data();
}

class MoveRows : public mc::Primitive {
 public:
  MoveRows(mc::Stream stream, Moves moves) : mc::Primitive(stream), m_(std::move(moves)) {}

  void eval_cpu(const std::vector<mc::array>& inputs, std::vector<mc::array>& outputs) override {
    auto& encoder = mc::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    mc::array& out = outputs[0];
    const mc::array& first = inputs[0];
    const bool shared = m_.in_place && first.flags().row_contiguous && first.data_size() == first.size() &&
                        movable_in_place(m_, inputs);
    if (shared) {
      const mc::Shape& shape = out.shape();
      const mc::Strides strides{static_cast<int64_t>(shape[1]) * shape[2] * shape[3],
                                static_cast<int64_t>(shape[2]) * shape[3], shape[3], 1};
      mc::array::Flags flags = first.flags();
      flags.col_contiguous = false;
      out.copy_shared_buffer(first, strides, flags, out.size());
    } else {
      out.set_data(mc::allocator::malloc(out.nbytes()));
    }
    encoder.set_output_array(out);
    encoder.dispatch([inputs, out, m = m_]() mutable {
      std::vector<std::vector<char>> dense(inputs.size());
      std::vector<const char*> sources;
      for (size_t s = 0; s < inputs.size(); ++s) {
        sources.push_back(inputs[s].flags().row_contiguous ? static_cast<const char*>(inputs[s].data<void>())
                                                           : dense_bytes(inputs[s], dense[s]));
      }
      char* dst = static_cast<char*>(out.data<void>());
      for (int i = 0; i < static_cast<int>(m.spans.size()); ++i) {
        for (int h = 0; h < m.heads; ++h) {
          const Place at = place_of(m, inputs, i, h);
          const char* from = sources[m.spans[i].source] + at.source_begin;
          if (from != dst + at.copy_begin) std::memmove(dst + at.copy_begin, from, at.copy_bytes);
          std::memset(dst + at.row_begin, 0, at.copy_begin - at.row_begin);
        }
      }
    });
  }

  void eval_gpu(const std::vector<mc::array>&, std::vector<mc::array>&) override {
    throw std::runtime_error("lamina's row moves run on the CPU");
  }

  const char* name() const override { return "LaminaMoveRows"; }

  bool is_equivalent(const mc::Primitive&) const override { return false; }

 private:
  Moves m_;
};

// The same rows with MLX's slices and concatenations (other devices), in new buffers.
mc::array moved_by_ops(const Moves& m, const std::vector<mc::array>& inputs, const mc::Stream& stream) {
  std::vector<mc::array> rows;
  for (const Span& s : m.spans) {
    const mc::array& in = inputs[s.source];
    const auto zeros = [&](int n) { return mc::zeros({1, in.shape(1), n, in.shape(3)}, in.dtype(), stream); };
    std::vector<mc::array> pieces;
    if (s.to > 0) pieces.push_back(zeros(s.to));
    pieces.push_back(mc::slice(in, {s.row, 0, s.from, 0}, {s.row + 1, in.shape(1), s.from + s.count, in.shape(3)}, stream));
    if (m.positions > s.to + s.count) pieces.push_back(zeros(m.positions - s.to - s.count));
    rows.push_back(mc::concatenate(pieces, 2, stream));
  }
  return mc::concatenate(rows, 0, stream);
}

}  // namespace
}  // namespace lamina_kernels

using namespace lamina_kernels;

// Rows of `sources` ([B_s, H, C_s, W], one dtype) into
// `out` [rows, H, positions, W]: spans holds five ints per output row (source, row, from,
// to, count). See the top of this file.
extern "C" __attribute__((visibility("default"))) int lamina_move_rows(Handle* out, const Handle* sources,
                                                                      int source_count, const int* spans, int rows,
                                                                      int positions, int in_place) {
  try {
    const mc::Stream stream = mc::default_stream(mc::default_device());
    bool fits = source_count > 0 && rows > 0 && positions > 0 && (in_place == 0 || source_count == 1);
    std::vector<mc::array> inputs;
    for (int s = 0; fits && s < source_count; ++s) inputs.push_back(from_handle(sources[s]));
    const mc::array* first = inputs.empty() ? nullptr : &inputs[0];
    fits = fits && first->ndim() == 4;
    for (const auto& in : inputs) {
      fits = fits && in.ndim() == 4 && in.dtype() == first->dtype() && in.shape(1) == first->shape(1) &&
             in.shape(3) == first->shape(3);
    }
    Moves moves{{}, fits ? first->shape(1) : 0, positions, fits ? first->itemsize() * first->shape(3) : 0,
                in_place != 0};
    for (int i = 0; fits && i < rows; ++i) {
      const Span s{spans[5 * i], spans[5 * i + 1], spans[5 * i + 2], spans[5 * i + 3], spans[5 * i + 4]};
      fits = s.source >= 0 && s.source < source_count && s.row >= 0 && s.from >= 0 && s.to >= 0 && s.count >= 0;
      fits = fits && s.row < inputs[s.source].shape(0) && s.from + s.count <= inputs[s.source].shape(2) &&
             s.to + s.count <= positions;
      moves.spans.push_back(s);
    }
    if (!fits) {
      last_error() = "row moves: [B, H, C, W] sources of one dtype and H and W on the CPU, spans inside them";
      return 1;
    }
    if (!on_cpu(stream)) {
      to_handle(out, moved_by_ops(moves, inputs, stream));
      return 0;
    }
    const mc::Shape shape{rows, first->shape(1), positions, first->shape(3)};
    to_handle(out, mc::array(shape, first->dtype(), std::make_shared<MoveRows>(stream, std::move(moves)), inputs));
    return 0;
  } catch (const std::exception& e) {
    last_error() = e.what();
    return 1;
  }
}
