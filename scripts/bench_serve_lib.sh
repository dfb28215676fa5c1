# What bench_serve.sh and bench_serve_gguf.sh share (sourced): one server driven by
# scripts/bench_serve.py.
#
# bench_server PID PORT LABEL PYTHON [bench_serve.py args...]: waits for the server PID to
# answer /health on PORT, drives it with bench_serve.py under PYTHON (a venv with `openai`),
# appends its RESULT lines and its peak RSS to $log (and prints them), and stops it.
bench_server() {
  local pid=$1 port=$2 label=$3 python=$4
  shift 4
  local up=0
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then up=1 && break; fi
    sleep 0.2
  done
  [ $up = 1 ] || { echo "bench_server: $label did not answer on port $port" >&2; kill "$pid"; return 1; }
  "$python" scripts/bench_serve.py --url "http://127.0.0.1:$port/v1" --label "$label" "$@" | tee -a "$log"
  local peak
  peak=$(awk '/VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  echo "RESULT {\"server\": \"$label\", \"peak_rss_mib\": $peak}" | tee -a "$log"
  kill "$pid"
}
