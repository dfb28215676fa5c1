# Sourced by the benchmarks that compare with llama.cpp's own tools: `llama_cpp TIER`
# builds llama-bench, llama-server and llama-quantize once into target/llama-TIER (about
# 10 minutes on 2 cores) from the llama.cpp sources PyPI's llama-cpp-python sdist vendors,
# and sets `llama_bin` to their folder. TIER `native`: AVX2 and AVX-512 (with VBMI, VNNI and
# BF16), never AMX (these VMs list AMX but do not grant its state: a native build dies on
# `tilezero`; ../notes: cpu-facts); `avx2`: AVX2/FMA/F16C only.
llama_cpp() {
  local tier=$1 build=target/llama-$1 src=target/llama-src
  llama_bin=$build/bin
  if [ -x "$llama_bin/llama-bench" ] && [ -x "$llama_bin/llama-server" ]; then
    return
  fi
  if [ ! -d "$src" ]; then
    mkdir -p "$src"
    pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$src"
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
