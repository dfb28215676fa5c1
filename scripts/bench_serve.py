"""Serving throughput and latency with the official `openai` client: 1, 4 and 16
concurrent greedy chat streams against an OpenAI-compatible server; time to first token,
tokens/s per stream and in total; and whether a greedy answer is the same before and after
the load. Prints one `RESULT {...}` JSON line per concurrency. `--summarize LOG` prints the
table of two servers' RESULT lines (and a `peak_rss_mib` line each), the first against the
second.

  python scripts/bench_serve.py --url http://127.0.0.1:8080/v1 --label lamina
  python scripts/bench_serve.py --summarize LOG
"""
import argparse
import json
import statistics
import threading
import time

QUESTIONS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms.",
    "Describe the city of Paris to a child.",
    "Write a poem about the ocean.",
    "What are the benefits of regular exercise?",
    "Explain photosynthesis in simple words.",
    "Tell me about the history of the bicycle.",
    "Describe a day in the life of a farmer.",
    "Why is the sky blue?",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain how computers store numbers.",
    "Describe your favorite season and why.",
    "What makes a good teacher?",
    "Explain how bees make honey.",
    "Write a short fairy tale about a brave mouse.",
    "Describe how to plant a tree.",
]


def stream_one(client, model, question, max_tokens, out):
    start = time.perf_counter()
    first = None
    pieces = []
    tokens = None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
        temperature=0.0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    if tokens is None:
        tokens = len(pieces)
    first = first or end
    out.append({"ttft": first - start, "tokens": tokens, "seconds": end - start,
                "decode_tps": (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0,
                "text": "".join(pieces)})


def run(client, model, concurrency, max_tokens):
    results = []
    threads = [threading.Thread(target=stream_one,
                                args=(client, model, QUESTIONS[i % len(QUESTIONS)], max_tokens, results))
               for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "ttft_median_s": statistics.median(r["ttft"] for r in results),
        "per_stream_tps": statistics.median(r["decode_tps"] for r in results),
        "total_tps": total / wall,
        "tokens": total,
        "wall_s": wall,
    }


def summarize(log):
    rows = [json.loads(line[7:]) for line in open(log) if line.startswith("RESULT ")]
    by = {}
    for r in rows:
        by.setdefault(r["server"], {}).update({r["concurrency"]: r} if "concurrency" in r else r)
    ours, peer = list(by)[:2]
    width = max(len(ours), len(peer), 7)
    print(f"{'streams':>7} {'server':>{width}} {'ttft s':>7} {'tok/s/stream':>13} {'total tok/s':>12}")
    for c in (1, 4, 16):
        for s in (ours, peer):
            r = by[s][c]
            print(f"{c:>7} {s:>{width}} {r['ttft_median_s']:>7.2f} {r['per_stream_tps']:>13.1f} {r['total_tps']:>12.1f}")
        print(f"{c:>7} {'ratio':>{width}} {by[peer][c]['ttft_median_s'] / by[ours][c]['ttft_median_s']:>7.2f}"
              f" {by[ours][c]['per_stream_tps'] / by[peer][c]['per_stream_tps']:>13.2f}"
              f" {by[ours][c]['total_tps'] / by[peer][c]['total_tps']:>12.2f}")
    for s in (ours, peer):
        print(f"{s}: 16 streams / 1 stream total tok/s = {by[s][16]['total_tps'] / by[s][1]['total_tps']:.2f}x; "
              f"peak RSS {by[s]['peak_rss_mib']} MiB; greedy same after load: {by[s]['greedy_same_after_load']}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--label")
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--summarize", metavar="LOG")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if not args.url or not args.label:
        parser.error("--url and --label (or --summarize LOG)")
    from openai import OpenAI

    client = OpenAI(base_url=args.url, api_key="none", max_retries=0, timeout=600)
    greedy = []
    stream_one(client, args.model, QUESTIONS[2], args.max_tokens, greedy)  # warm-up and reference
    for c in [int(c) for c in args.concurrency.split(",")]:
        result = run(client, args.model, c, args.max_tokens)
        print("RESULT " + json.dumps({"server": args.label, **result}), flush=True)
    after = []
    stream_one(client, args.model, QUESTIONS[2], args.max_tokens, after)
    same = greedy[0]["text"] == after[0]["text"]
    print("RESULT " + json.dumps({"server": args.label, "greedy_same_after_load": same}), flush=True)


if __name__ == "__main__":
    main()
