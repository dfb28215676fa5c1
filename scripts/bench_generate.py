"""mlx-lm's side of the generation benchmark (see scripts/bench_generate.sh): the same
model folder, the same random prompt (MLX's PRNG with the same seed), prefill then greedy
decoding without EOS, timed as lamina times it.

    python bench_generate.py MODEL_DIR --prompt-len 256 --gen-len 128 --runs 1
"""

import argparse
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, config = load_model(Path(args.model))
    vocab = config["vocab_size"]
    prompt = mx.random.randint(0, vocab, (args.prompt_len,), key=mx.random.key(args.seed)).astype(mx.int32)
    greedy = lambda x: mx.argmax(x, axis=-1)
    for run in range(args.runs + 1):
        start = time.perf_counter()
        first = last = None
        n = 0
        for token, _ in generate_step(prompt, model, max_tokens=args.gen_len, sampler=greedy):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
        if run > 0:
            prefill = args.prompt_len / (first - start)
            decode = (n - 1) / (last - first)
            print(f"mlx-lm prefill_tps={prefill:.2f} decode_tps={decode:.2f} generated={n}")


if __name__ == "__main__":
    main()
