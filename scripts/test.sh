#!/usr/bin/env bash
# Runs every test of promptops: Rust (unit, integration, shared vectors,
# delivery against real Redis, the registry against SQLite, PostgreSQL and
# Redis, doc tests), the main job, then the Python and Node suites.
# Installs what it needs (Debian redis-server and postgresql, PyPI and npm
# packages). Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

echo "== services: redis-server and PostgreSQL on loopback (installed if missing)"
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

echo "== rust: format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== rust: tests"
cargo test --workspace

echo "== the main job (README's first command) runs"
./scripts/demo.sh >/dev/null

for suite in scripts/test-python.sh scripts/test-node.sh; do
  if [ -x "$suite" ]; then
    echo "== $suite"
    "$suite"
  fi
done
echo "== all test suites passed"
