"""llama.cpp's side of the GGUF benchmark (see scripts/bench_gguf.sh): llama-cpp-python
on the same file, 2 threads, a random prompt, prefill then greedy decoding without EOS,
timed as lamina times it (prefill = time to the first token; decode = the rest).

    python bench_gguf.py MODEL.gguf --prompt-len 256 --gen-len 128 --runs 1
"""

import argparse
import random
import time

from llama_cpp import Llama


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    llm = Llama(args.model, n_ctx=args.prompt_len + args.gen_len + 8, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=512, verbose=False)
    rng = random.Random(0)
    prompt = [rng.randrange(100, llm.n_vocab()) for _ in range(args.prompt_len)]
    for run in range(args.runs + 1):
        llm.reset()
        start = time.perf_counter()
        first = last = None
        n = 0
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
            if n == args.gen_len:
                break
        if run > 0:
            prefill = args.prompt_len / (first - start)
            decode = (n - 1) / (last - first)
            print(f"llama.cpp prefill_tps={prefill:.2f} decode_tps={decode:.2f} generated={n}", flush=True)


if __name__ == "__main__":
    main()
