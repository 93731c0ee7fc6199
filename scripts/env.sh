# Shared settings for the project's scripts (sourced, not run).
# Reuse one cargo target dir outside the clone so CI on the same machine is
# warm; the same profile settings in dev and CI keep it valid.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/promptops-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The shared benchmark workload, beside the clone.
PROMPTOPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROMPTOPS_ROOT
export PROMPTOPS_WORKLOAD="${PROMPTOPS_WORKLOAD:-$PROMPTOPS_ROOT/../shared/bench-workload}"
