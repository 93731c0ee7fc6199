#!/usr/bin/env bash
# Loopback load test of the registry (release build). Needs wrk
# (`apt-get install -y wrk`) and python3. Bounded: each wrk run lasts
# DURATION seconds, the publish run N requests, the SSE run CLIENTS clients.
#   benches/server-load.sh                # SQLite
#   REDIS_URL=redis://127.0.0.1:6399/ benches/server-load.sh   # + Redis fan-out
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
BIN="${BIN:-$CARGO_TARGET_DIR/release/promptops}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-1000}"
PUBLISHES="${PUBLISHES:-2000}"
[ -x "$BIN" ] || cargo build --release -p promptops-server --bin promptops
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
WORK="$(mktemp -d)"
PORT="${PORT:-8790}"
BASE="http://127.0.0.1:$PORT"
ARGS=(serve --addr "127.0.0.1:$PORT" --database-url "$WORK/bench.db")
[ -n "${REDIS_URL:-}" ] && ARGS+=(--redis-url "$REDIS_URL" --redis-prefix "bench$$")
PROMPTOPS_LOG=warn "$BIN" "${ARGS[@]}" > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do grep -q "registry on" "$WORK/out.log" 2>/dev/null && break; sleep 0.1; done
ADMIN="$(cat "$WORK/bench.db.admin-key")"
SETUP="$(python3 benches/server_load.py setup "$BASE" "$ADMIN")"
get() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$SETUP" "$1"; }
echo "machine: $(nproc) cores; snapshot sizes: b1k $(get bytes_b1k) B, b100k $(get bytes_b100k) B"
for p in b1k b100k; do
  KEY="$(get "sdk_$p")"; ETAG="$(get "etag_$p")"
  echo "== GET /v1/projects/$p/snapshot 200 (wrk -t2 -c32 -d${DURATION}s)"
  wrk -t2 -c32 -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" "$BASE/v1/projects/$p/snapshot" | grep -E "Requests/sec|Transfer/sec| 50%| 99%|Non-2xx"
  echo "== GET /v1/projects/$p/snapshot 304 with If-None-Match"
  wrk -t2 -c32 -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" -H "If-None-Match: $ETAG" "$BASE/v1/projects/$p/snapshot" | grep -E "Requests/sec| 50%| 99%|Non-2xx"
done
echo "== publish throughput: $PUBLISHES label moves, 4 connections"
python3 benches/server_load.py publish "$BASE" "$ADMIN" "$PUBLISHES" 4
if [ -n "${REDIS_URL:-}" ]; then
  echo "== publish-to-Redis latency (promptops_redis_publish_seconds)"
  curl -s "$BASE/metrics" | grep -E "^promptops_redis_publish_seconds_(sum|count)" | tr '\n' ' '
  curl -s "$BASE/metrics" | python3 -c '
import sys
m = dict(l.rsplit(" ", 1) for l in sys.stdin if l.startswith("promptops_redis_publish_seconds_"))
b = sorted(((float(k.split("le=\"")[1].split("\"")[0]) if "+Inf" not in k else float("inf")), float(v)) for k, v in m.items() if "_bucket" in k)
n = float(m["promptops_redis_publish_seconds_count"]); s = float(m["promptops_redis_publish_seconds_sum"])
p99 = next(le for le, c in b if c >= 0.99 * n)
print(f"\nmean {s / n * 1000:.3f} ms over {int(n)} publishes; p99 <= {p99 * 1000:g} ms (histogram bucket)")'
fi
echo "== $CLIENTS concurrent SSE clients"
python3 benches/server_load.py sse "$BASE" "$ADMIN" "$(get sdk_b1k)" "$CLIENTS" "$PID"
