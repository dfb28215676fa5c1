"""A SmolLM2-1.7B-shaped GGUF with random F16 weights, for benchmarks only (its text is
noise; its size and shapes are the real model's: 24 Llama blocks of width 2048, 32 heads,
MLP 8192, a tied 49152-row embedding). The tokenizer metadata is the embedded
SmolLM2-135M file's (the same vocabulary). scripts/bench_large.sh quantizes it with
llama.cpp's own llama-quantize.

    python make_large_gguf.py SOURCE.gguf OUT.gguf
"""

import sys

import gguf
import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, MLP, VOCAB = 2048, 24, 32, 32, 8192, 49152


def main(source: str, out: str) -> None:
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(8192)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(MLP)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(130000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(VOCAB)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(field.name, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(field.name, field.contents(), kind)
    rng = np.random.default_rng(0)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(HIDDEN, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(VOCAB, HIDDEN))
    writer.add_tensor("output_norm.weight", norm())
    for i in range(LAYERS):
        block = f"blk.{i}."
        writer.add_tensor(block + "attn_norm.weight", norm())
        writer.add_tensor(block + "attn_q.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(block + "attn_k.weight", weight(HIDDEN // HEADS * KV_HEADS, HIDDEN))
        writer.add_tensor(block + "attn_v.weight", weight(HIDDEN // HEADS * KV_HEADS, HIDDEN))
        writer.add_tensor(block + "attn_output.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(block + "ffn_norm.weight", norm())
        writer.add_tensor(block + "ffn_gate.weight", weight(MLP, HIDDEN))
        writer.add_tensor(block + "ffn_up.weight", weight(MLP, HIDDEN))
        writer.add_tensor(block + "ffn_down.weight", weight(HIDDEN, MLP))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
