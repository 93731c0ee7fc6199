#!/usr/bin/env bash
# Runs every test of promptops: Rust (unit, integration, shared vectors,
# doc tests), then the Python and Node suites when their scripts exist.
# Installs what it needs. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

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
