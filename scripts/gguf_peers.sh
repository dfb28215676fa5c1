# Sourced by the GGUF benchmarks (bench_gguf.sh, bench_contention.sh): builds lamina's
# bench_generate, sets `model` (the first argument after ROUNDS, or the embedded
# SmolLM2-135M-Instruct Q4_1 GGUF) and `venv` (llama-cpp-python, installed once into
# target/mlx-env/llama-venv: it builds llama.cpp from source, about 10 minutes on 2 cores).
bash scripts/prereqs.sh
cargo build --release --example bench_generate
model=${1:-$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)}
venv=target/mlx-env/llama-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check llama-cpp-python
fi
