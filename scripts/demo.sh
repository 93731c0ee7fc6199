#!/usr/bin/env bash
# The main job on the embedded default: render prompts from the example
# prompt directory with the quick-start app (tokens, cost, a model variant,
# an include, the inline fallback). Installs nothing beyond the Rust
# toolchain the machine has; builds what it needs.
# Usage: ./scripts/demo.sh [PROMPTS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
cargo build --workspace --quiet
"$CARGO_TARGET_DIR/debug/promptops" check examples/prompts
"$CARGO_TARGET_DIR/debug/quickstart" "${1:-examples/prompts}"
