#!/usr/bin/env bash
# Load test of `ratelimit serve` with wrk on loopback: POST /v1/acquire (memory and SQLite
# stores) and GET /healthz (the no-op floor) at 1, 8, 64 and 1000 connections.
# Usage: bench/server_load.sh BUILD_DIR [SECONDS]   (a Release build; needs wrk: apt-get install wrk)
# Prints one line per run: store endpoint connections requests/s p50 p99 non-2xx.
set -euo pipefail
build=${1:?usage: bench/server_load.sh BUILD_DIR [SECONDS]}
secs=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/tools/ratelimit/ratelimit"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start() {  # start STORE-ARGS... ; sets $pid and $url
  : > "$work/out"
  # Leases of 10 s keep the held reservations bounded while wrk acquires without committing.
  # The server's default io threads (2): one per core of the machine the figures come from.
  "$bin" "$@" serve --listen 127.0.0.1:0 --lease 10s --max-leases 10000000 \
    > "$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$work/out" && break; sleep 0.05; done
  url=$(grep -o 'http://[0-9.:]*' "$work/out")
  # No limit that the load could reach: the work measured is the full admission path.
  curl -sf -XPUT "$url/v1/quotas/bench" -d '{"max_rpm": 1000000000, "max_tpm": 1000000000000}' >/dev/null
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }

run() {  # run STORE ENDPOINT CONNECTIONS [wrk args...]
  local store=$1 endpoint=$2 conns=$3; shift 3
  local threads=1  # one wrk thread: the other core is the server's
  local out
  out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$@" 2>&1)
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-7s %-14s %3s conns  %10s req/s  p50 %-9s p99 %-9s non-2xx %s\n' \
    "$store" "$endpoint" "$conns" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

for store in memory sqlite; do
  if [ "$store" = memory ]; then start --backend memory; else start --state "$work/rl.db"; fi
  for c in 1 8 64 1000; do
    run "$store" "GET /healthz" "$c" "$url/healthz"
    run "$store" "POST /v1/acquire" "$c" -s "$here/server_acquire.lua" "$url/v1/acquire"
  done
  stop
done
