#!/usr/bin/env bash
# The main job on the embedded default: start the registry on SQLite with
# the example prompts (`promptops serve --demo`), then run the live app,
# which renders prompts from it, follows a publish and a rollback over SSE
# in milliseconds, and keeps a last-known-good copy on disk. Then the
# offline quick start (prompt directory, tokens, cost, variants, fallback).
# Needs only the Rust toolchain; builds what it needs.
# Usage: ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
cargo build --workspace --quiet
BIN="$CARGO_TARGET_DIR/debug"

"$BIN/promptops" check examples/prompts

log="$(mktemp)"
"$BIN/promptops" serve --demo --demo-dir examples/prompts --addr 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
envfile=""
for _ in $(seq 1 200); do
  envfile="$(sed -n 's/^  keys written to //p' "$log")"
  [ -n "$envfile" ] && [ -f "$envfile" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "the registry did not start" >&2; exit 1; }
  sleep 0.05
done
[ -n "$envfile" ] || { cat "$log"; echo "the registry did not start" >&2; exit 1; }
sed -n '1,3p' "$log"
set -a; source "$envfile"; set +a

echo
echo "== the app, live from the registry"
"$BIN/live"

echo
echo "== the same prompts offline, from the prompt directory"
"$BIN/quickstart" examples/prompts
