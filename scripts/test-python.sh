#!/usr/bin/env bash
# The Python suite of promptops: builds the extension (promptops._lowlevel)
# into a venv, then runs pytest on promptops-py/tests — the shared vectors,
# errors, threads, asyncio, fork, the README's code, the stub check
# (mypy.stubtest) and mypy --strict on the example app — live delivery
# against a real registry (the `promptops` binary, built here; its path goes
# to the tests in PROMPTOPS_BIN; Redis too when PROMPTOPS_TEST_REDIS_URL is
# set, as scripts/test.sh does), and provider calls (`complete`, `stream`)
# against the repository's mock provider (the promptops-mock-provider binary
# of tests/mock_provider, built here; its path goes in PROMPTOPS_MOCK_PROVIDER).
#
# Usage: ./scripts/test-python.sh [pytest args...]
# Env: PROMPTOPS_VENV (default /var/tmp/promptops-venv), PYTHON (default
# python3, 3.9+), PROMPTOPS_PROFILE (debug, the default, or release: the
# cargo profile of the extension and the binaries). Installs what it needs
# from PyPI; warm runs reuse the venv and the cargo target dir
# (scripts/env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

VENV="${PROMPTOPS_VENV:-/var/tmp/promptops-venv}"
PYTHON="${PYTHON:-python3}"
PROFILE="${PROMPTOPS_PROFILE:-debug}"
case "$PROFILE" in
  debug) profile_flag=() ;;
  release) profile_flag=(--release) ;;
  *) echo "error: PROMPTOPS_PROFILE must be debug or release, not $PROFILE" >&2; exit 1 ;;
esac
# Pinned test tools. tiktoken is the independent implementation the token
# vectors are checked against (as tests/vectors.rs checks tiktoken-rs).
REQUIREMENTS="maturin==1.16.0 pytest==9.2.0 mypy==2.4.1 tiktoken==0.14.0"

echo "== python: venv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || { echo "error: $PYTHON is older than 3.9" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.promptops-requirements"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$REQUIREMENTS" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS
  echo "$REQUIREMENTS" > "$stamp"
fi
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
unset CONDA_PREFIX || true

echo "== python: build and install promptops (maturin develop)"
log="$(mktemp)"
if ! (cd promptops-py && maturin develop "${profile_flag[@]}") >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "error: maturin develop failed" >&2
  exit 1
fi
tail -n 2 "$log"
rm -f "$log"
python -c 'import promptops; print("promptops", promptops.__version__, "from", promptops.__file__)'

echo "== python: build the registry (promptops serve, for tests/test_live.py) and the mock provider"
cargo build "${profile_flag[@]}" --workspace --bin promptops --bin promptops-mock-provider
export PROMPTOPS_BIN="$CARGO_TARGET_DIR/$PROFILE/promptops"
export PROMPTOPS_MOCK_PROVIDER="$CARGO_TARGET_DIR/$PROFILE/promptops-mock-provider"

echo "== python: pytest"
set +e
(cd promptops-py && python -m pytest "$@")
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
