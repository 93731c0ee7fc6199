#!/usr/bin/env bash
# The Node suite: installs promptops-node's dev dependencies (from its
# package-lock.json), builds the addon, runs the tests (node --test) and the
# TypeScript check (tsc --noEmit on examples/quickstart.ts). The live tests
# get the registry binary (`promptops`, also built by `cargo build
# --workspace`) through PROMPTOPS_SERVER_BIN.
#
# The addon is built the fast way: `cargo build --workspace` (the build the
# Rust suite already did, so usually a no-op) and the cdylib copied to the
# name the generated loader (binding.js) looks for. `npm run build` in
# promptops-node is the packaging path (`napi build --release`).
#
# The provider-call tests run the mock provider of the Rust tests as a
# process (`promptops-mock-provider`, built by the same workspace build;
# PROMPTOPS_MOCK_PROVIDER_BIN). The Redis test uses the Redis named by
# PROMPTOPS_TEST_REDIS_URL (scripts/test.sh starts one and exports it) and
# fails when that one does not answer; without the variable it starts a
# redis-server of its own.
#
# Usage: ./scripts/test-node.sh            (debug build, as scripts/test.sh)
#        PROMPTOPS_NODE_PROFILE=release ./scripts/test-node.sh
# CARGO_TARGET_DIR is honoured (scripts/env.sh only sets a default).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if ! command -v node >/dev/null 2>&1; then
  echo "test-node.sh: node (18 or newer) is required" >&2
  exit 1
fi
node -e 'const [maj] = process.versions.node.split(".").map(Number); if (maj < 18) { console.error("Node 18+ required, found " + process.version); process.exit(1); }'

echo "== node: npm ci"
(cd promptops-node && npm ci --no-audit --no-fund --loglevel=error)

profile="${PROMPTOPS_NODE_PROFILE:-debug}"
case "$profile" in
  debug) cargo_profile=() ;;
  release) cargo_profile=(--release) ;;
  *) echo "test-node.sh: PROMPTOPS_NODE_PROFILE must be debug or release" >&2; exit 1 ;;
esac
echo "== node: build the addon (cargo build --workspace ${cargo_profile[*]:-})"
cargo build --workspace "${cargo_profile[@]}"
case "$(uname -s)" in
  Linux) lib="libpromptops_node.so" ;;
  Darwin) lib="libpromptops_node.dylib" ;;
  *) echo "test-node.sh: unsupported OS $(uname -s)" >&2; exit 1 ;;
esac
triple="$(node -p '
  const { platform, arch } = process;
  platform === "linux" ? `linux-${arch}-${process.report.getReport().header.glibcVersionRuntime ? "gnu" : "musl"}` : `${platform}-${arch}`')"
cp "$CARGO_TARGET_DIR/$profile/$lib" "promptops-node/promptops.$triple.node"

echo "== node: tests"
# The live tests start the registry binary the workspace build produced.
export PROMPTOPS_SERVER_BIN="$CARGO_TARGET_DIR/$profile/promptops"
export PROMPTOPS_MOCK_PROVIDER_BIN="$CARGO_TARGET_DIR/$profile/promptops-mock-provider"
for bin in "$PROMPTOPS_SERVER_BIN" "$PROMPTOPS_MOCK_PROVIDER_BIN"; do
  test -x "$bin" || { echo "test-node.sh: $bin was not built" >&2; exit 1; }
done
(cd promptops-node && node --test __test__/)

echo "== node: tsc --noEmit"
(cd promptops-node && npx --no-install tsc --noEmit -p examples/tsconfig.json)
echo "== node: all passed"
