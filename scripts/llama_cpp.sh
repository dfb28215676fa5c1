# Sourced by the benchmarks that compare with llama.cpp's own tools: `llama_cpp TIER`
# builds llama-bench, llama-server and llama-quantize once into target/llama-TIER (about
# 10 minutes on 2 cores) from the llama.cpp sources PyPI's llama-cpp-python sdist vendors
# (fetched as the file the index lists, checked against its sha256: `pip download` of an
# sdist builds its build dependencies, cmake included, from source first), and sets
# `llama_bin` to their folder. TIER `native`: what /proc/cpuinfo lists, AVX2 and, where the
# CPU has it, AVX-512 (with VBMI, VNNI and BF16), never AMX (these VMs list AMX but do not
# grant its state: a native build dies on `tilezero`; ../notes: cpu-facts); `avx2`:
# AVX2/FMA/F16C only.
llama_cpp() {
  local tier=$1
  # Without AVX-512 the native build is the AVX2 one.
  if [ "$tier" = native ] && ! grep -qw avx512f /proc/cpuinfo; then tier=avx2; fi
  local build=target/llama-$tier src=target/llama-src
  llama_bin=$build/bin
  if [ -x "$llama_bin/llama-bench" ] && [ -x "$llama_bin/llama-server" ]; then
    return
  fi
  if [ ! -d "$src" ]; then
    mkdir -p "$src"
    local link
    link=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ | grep -o 'https://[^"]*llama_cpp_python-0\.3\.36\.tar\.gz#sha256=[0-9a-f]*')
    curl -fsSL -o "$src/llama_cpp_python-0.3.36.tar.gz" "${link%%#*}"
    echo "${link##*=}  $src/llama_cpp_python-0.3.36.tar.gz" | sha256sum -c --quiet
    tar xzf "$src"/llama_cpp_python-*.tar.gz -C "$src"
  fi
  local avx512=OFF
  case $tier in
    native) avx512=ON ;;
    avx2) ;;
    *) echo "llama.cpp builds: native or avx2, not $tier" >&2; return 1 ;;
  esac
  local vendor
  vendor=$(echo "$src"/llama_cpp_python-*/vendor/llama.cpp)
  cmake -S "$vendor" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=$avx512 -DGGML_AVX512_VBMI=$avx512 -DGGML_AVX512_VNNI=$avx512 -DGGML_AVX512_BF16=$avx512 \
    -DGGML_AVX_VNNI=$avx512 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >"$build.log" 2>&1
  cmake --build "$build" -j2 --target llama-bench llama-server llama-quantize >>"$build.log" 2>&1
}

# llama-bench (after `llama_cpp`) on a GGUF file, as bench_generate measures lamina: the
# prefill of a 256-token prompt, and the decoding of 128 tokens after it (at depth 256: a
# plain `-n 128` decodes from an empty context, whose attention costs less), 2 threads.
# Prints `prefill_tps=... decode_tps=...` and the larger run's `peak_rss_kb=...`.
llama_bench_rates() {
  local model=$1 out rss pp tg
  out=$(mktemp) rss=$(mktemp)
  local rate='import json, sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])'
  /usr/bin/time -f "%M" -o "$rss" "$llama_bin/llama-bench" -m "$model" -p 256 -n 0 -t 2 -r 1 -o json >"$out" 2>/dev/null
  pp=$(python3 -c "$rate" "$out")
  /usr/bin/time -f "%M" -a -o "$rss" "$llama_bin/llama-bench" -m "$model" -p 0 -n 128 -d 256 -t 2 -r 1 -o json >"$out" 2>/dev/null
  tg=$(python3 -c "$rate" "$out")
  echo "prefill_tps=$pp decode_tps=$tg"
  echo "peak_rss_kb=$(sort -n "$rss" | tail -1)"
  rm -f "$out" "$rss"
}
